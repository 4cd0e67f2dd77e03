"""Jina v4 adapter on a STAND-IN (tiny Qwen2.5-VL + projector, tiny.py); the real remote code is not loadable here."""

from __future__ import annotations

import copy

import PIL.Image
import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.jina_v4 import JinaV4Backbone, jina_visual_mask
from anchorprune.backbones.retrieval import CaptureNotReachedError
from anchorprune.backbones.tiny import tiny_colqwen2, tiny_jina_v4
from anchorprune.pages import Page

LAYERS = 3


def test_range_rule_is_strictly_between_first_start_and_next_end():
    ids = torch.tensor([[9, 7, 5, 3, 5, 8, 7, 5, 8]])
    assert jina_visual_mask(ids, 7, 8, 5).int().tolist() == [[0, 0, 1, 1, 1, 0, 0, 0, 0]]


def test_fallback_to_pad_tokens_without_markers_and_nothing_without_either():
    ids = torch.tensor([[1, 5, 5, 2], [1, 2, 3, 4], [7, 5, 5, 2]])  # row 3: a start with no end -> fallback
    assert jina_visual_mask(ids, 7, 8, 5).int().tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0]]
    assert not jina_visual_mask(ids[:2], 7, 8, None).any()


def test_range_rule_matches_image_pads_on_a_real_qwen2_vl_processor():
    _, proc = tiny_colqwen2()
    batch = proc(images=[PIL.Image.new("RGB", (64, 64))], return_tensors="pt")
    tok = proc.tokenizer
    start, end, pad = (tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    assert torch.equal(jina_visual_mask(batch["input_ids"], start, end, pad), batch["input_ids"] == pad)


@pytest.fixture(scope="session")
def tiny_jina():
    return tiny_jina_v4(layers=LAYERS, heads=4, kv_heads=2, hidden=48, pixels=112 * 112)


@pytest.fixture
def backbone(tiny_jina):
    model, proc = tiny_jina
    return JinaV4Backbone(copy.deepcopy(model), proc, "jina-v4", "tiny/jina-standin", "test")


def _pages():
    g = torch.Generator().manual_seed(3)
    return [Page(f"p{i}", f"h{i}", image=PIL.Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy()))
            for i, (w, h) in enumerate([(56, 56), (112, 112)])]


def test_standin_rows_equal_naive_and_embeddings_equal_own_forward(backbone):
    pages = _pages()
    feats = backbone.encode_pages(pages, LayerCapture.all())
    batch = backbone.process_images([p.image for p in pages])
    assert [f.num_tokens for f in feats] == [4, 16] and (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        own = backbone.model(task_label="retrieval", **batch).multi_vec_emb
        eager = copy.deepcopy(backbone.model)
        eager.vlm.set_attn_implementation("eager")
        att = eager.vlm(**{k: v for k, v in batch.items() if k != "pixel_values"},
                        pixel_values=torch.cat([pv[:n] for pv, n in zip(
                            batch["pixel_values"], batch["image_grid_thw"][:, 1:].prod(-1), strict=True)]),
                        output_attentions=True, use_cache=False).attentions
    pad = backbone.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for b, f in enumerate(feats):
        assert f.positions.tolist() == torch.nonzero(batch["input_ids"][b] == pad).flatten().tolist()
        torch.testing.assert_close(f.embeddings, own[b, f.positions], atol=1e-6, rtol=0)
        pos, last = f.positions, int(batch["attention_mask"][b].nonzero().max())
        cent = torch.stack([a[b][:, pos][:, :, pos].sum(1).mean(0) for a in att])
        eos = torch.stack([a[b][:, last, pos].mean(0) for a in att])
        torch.testing.assert_close(f.centrality, cent, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention, eos, atol=1e-5, rtol=0)
    win = backbone.encode_pages(pages, LayerCapture.window([1]))
    torch.testing.assert_close(win[1].centrality, feats[1].centrality_for([1]), atol=1e-6, rtol=0)


def test_queries_use_the_query_prefix(backbone):
    qs = backbone.encode_queries(["red", "a much longer query text"])
    assert qs[0].shape[0] == len("Query: red") and qs[1].shape[0] > qs[0].shape[0]


def test_attention_outside_the_interface_is_reported_not_keyerror(backbone):
    from anchorprune.backbones.capture import find_decoder_layers

    attn = find_decoder_layers(backbone.model)[0].self_attn
    original, plain_cfg = attn.forward, attn.config

    def own_attention(*args, **kwargs):  # like remote code with its own attention classes: ignores the config
        installed, attn.config = attn.config, plain_cfg
        try:
            return original(*args, **kwargs)
        finally:
            attn.config = installed

    attn.forward = own_attention
    with pytest.raises(CaptureNotReachedError, match="layers \\[0\\] ran without the capture"):
        backbone.encode_pages(_pages()[:1], LayerCapture.window([0, 2]))
