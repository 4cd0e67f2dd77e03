import importlib.util

import pytest

from anchorprune.backbones.colpali_engine import ColPaliEngineUnavailable, family_for, import_colpali_engine


def _importable() -> bool:
    try:
        import_colpali_engine()
    except ColPaliEngineUnavailable:
        return False
    return True


def test_family_lookup_prefers_the_longest_prefix():
    assert family_for("vidore/colqwen2-v1.0") == ("ColQwen2", "ColQwen2Processor")
    assert family_for("vidore/colpali-v1.3") == ("ColPali", "ColPaliProcessor")
    with pytest.raises(ValueError, match="no colpali-engine family"):
        family_for("someone/else")


@pytest.mark.skipif(_importable(), reason="colpali-engine imports here")
def test_clear_error_where_it_does_not_import():
    with pytest.raises(ColPaliEngineUnavailable, match="make colpali-engine-env"):
        import_colpali_engine()


@pytest.mark.colpali_engine
@pytest.mark.skipif(not _importable(), reason="colpali-engine does not import next to the CPU torch 2.13 wheel "
                    "(run `make test-colpali-engine` in the second environment)")
def test_tiny_colpali_engine_model_rows_equal_naive_and_own_forward():
    import copy

    import PIL.Image
    import torch
    from colpali_engine.models import ColPali, ColPaliProcessor

    from anchorprune.backbones.base import LayerCapture
    from anchorprune.backbones.colpali_engine import ColPaliEngineBackbone
    from anchorprune.backbones.tiny import tiny_colpali
    from anchorprune.pages import Page

    ref, proc = tiny_colpali(layers=2)
    model = ColPali(copy.deepcopy(ref.config.vlm_config)).eval()
    processor = ColPaliProcessor(image_processor=proc.image_processor, tokenizer=proc.tokenizer)
    bb = ColPaliEngineBackbone(model, processor, "ce", "tiny", "t")
    g = torch.Generator().manual_seed(4)
    pages = [Page(f"p{i}", f"h{i}", image=PIL.Image.fromarray((torch.rand(40, 40, 3, generator=g) * 255).byte().numpy()))
             for i in range(2)]
    feats = bb.encode_pages(pages, LayerCapture.all())
    assert importlib.util.find_spec("colpali_engine") is not None
    batch = bb.process_images([p.image for p in pages])
    eager = copy.deepcopy(model.model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        own = model(**batch)                                                   # [B, S, 128]
        att = eager(**batch, output_attentions=True).attentions
    for b, f in enumerate(feats):
        assert f.positions.tolist() == torch.nonzero(batch["input_ids"][b] == ref.config.vlm_config.image_token_index
                                                     ).flatten().tolist()
        assert f.num_tokens == 16 and f.centrality.shape == (2, 16)
        assert torch.equal(f.embeddings, own[b, f.positions].float())
        pos, last = f.positions, int(batch["attention_mask"][b].nonzero().max())
        cent = torch.stack([a[b][:, pos][:, :, pos].sum(1).mean(0) for a in att])
        eos = torch.stack([a[b][:, last, pos].mean(0) for a in att])
        torch.testing.assert_close(f.centrality, cent, atol=1e-5, rtol=0)
        torch.testing.assert_close(f.eos_attention, eos, atol=1e-5, rtol=0)


@pytest.mark.colpali_engine
@pytest.mark.skipif(not _importable(), reason="colpali-engine does not import next to the CPU torch 2.13 wheel "
                    "(run `make test-colpali-engine` in the second environment)")
def test_real_colpali_engine_classes_on_the_real_layouts():
    """colpali-engine's own ColPali (SigLIP 27 layers over an 18-layer decoder) and ColQwen2_5 (36 layers):
    the adapter measures the decoder's depth, and the rows of layers a 28-layer model lacks equal naive."""
    import copy

    import PIL.Image
    import torch
    from colpali_engine.models import ColPali, ColQwen2_5

    from anchorprune.backbones import layouts as L
    from anchorprune.backbones.base import LayerCapture
    from anchorprune.backbones.capture import find_decoder_layers
    from anchorprune.backbones.colpali_engine import ColPaliEngineBackbone
    from anchorprune.pages import Page
    from anchorprune.windows import WindowError, resolve_window

    ref, _ = L.colpali_v1_3()
    pali = ColPali(copy.deepcopy(ref.config.vlm_config)).eval()
    assert len(find_decoder_layers(pali)) == 18

    cfg = L.qwen2_5_vl_config(L.COLQWEN2_5_V0_2)
    model = ColQwen2_5(cfg).eval()
    _, proc = L.colqwen2_5_v0_2(max_pixels=112 * 112)
    bb = ColPaliEngineBackbone(model, proc, "colqwen2.5", "vidore/colqwen2.5-v0.2", "t")
    assert bb.num_layers == 36
    with pytest.raises(WindowError, match="36"):
        resolve_window("v2", bb.num_layers, kind="colpali-engine")
    g = torch.Generator().manual_seed(7)
    pages = [Page(f"p{i}", f"h{i}", image=PIL.Image.fromarray((torch.rand(56 * (i + 1), 56, 3, generator=g) * 255)
                                                               .byte().numpy())) for i in range(2)]
    window = [32, 33, 34, 35]
    feats = bb.encode_pages(pages, LayerCapture.window(window))
    batch = bb.process_images([p.image for p in pages])
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    rows = {}
    layers = find_decoder_layers(eager)
    for i in window:
        layers[i].self_attn.register_forward_hook(lambda m, a, out, i=i: rows.__setitem__(i, out[1]))
    with torch.no_grad():
        own = model(**batch)
        eager(**batch)
    for b, f in enumerate(feats):
        assert torch.equal(f.embeddings, own[b, f.positions].float())
        pos = f.positions
        cent = torch.stack([rows[i][b][:, pos][:, :, pos].sum(1).mean(0) for i in window])
        torch.testing.assert_close(f.centrality, cent, atol=2e-5, rtol=0)


def test_real_peft_wrapper_keeps_the_decoder_reachable():
    peft = pytest.importorskip("peft", reason="peft is installed only in the colpali-engine environment")
    from anchorprune.backbones import layouts as L
    from anchorprune.backbones.capture import find_decoder_layers

    model, _ = L.jina_v4()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["multi_vector_projector"]))
    assert wrapped.base_model.model is model                            # the layout PeftShapedWrapper models
    assert find_decoder_layers(wrapped) is model.model.language_model.layers
    assert len(find_decoder_layers(wrapped)) == 36
