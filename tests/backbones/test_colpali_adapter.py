"""ColPali adapter: the image-token block, batch independence, and queries with the processor's own prompt."""

from __future__ import annotations

import copy

import PIL.Image
import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.colpali import ColPaliBackbone
from anchorprune.backbones.tiny import tiny_colpali
from anchorprune.pages import Page


@pytest.fixture(scope="session")
def tiny_pali():
    return tiny_colpali(layers=3, heads=4, kv_heads=1, hidden=32, image_size=32, patch=8)


@pytest.fixture
def backbone(tiny_pali):
    model, proc = tiny_pali
    return ColPaliBackbone(copy.deepcopy(model), proc, "colpali", "tiny/colpali", "test")


def _pages(n=3):
    g = torch.Generator().manual_seed(2)
    return [Page(f"p{i}", f"h{i}", image=PIL.Image.fromarray((torch.rand(40, 30, 3, generator=g) * 255).byte().numpy()))
            for i in range(n)]


def test_visual_tokens_are_the_image_block_of_image_seq_length(backbone):
    feats = backbone.encode_pages(_pages(), LayerCapture.all())
    n = backbone.processor.image_seq_length
    assert n == 16
    for f in feats:
        assert f.positions.tolist() == list(range(n))  # PaliGemma puts the <image> block first
        assert f.embeddings.shape == (n, backbone.dim) and f.centrality.shape == (3, n)
        # bidirectional image prefix: later image tokens attend to earlier ones and back
        assert (f.centrality > 0).all()


def test_batch_rows_equal_one_page_at_a_time(backbone):
    pages = _pages()
    together = backbone.encode_pages(pages, LayerCapture.window([0, 2]))
    for p, t in zip(pages, together, strict=True):
        alone = backbone.encode_pages([p], LayerCapture.window([0, 2]))[0]
        torch.testing.assert_close(alone.centrality, t.centrality, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.eos_attention, t.eos_attention, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.embeddings, t.embeddings, atol=1e-5, rtol=0)


def test_queries_match_the_models_own_query_forward(backbone):
    texts = ["short", "a somewhat longer query"]
    qs = backbone.encode_queries(texts)
    batch = dict(backbone.processor(text=texts, return_tensors="pt"))
    with torch.no_grad():
        emb = backbone.model(**batch).embeddings
    for b, q in enumerate(qs):
        assert torch.equal(q, emb[b, batch["attention_mask"][b].bool()])
    assert qs[1].shape[0] > qs[0].shape[0]

