from pathlib import Path

import pytest

from anchorprune.config import ConfigError, load_settings

CONFS = Path(__file__).parent / "confs"
ROOT = Path(__file__).parents[1]

# every invalid config and the words its error must contain
INVALID = {
    "typo-key.yaml": ["typo-key.yaml", "unknown key 'calibrate.gama'"],
    "unknown-section.yaml": ["unknown key 'evaluation'"],
    "bad-gamma.yaml": ["'evaluate.gammas'", "(0, 1]", "1.5"],
    "bad-window.yaml": ["'evaluate.windows'", "'11-8'"],
    "bad-backbone-kind.yaml": ["'backbones.0.kind'", "minilm-text"],
    "duplicate-backbone.yaml": ["unique", "['a']"],
    "not-a-mapping.yaml": ["must hold a mapping"],
    "bad-vidore-language.yaml": ["'data.vidore_languages'", "['en']", "'english'"],
    "candidates-over-knn-limit.yaml": ["'index.candidates'", "above 10000", "use 10000 or fewer"],
}


def test_every_invalid_fixture_has_an_expected_message():
    assert sorted(p.name for p in (CONFS / "invalid").glob("*.yaml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_names_the_problem(name):
    with pytest.raises(ConfigError) as exc:
        load_settings(CONFS / "invalid" / name)
    for needle in INVALID[name]:
        assert needle in str(exc.value), str(exc.value)


@pytest.mark.parametrize("path", sorted((CONFS / "valid").glob("*.yaml")) + [ROOT / "params.yaml"], ids=str)
def test_valid_configs_load(path):
    cfg = load_settings(path)
    assert cfg.calibrate.rho > 0


def test_repo_params_match_demo_fixture():
    assert load_settings(ROOT / "params.yaml") == load_settings(CONFS / "valid" / "params-demo.yaml")


def test_settings_are_frozen():
    cfg = load_settings(ROOT / "params.yaml")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.calibrate.gamma = 0.5  # type: ignore[misc]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_overrides_merge_per_section():
    cfg = load_settings(ROOT / "params.yaml", overrides={"calibrate": {"gamma": 0.1}})
    assert cfg.calibrate.gamma == 0.1 and cfg.calibrate.rho == 0.2


def test_config_hash_changes_with_content():
    a = load_settings(ROOT / "params.yaml")
    b = load_settings(ROOT / "params.yaml", overrides={"calibrate": {"gamma": 0.1}})
    assert a.config_hash() != b.config_hash() and len(a.config_hash()) == 12


def test_unknown_backbone_lookup_lists_known():
    cfg = load_settings(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match="known: minilm-text"):
        cfg.backbone("colpali")


def test_vidore_languages_default_all_and_english_list():
    assert load_settings(ROOT / "params.yaml").data.vidore_languages == "all"
    cfg = load_settings(CONFS / "valid" / "vidore-mteb-english.yaml")
    assert cfg.data.vidore_languages == ("english",) and cfg.data.vidore_protocol == "per_dataset"
