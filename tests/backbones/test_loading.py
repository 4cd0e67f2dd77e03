import pytest

from anchorprune.backbones import load_backbone
from anchorprune.backbones.loading import ModelUnavailableError
from anchorprune.config import BackboneConfig


@pytest.mark.parametrize("kind,model_id", [("colpali", "vidore/colpali-v1.3-hf"),
                                           ("colqwen2", "vidore/colqwen2-v1.0-hf")])
def test_missing_checkpoint_fails_at_once_naming_model_and_offline(kind, model_id, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelUnavailableError) as exc:
        load_backbone(BackboneConfig(name=kind, kind=kind, model_id=model_id, revision="main"))
    assert model_id in str(exc.value) and "HF_HUB_OFFLINE is set" in str(exc.value)


def test_unknown_kind_is_named():
    cfg = BackboneConfig.model_construct(name="x", kind="colbert", model_id="m", revision="r")
    with pytest.raises(ValueError, match="unknown backbone kind 'colbert'"):
        load_backbone(cfg)
