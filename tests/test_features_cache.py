import logging

import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.features_cache import FeaturesCache, QueryCache
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
