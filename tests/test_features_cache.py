import logging

import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.features.cache import FeaturesCache, QueryCache, backbone_key
from anchorprune.pages import Page


def pages(n=5):
    return [Page(f"p{i}", f"h{i}", text=f"topic:t{i}") for i in range(n)]


def test_second_encode_does_not_run_the_model(tmp_path):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    first = cache.get_or_encode(mock, pages(), LayerCapture.all(), batch_size=2)
    calls = mock.page_calls
    assert calls == 3  # 5 pages in batches of 2
    again = cache.get_or_encode(mock, pages(), LayerCapture.all(), batch_size=2)
    assert mock.page_calls == calls
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.centrality, b.centrality)


def test_only_misses_are_encoded(tmp_path):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    cache.get_or_encode(mock, pages(3), LayerCapture.all())
    mock.page_calls = 0
    out = cache.get_or_encode(mock, pages(5), LayerCapture.all(), batch_size=10)
    assert mock.page_calls == 1 and [f.page_id for f in out] == [f"p{i}" for i in range(5)]


def test_flipped_byte_is_recomputed_not_trusted(tmp_path, caplog):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    good = cache.get_or_encode(mock, pages(1), LayerCapture.all())[0]
    path = cache.path(mock, "all", "h0")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    mock.page_calls = 0
    with caplog.at_level(logging.WARNING):
        again = cache.get_or_encode(mock, pages(1), LayerCapture.all())[0]
    assert mock.page_calls == 1 and "checksum mismatch" in caplog.text
    assert torch.equal(good.embeddings, again.embeddings)


def test_truncated_entry_is_recomputed(tmp_path):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    cache.get_or_encode(mock, pages(1), LayerCapture.all())
    path = cache.path(mock, "all", "h0")
    path.write_bytes(path.read_bytes()[:100])
    mock.page_calls = 0
    cache.get_or_encode(mock, pages(1), LayerCapture.all())
    assert mock.page_calls == 1


def test_window_request_served_from_all_layers_entry(tmp_path):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    full = cache.get_or_encode(mock, pages(2), LayerCapture.all())
    mock.page_calls = 0
    win = cache.get_or_encode(mock, pages(2), LayerCapture.window([4, 5]))
    assert mock.page_calls == 0
    assert win[0].layers == (4, 5) and torch.equal(win[0].centrality, full[0].centrality_for([4, 5]))


def test_same_content_other_id_keeps_requested_id(tmp_path):
    mock, cache = MockBackbone(), FeaturesCache(tmp_path)
    cache.get_or_encode(mock, [Page("a", "same", text="topic:x")], LayerCapture.all())
    out = cache.get_or_encode(mock, [Page("b", "same", text="topic:x")], LayerCapture.all())
    assert out[0].page_id == "b"


def test_other_revision_is_another_entry(tmp_path):
    cache = FeaturesCache(tmp_path)
    a, b = MockBackbone(), MockBackbone(num_anchors=2)
    cache.get_or_encode(a, pages(1), LayerCapture.all())
    cache.get_or_encode(b, pages(1), LayerCapture.all())
    assert b.page_calls == 1


class CountingMock(MockBackbone):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.query_texts: list[str] = []

    def encode_queries(self, texts):
        self.query_texts += list(texts)
        return super().encode_queries(texts)


def test_query_cache_encodes_each_text_once_and_keeps_order(tmp_path):
    mock, cache = CountingMock(), QueryCache(tmp_path)
    first = cache.get_or_encode(mock, ["topic:a", "topic:b"], batch_size=1)
    out = cache.get_or_encode(mock, ["topic:c", "topic:b", "topic:a"])
    assert mock.query_texts == ["topic:a", "topic:b", "topic:c"]
    assert torch.equal(out[1], first[1]) and torch.equal(out[2], first[0])
    assert torch.equal(out[0], MockBackbone().encode_queries(["topic:c"])[0])


def test_query_cache_flipped_byte_and_other_revision_recompute(tmp_path, caplog):
    mock, cache = CountingMock(), QueryCache(tmp_path)
    cache.get_or_encode(mock, ["topic:a"])
    path = cache.path(mock, "topic:a")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        cache.get_or_encode(mock, ["topic:a"])
    assert mock.query_texts == ["topic:a", "topic:a"] and "checksum mismatch" in caplog.text
    other = CountingMock(num_anchors=2)
    cache.get_or_encode(other, ["topic:a"])
    assert other.query_texts == ["topic:a"]


# ------------------------------------------------------------------ the key: everything that changes the vectors
def _tiny_colpali_backbone(dtype=torch.float32, revision="r1"):
    import copy

    from anchorprune.backbones.colpali import ColPaliBackbone
    from anchorprune.backbones.tiny import tiny_colpali

    if not hasattr(_tiny_colpali_backbone, "built"):
        _tiny_colpali_backbone.built = tiny_colpali()
    model, proc = _tiny_colpali_backbone.built
    return ColPaliBackbone(copy.deepcopy(model).to(dtype), proc, "colpali", "tiny/colpali", revision)


def _image_pages(n=2):
    import PIL.Image

    return [Page(f"p{i}", f"img{i}", image=PIL.Image.new("RGB", (40, 40), (30 * i, 90, 200))) for i in range(n)]


def test_changing_dtype_re_encodes(tmp_path):
    cache = FeaturesCache(tmp_path)
    f32 = _tiny_colpali_backbone(torch.float32)
    first = cache.get_or_encode(f32, _image_pages(), LayerCapture.all(), progress=False)
    assert f32.page_calls == 1 and f32.dtype == "float32"
    cache.get_or_encode(f32, _image_pages(), LayerCapture.all(), progress=False)
    assert f32.page_calls == 1
    bf16 = _tiny_colpali_backbone(torch.bfloat16)
    again = cache.get_or_encode(bf16, _image_pages(), LayerCapture.all(), progress=False)
    assert bf16.dtype == "bfloat16" and bf16.page_calls == 1          # not served the float32 vectors
    assert not torch.equal(first[0].embeddings, again[0].embeddings)


def test_adapter_version_and_revision_are_in_the_key(tmp_path):
    a, b = MockBackbone(), MockBackbone()
    b.ADAPTER_VERSION = "2"
    assert backbone_key(a) != backbone_key(b)
    b.ADAPTER_VERSION, b.revision = a.ADAPTER_VERSION, "other"
    assert backbone_key(a) != backbone_key(b)
    b.revision = a.revision
    assert backbone_key(a) == backbone_key(b)


def test_backbone_without_identity_is_refused_clearly(tmp_path):
    class Bare:
        model_id, revision, num_layers, dim = "m", "r", 2, 4

    with pytest.raises(TypeError, match=r"Bare lacks \['dtype', 'ADAPTER_VERSION'\]"):
        backbone_key(Bare())


def _fake_hub_snapshot(home, repo, commit, model, proc):
    """The layout huggingface_hub keeps offline: snapshots/<commit>/ and refs/main naming the commit."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    model.save_pretrained(root / "snapshots" / commit)
    proc.save_pretrained(root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_loading_main_resolves_the_commit_and_a_moved_main_re_encodes(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from anchorprune.backbones import load_backbone
    from anchorprune.backbones.tiny import tiny_colpali
    from anchorprune.config import BackboneConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)                    # read at import: patch the module too
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    model, proc = tiny_colpali()
    c1, c2 = "1" * 40, "2" * 40
    _fake_hub_snapshot(tmp_path / "hf", "org/tiny", c1, model, proc)
    cfg = BackboneConfig(name="colpali", kind="colpali", model_id="org/tiny", revision="main")
    cache = FeaturesCache(tmp_path / "cache")
    first = load_backbone(cfg)
    assert first.revision == c1                                         # the commit, not "main"
    cache.get_or_encode(first, _image_pages(1), LayerCapture.all(), progress=False)
    same = load_backbone(cfg)
    cache.get_or_encode(same, _image_pages(1), LayerCapture.all(), progress=False)
    assert same.page_calls == 0
    with torch.no_grad():                                               # "main" moves to a retrained commit
        for p in model.parameters():
            p.add_(0.01)
    _fake_hub_snapshot(tmp_path / "hf", "org/tiny", c2, model, proc)
    moved = load_backbone(cfg)
    assert moved.revision == c2
    cache.get_or_encode(moved, _image_pages(1), LayerCapture.all(), progress=False)
    assert moved.page_calls == 1


def test_planning_opens_no_page_and_the_stage_streams_the_cache(tmp_path, monkeypatch):
    """Shards are page ids (what travels in the Dask graph); planning reads the corpus table only, and the
    encode stage goes through the cache a chunk at a time, keeping no page's features."""
    from PIL import Image

    import anchorprune.data.schema as schema
    from anchorprune.config import load_settings
    from anchorprune.data.schema import DatasetWriter
    from anchorprune.features.cache import FeaturesCache
    from anchorprune.stages.encode import plan_encode, stage_encode
    from anchorprune.stages.workspace import Workspace

    w = DatasetWriter(tmp_path / "data" / "imgs")
    for i in range(150):
        w.add_page(f"p{i}", Image.new("L", (20, 20), color=i), text=f"page {i}", source_doc="s", page_number=i + 1)
    w.add_query("q", "page 1?")
    w.add_qrel("q", "p1", 1)
    w.finish(name="imgs", source="test", revision="0")
    (tmp_path / "params.yaml").write_text("data: {dataset: imgs}\nbackbones: [{name: mock, kind: mock, model_id: m}]\n"
                                          "encode: {shard_pages: 64}\n")
    ws = Workspace(load_settings(tmp_path / "params.yaml"), tmp_path)
    opened = []
    real = schema._lazy_image
    monkeypatch.setattr(schema, "_lazy_image", lambda p: opened.append(p) or real(p))
    shards = plan_encode(ws, ws.settings.backbones[0])
    assert [len(s) for s in shards] == [64, 64, 22] and all(isinstance(i, str) for s in shards for i in s)
    assert opened == []

    chunks = []
    real_get = FeaturesCache.get_or_encode
    monkeypatch.setattr(FeaturesCache, "get_or_encode",
                        lambda self, b, pages, *a, **k: chunks.append(len(pages)) or real_get(self, b, pages, *a, **k))
    summary = stage_encode(ws, ws.settings.backbones[0])
    assert (summary.pages, summary.queries) == (150, 1) and max(chunks) <= 64
