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
