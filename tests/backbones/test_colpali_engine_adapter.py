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
def test_tiny_colpali_engine_model_capture_matches_visual_rule():
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
    feats = bb.encode_pages([Page("p", "h", image=PIL.Image.new("RGB", (64, 64)))], LayerCapture.all())
    assert feats[0].num_tokens == 16 and feats[0].centrality.shape == (2, 16)
    assert importlib.util.find_spec("colpali_engine") is not None
    assert torch.isfinite(feats[0].centrality).all()
