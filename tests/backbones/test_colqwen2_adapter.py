"""ColQwen2 adapter: images of different sizes in one padded batch (variable visual token counts)."""

from __future__ import annotations

import copy

import PIL.Image
import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.colqwen2 import ColQwen2Backbone
from anchorprune.backbones.tiny import tiny_colqwen2
from anchorprune.pages import Page

LAYERS = 3


@pytest.fixture(scope="session")
def tiny_qwen():
    from transformers import ColQwen2Processor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, proc = tiny_colqwen2(layers=LAYERS, heads=4, kv_heads=2, hidden=48)
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    return model, ColQwen2Processor(image_processor=ip, tokenizer=proc.tokenizer)


@pytest.fixture
def backbone(tiny_qwen):
    model, proc = tiny_qwen
    return ColQwen2Backbone(copy.deepcopy(model), proc, "colqwen2", "tiny/colqwen2", "test")


def _pages():
    g = torch.Generator().manual_seed(1)
    sizes = [(56, 56), (112, 112), (112, 56)]
    return [Page(f"p{i}", f"h{i}", image=PIL.Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy()))
            for i, (w, h) in enumerate(sizes)]


def test_variable_image_sizes_give_variable_token_counts(backbone):
    feats = backbone.encode_pages(_pages(), LayerCapture.all())
    assert [f.num_tokens for f in feats] == [4, 16, 8]
    batch = backbone.process_images([p.image for p in _pages()])
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    pad = backbone.model.config.vlm_config.image_token_id
    for b, f in enumerate(feats):
        assert f.positions.tolist() == torch.nonzero(batch["input_ids"][b] == pad).flatten().tolist()


def test_padded_batch_rows_equal_naive_and_single_page_encoding(backbone):
    pages = _pages()
    feats = backbone.encode_pages(pages, LayerCapture.all())
    eager = copy.deepcopy(backbone.model)
    eager.set_attn_implementation("eager")
    batch = backbone.process_images([p.image for p in pages])
    with torch.no_grad():
        att = eager(**batch, output_attentions=True).attentions                # LAYERS x [B, H, S, S]
    for b, f in enumerate(feats):
        pos, last = f.positions, int(batch["attention_mask"][b].nonzero().max())
        cent = torch.stack([a[b][:, pos][:, :, pos].sum(1).mean(0) for a in att])
        eos = torch.stack([a[b][:, last, pos].mean(0) for a in att])
        torch.testing.assert_close(f.centrality, cent, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention, eos, atol=1e-5, rtol=0)
        alone = backbone.encode_pages([pages[b]], LayerCapture.all())[0]
        torch.testing.assert_close(alone.centrality, f.centrality, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.eos_attention, f.eos_attention, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.embeddings, f.embeddings, atol=1e-5, rtol=0)
