"""Adapters on layout-faithful models (backbones/layouts.py): the real depth, head ratio, token ids and templates.

Sources of every expected value: docs/checkpoints.md (§1 config, §2 module tree, §3 page
layouts, §4 windows) and docs/method.md §1 (windows).
"""

from __future__ import annotations

import copy

import PIL.Image
import pytest
import torch
from torch import nn

from anchorprune.backbones import layouts as L
from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.capture import DecoderLayersError, find_decoder_layers
from anchorprune.backbones.colpali import ColPaliBackbone
from anchorprune.backbones.colpali_engine import ColPaliEngineBackbone
from anchorprune.backbones.colqwen2 import ColQwen2Backbone
from anchorprune.backbones.jina_v4 import JinaV4Backbone
from anchorprune.pages import Page
from anchorprune.windows import WindowError, resolve_window


def _img(w: int, h: int, seed: int = 0) -> PIL.Image.Image:
    g = torch.Generator().manual_seed(seed)
    return PIL.Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy())


def _naive_rows(model: nn.Module, batch: dict, visual: torch.Tensor, call=None):
    """Eager attention at every decoder layer (the post-softmax weights each eager layer returns), reduced per
    layer by forward hooks so that only one [B, H, S, S] map is alive: ``[(cent [L, N], eos [L, N]) per page]``."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    layers = find_decoder_layers(eager)
    last = [int(batch["attention_mask"][b].nonzero().max()) for b in range(visual.shape[0])]
    pos = [torch.nonzero(visual[b]).flatten() for b in range(visual.shape[0])]
    rows: dict[int, list] = {}

    def hook(i):
        def fn(_mod, _args, out):
            w = out[1]                                                       # [B, H, S, S]
            rows[i] = [(w[b][:, p][:, :, p].sum(1).mean(0), w[b][:, last[b], p].mean(0)) for b, p in enumerate(pos)]
        return fn

    handles = [layer.self_attn.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        (call or (lambda m, b: m(**b)))(eager, batch)
    for h in handles:
        h.remove()
    assert sorted(rows) == list(range(len(layers)))
    return [(torch.stack([rows[i][b][0] for i in rows]), torch.stack([rows[i][b][1] for i in rows]))
            for b in range(len(pos))]


def _assert_rows_equal_naive(feats, naive, window):
    """The captured rows of ``window`` (real layer indices) equal the naive rows of those layers."""
    for f, (cent, eos) in zip(feats, naive, strict=True):
        assert f.layers == tuple(window) and f.centrality.shape == (len(window), f.num_tokens)
        assert float(cent[list(window)].sum()) > 0
        torch.testing.assert_close(f.centrality, cent[list(window)], atol=2e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention, eos[list(window)], atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------------ ColPali v1.3
@pytest.fixture(scope="module")
def colpali():
    model, proc = L.colpali_v1_3()
    return ColPaliBackbone(model, proc, "colpali", "layout/colpali-v1.3", "test")


def test_colpali_decoder_is_found_under_a_deeper_vision_tower(colpali):
    vision = colpali.model.vlm.vision_tower.vision_model.encoder.layers \
        if hasattr(colpali.model.vlm.vision_tower, "vision_model") else colpali.model.vlm.vision_tower.encoder.layers
    assert len(vision) == 27 > colpali.num_layers == 18
    assert find_decoder_layers(colpali.model) is colpali.model.vlm.language_model.layers
    attn = find_decoder_layers(colpali.model)[0].self_attn
    assert (attn.config.num_attention_heads, attn.config.num_key_value_heads) == (8, 1)


def test_colpali_page_is_1024_image_tokens_then_the_real_prompt_ids(colpali):
    batch = colpali.process_images([_img(600, 800)])
    ids = batch["input_ids"][0].tolist()
    assert ids == [257152] * 1024 + [2, 50721, 573, 2416, 235265, 108] and len(ids) == 1030
    assert colpali.visual_mask(batch)[0].nonzero().flatten().tolist() == list(range(1024))


@pytest.mark.slow
def test_colpali_published_windows_and_rows_equal_naive_at_real_depth(colpali):
    assert resolve_window("v1", colpali.num_layers, kind="colpali") == [8, 9, 10, 11]
    v2 = resolve_window("v2", colpali.num_layers, kind="colpali")
    assert v2 == [11, 12, 13, 14]
    page = Page("p0", "h0", image=_img(600, 800))
    win = colpali.encode_pages([page], LayerCapture.window(v2))
    assert win[0].positions.tolist() == list(range(1024)) and win[0].num_layers == 18
    batch = colpali.process_images([page.image])
    _assert_rows_equal_naive(win, _naive_rows(colpali.model, batch, colpali.visual_mask(batch)), v2)


def test_colpali_query_follows_the_processor_template(colpali):
    batch = colpali.process_queries(["what is the red thing?"])
    ids = batch["input_ids"][0].tolist()
    tok = colpali.processor.tokenizer
    assert ids[0] == 2 and ids[-11:] == [0] * 10 + [108]            # <bos> ... <pad>*10 "\n"
    assert tok.decode(ids[1:-11]) == "Question: what is the red thing?"
    (q,) = colpali.encode_queries(["what is the red thing?"])
    assert q.shape == (len(ids), colpali.dim)                        # the 10 augmentation pads are query vectors


# ------------------------------------------------------------------------------------------ ColQwen2 v1.0
@pytest.fixture(scope="module")
def colqwen2():
    model, proc = L.colqwen2_v1_0()
    return ColQwen2Backbone(model, proc, "colqwen2", "layout/colqwen2-v1.0", "test")


def test_colqwen2_depth_heads_and_windows(colqwen2):
    assert colqwen2.num_layers == 28 and len(colqwen2.model.vlm.visual.blocks) == 32
    attn = find_decoder_layers(colqwen2.model)[0].self_attn
    assert (attn.config.num_attention_heads, attn.config.num_key_value_heads) == (12, 2)
    assert resolve_window("v1", colqwen2.num_layers, kind="colqwen2") == list(range(11, 17))
    assert resolve_window("v2", colqwen2.num_layers, kind="colqwen2") == list(range(18, 24))


@pytest.mark.parametrize("size,tokens", [((1700, 2200), 744), ((1654, 2339), 736)])   # Letter, A4 (docs/checkpoints.md §3)
def test_colqwen2_page_at_trained_max_pixels_has_the_real_visual_count(colqwen2, size, tokens):
    batch = colqwen2.process_images([PIL.Image.new("RGB", size)])
    ids = batch["input_ids"][0]
    vis = colqwen2.visual_mask(batch)[0]
    assert int(vis.sum()) == tokens and bool((ids[vis] == 151655).all())
    start = int((ids == 151652).nonzero()) + 1
    assert vis.nonzero().flatten().tolist() == list(range(start, start + tokens))
    assert int(ids[start + tokens]) == 151653 and ids[-2:].tolist() == [151645, 151643]
    assert colqwen2.processor.tokenizer.decode(ids[~vis]) == (
        "<|im_start|>user\n<|vision_start|><|vision_end|>Describe the image.<|im_end|><|endoftext|>")


@pytest.mark.slow
def test_colqwen2_rows_equal_naive_at_real_depth(colqwen2):
    pages = [Page("a", "ha", image=_img(56, 56, 1)), Page("b", "hb", image=_img(112, 84, 2))]
    v2 = resolve_window("v2", colqwen2.num_layers, kind="colqwen2")
    feats = colqwen2.encode_pages(pages, LayerCapture.window(v2))
    batch = colqwen2.process_images([p.image for p in pages])
    assert [f.num_tokens for f in feats] == [4, 12]
    _assert_rows_equal_naive(feats, _naive_rows(colqwen2.model, batch, colqwen2.visual_mask(batch)), v2)


def test_colqwen2_query_template(colqwen2):
    ids = colqwen2.process_queries(["red"])["input_ids"][0].tolist()
    tok = colqwen2.processor.tokenizer
    assert tok.decode(ids) == "Query: red" + "<|endoftext|>" * 10 + "\n"


# ------------------------------------------------------------------------------------------ Jina v4
@pytest.fixture(scope="module")
def jina():
    model, proc = L.jina_v4(peft=True)
    return JinaV4Backbone(model, proc, "jina-v4", "layout/jina-v4", "test")


def test_jina_decoder_through_peft_and_get_decoder_returning_the_vl_model(jina):
    inner = jina.model.get_base_model()
    assert isinstance(jina.model, L.PeftShapedWrapper) and inner.get_decoder() is inner.model   # the whole VL model
    assert jina.num_layers == 36 and len(inner.model.visual.blocks) == 32
    assert find_decoder_layers(jina.model) is inner.model.language_model.layers
    attn = find_decoder_layers(jina.model)[0].self_attn
    assert (attn.config.num_attention_heads, attn.config.num_key_value_heads) == (16, 2)
    assert resolve_window("v1", jina.num_layers, kind="jina-v4") == list(range(14, 22))
    assert resolve_window("v2", jina.num_layers, kind="jina-v4") == list(range(26, 34))


@pytest.mark.slow
def test_jina_rows_equal_naive_at_real_depth_and_query_prefix(jina):
    pages = [Page("a", "ha", image=_img(56, 56, 3)), Page("b", "hb", image=_img(112, 112, 4))]
    v2 = resolve_window("v2", jina.num_layers, kind="jina-v4")
    feats = jina.encode_pages(pages, LayerCapture.window(v2))
    batch = jina.process_images([p.image for p in pages])
    assert [f.num_tokens for f in feats] == [4, 16]
    inner = jina.model.get_base_model()

    def call(model, b):
        sizes = b["image_grid_thw"][:, 1] * b["image_grid_thw"][:, 2]
        pv = torch.cat([p[:n] for p, n in zip(b["pixel_values"], sizes, strict=True)])
        return model.model(**{k: v for k, v in b.items() if k != "pixel_values"}, pixel_values=pv, use_cache=False)

    _assert_rows_equal_naive(feats, _naive_rows(inner, batch, jina.visual_mask(batch), call), v2)
    ids = jina.process_queries(["red"])["input_ids"][0].tolist()
    assert jina.processor.tokenizer.decode(ids) == "Query: red"


# ------------------------------------------------------------------------------------- ColQwen2.5 (colpali-engine)
@pytest.fixture(scope="module")
def colqwen2_5():
    model, proc = L.colqwen2_5_v0_2()
    return ColPaliEngineBackbone(model, proc, "colqwen2.5", "vidore/colqwen2.5-v0.2", "test")


def test_colqwen2_5_gets_its_measured_depth_not_the_28_layer_window(colqwen2_5):
    assert colqwen2_5.num_layers == 36
    assert find_decoder_layers(colqwen2_5.model) is colqwen2_5.model.language_model.layers
    for spec in ("v1", "v2"):                 # docs/method.md §1: no published window for ColQwen2.5, use §3 (SR)
        with pytest.raises(WindowError, match="36"):
            resolve_window(spec, colqwen2_5.num_layers, kind="colpali-engine")
    assert resolve_window("sr", colqwen2_5.num_layers, sr_window=list(range(25, 33))) == list(range(25, 33))


@pytest.mark.slow
def test_colqwen2_5_rows_equal_naive_and_query_template(colqwen2_5):
    pages = [Page("a", "ha", image=_img(56, 56, 5)), Page("b", "hb", image=_img(84, 112, 6))]
    last = list(range(32, 36))                                          # layers a 28-layer model does not have
    feats = colqwen2_5.encode_pages(pages, LayerCapture.window(last))
    batch = colqwen2_5.process_images([p.image for p in pages])
    assert [f.num_tokens for f in feats] == [4, 12]

    def call(model, b):
        return nn.Module.__call__(model, **b)

    naive = _naive_rows(colqwen2_5.model, batch, colqwen2_5.visual_mask(batch), call)
    _assert_rows_equal_naive(feats, naive, last)
    ids = colqwen2_5.process_queries(["red"])["input_ids"][0].tolist()
    assert colqwen2_5.processor.tokenizer.decode(ids) == "Query: red" + "<|endoftext|>" * 10


# ------------------------------------------------------------------------------------------ failures
def test_disagreeing_depth_and_missing_decoder_name_the_model_class(colqwen2_5):
    layers = colqwen2_5.model.language_model.layers
    removed = layers[35]
    del layers[35]
    try:
        with pytest.raises(DecoderLayersError, match="ColQwen2_5Double: 35 layers .* num_hidden_layers=36"):
            find_decoder_layers(colqwen2_5.model)
    finally:
        layers.append(removed)
    assert len(find_decoder_layers(colqwen2_5.model)) == 36
    with pytest.raises(DecoderLayersError, match="Sequential: no decoder layers"):
        find_decoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_published_window_depths_are_the_real_checkpoints_depths():
    """The paper's windows assume each family's decoder depth: the real checkpoint layouts say the same."""
    from anchorprune.windows import PUBLISHED_WINDOWS

    assert PUBLISHED_WINDOWS["colpali"][0] == L.COLPALI_V1_3.text_layers
    assert PUBLISHED_WINDOWS["colqwen2"][0] == L.COLQWEN2_V1_0.text_layers
    assert PUBLISHED_WINDOWS["jina-v4"][0] == L.JINA_V4.text_layers
