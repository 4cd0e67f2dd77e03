"""One-forward-pass capture vs the naive output_attentions=True computation, on tiny real model classes."""

from __future__ import annotations

import copy

import PIL.Image
import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.capture import find_decoder_layers
from anchorprune.backbones.colpali import ColPaliBackbone
from anchorprune.backbones.colqwen2 import ColQwen2Backbone
from anchorprune.backbones.tiny import tiny_colpali, tiny_colqwen2
from anchorprune.pages import Page

LAYERS = 4


@pytest.fixture(scope="session")
def tiny_models():
    return {
        "colpali": (ColPaliBackbone, *tiny_colpali(layers=LAYERS, heads=4, kv_heads=2, hidden=32)),
        "colqwen2": (ColQwen2Backbone, *tiny_colqwen2(layers=LAYERS, heads=4, kv_heads=2, hidden=48)),
    }


@pytest.fixture(params=["colpali", "colqwen2"])
def backbone(request, tiny_models):
    cls, model, proc = tiny_models[request.param]
    return cls(copy.deepcopy(model), proc, request.param, f"tiny/{request.param}", "test")


def _pages():
    g = torch.Generator().manual_seed(0)
    imgs = [PIL.Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()) for _ in range(2)]
    imgs.append(PIL.Image.new("RGB", (64, 64), (200, 30, 30)))
    return [Page(f"p{i}", f"h{i}", image=im) for i, im in enumerate(imgs)]


def _naive(backbone, pages):
    """Eager attention with output_attentions=True: centrality and EOS rows of every layer."""
    model = copy.deepcopy(backbone.model)
    model.set_attn_implementation("eager")
    batch = backbone.process_images([p.image for p in pages])
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    vis = backbone.visual_mask(batch)
    last = [int(batch["attention_mask"][b].nonzero().max()) for b in range(len(pages))]
    rows = []
    for b in range(len(pages)):
        pos = torch.nonzero(vis[b]).flatten()
        cent = torch.stack([out.attentions[layer][b][:, pos][:, :, pos].sum(1).mean(0) for layer in range(LAYERS)])
        eos = torch.stack([out.attentions[layer][b][:, last[b], pos].mean(0) for layer in range(LAYERS)])
        rows.append((pos, cent, eos))
    return batch, rows


def test_visual_positions_follow_spec(backbone):
    pages = _pages()
    feats = backbone.encode_pages(pages, LayerCapture.all())
    batch = backbone.process_images([p.image for p in pages])
    cfg = backbone.model.config.vlm_config
    token = cfg.image_token_index if backbone.name == "colpali" else cfg.image_token_id
    for b, f in enumerate(feats):
        assert f.positions.tolist() == torch.nonzero(batch["input_ids"][b] == token).flatten().tolist()
        assert f.num_tokens == len(f.positions) > 0


def test_hooked_rows_equal_naive_attention(backbone):
    pages = _pages()
    feats = backbone.encode_pages(pages, LayerCapture.all())
    _, naive = _naive(backbone, pages)
    for f, (pos, cent, eos) in zip(feats, naive, strict=True):
        assert f.positions.tolist() == pos.tolist()
        assert f.centrality.shape == (LAYERS, len(pos))
        assert float(cent.sum()) > 0
        torch.testing.assert_close(f.centrality, cent, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention, eos, atol=1e-5, rtol=0)


def test_embeddings_equal_models_own_forward(backbone):
    pages = _pages()
    feats = backbone.encode_pages(pages, LayerCapture.all())
    batch = backbone.process_images([p.image for p in pages])
    with torch.no_grad():
        emb = backbone.model(**batch).embeddings
    for b, f in enumerate(feats):
        assert torch.equal(f.embeddings, emb[b, f.positions].float())
        torch.testing.assert_close(f.embeddings.norm(dim=-1), torch.ones(f.num_tokens))


def test_window_capture_equals_all_layers_rows(backbone):
    pages = _pages()
    full = backbone.encode_pages(pages, LayerCapture.all())
    win = backbone.encode_pages(pages, LayerCapture.window([1, 2]))
    for a, w in zip(full, win, strict=True):
        assert w.layers == (1, 2)
        torch.testing.assert_close(w.centrality, a.centrality_for([1, 2]), atol=1e-6, rtol=0)
        assert torch.equal(w.embeddings, a.embeddings)


def test_capture_is_removed_after_the_forward(backbone):
    backbone.encode_pages(_pages()[:1], LayerCapture.window([0]))
    for layer in find_decoder_layers(backbone.model):
        assert layer.self_attn.config._attn_implementation != "anchorprune_capture"
        assert not hasattr(layer.self_attn, "_anchorprune_capture")


def test_queries_are_normalised_token_vectors(backbone):
    qs = backbone.encode_queries(["what is red?", "a longer question about the page"])
    assert len(qs) == 2 and qs[1].shape[0] > qs[0].shape[0] > 0
    torch.testing.assert_close(qs[0].norm(dim=-1), torch.ones(qs[0].shape[0]))


def test_page_without_image_is_refused(backbone):
    with pytest.raises(ValueError, match="pages without an image: \\['x'\\]"):
        backbone.encode_pages([Page("x", "hx", text="only text")], LayerCapture.all())
