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
    "empty-methods.yaml": ["'evaluate.methods'", "list at least one method"],
    "empty-gammas.yaml": ["'evaluate.gammas'", "list at least one gamma"],
    "empty-windows.yaml": ["'evaluate.windows'", "list at least one window"],
    "empty-ks.yaml": ["'evaluate.ks'", "list at least one cut-off k"],
    "nonpositive-ks.yaml": ["'evaluate.ks'", ">= 1", "[0, -1]"],
    "duplicate-methods.yaml": ["'evaluate.methods'", "repeated: ['sap']"],
    "window-beyond-layers.yaml": ["'8-11'", "'minilm-text'", "6 layers (0..5)"],
    "no-backbones.yaml": ["'backbones' lists no backbone"],
    "unknown-index-backbone.yaml": ["index.backbone 'colpali'", "known: minilm-text"],
    "bad-cron.yaml": ["'schedule.reindex_cron'", "'every night' is not a cron expression"],
    "bad-timezone.yaml": ["'schedule.timezone'", "'Mars/Olympus' is not an IANA time zone"],
    "boolean-gamma.yaml": ["'calibrate.gamma'", "expected a number, got True"],
    "not-utf8.yaml": ["not-utf8.yaml is not UTF-8 text", "0xe9"],
    "a-directory.yaml": ["a-directory.yaml is a directory", "params.yaml"],
    "bad-vidore-language.yaml": ["'data.vidore_languages'", "['en']", "'english'"],
    "candidates-over-knn-limit.yaml": ["'index.candidates'", "above 10000", "use 10000 or fewer"],
    "fde-over-es-dense-vector-limit.yaml": ["'index'", "index.muvera gives 8192-dim FDEs", "limit of 4096",
                                            "set final_dim"],
    "unknown-first-stage.yaml": ["'index.first_stage'", "'none', 'mean', 'muvera', 'token_ivf' or 'auto'"],
    "token-ivf-no-lists-probed.yaml": ["'index.token_ivf.nprobe'", "greater than or equal to 1"],
    "fde-over-memory.yaml": ["'index.muvera'", "262,144,000,000 dims per page", "more than this machine's",
                             "lower reps, k_sim or d_proj"],
    "kmeans-over-memory.yaml": ["'index.token_ivf'", "centroids 1000000000000", "more than this machine's",
                                "use fewer centroids"],
    "too-many-workers.yaml": ["'encode.workers'", "100000 local worker processes", "CPU cores", "use null"],
    "repeated-section.yaml": ["repeated-section.yaml repeats the key 'index' (line 1 and line 6)",
                              "silently replace the first"],
}


def test_every_invalid_fixture_has_an_expected_message():
    assert sorted(p.name for p in (CONFS / "invalid").glob("*.yaml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_names_the_problem(name):
    with pytest.raises(ConfigError) as exc:
        load_settings(CONFS / "invalid" / name)
    for needle in INVALID[name]:
        assert needle in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)  # one line


def test_several_errors_stay_on_one_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("evaluate: {methods: [], ks: [0]}\nschedule: {timezone: Nowhere}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.count("; ") >= 2
    assert all(k in msg for k in ("'evaluate.methods'", "'evaluate.ks'", "'schedule.timezone'"))


def test_bad_yaml_is_one_line_with_its_position(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("calibrate:\n  gamma: [0.1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+") as exc:
        load_settings(p)
    assert "\n" not in str(exc.value)


def test_accepted_crons_and_zones_are_what_prefect_accepts():
    """The config parses schedules the way the deployments will (Prefect's CronSchedule)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    cfg = load_settings(ROOT / "params.yaml", overrides={"schedule": {"recalibrate_cron": "@weekly",
                                                                     "timezone": "Europe/Paris"}})
    for cron in (cfg.schedule.reindex_cron, cfg.schedule.recalibrate_cron):
        CronSchedule(cron=cron, timezone=cfg.schedule.timezone)
    for cron, tz in (("every night", "UTC"), ("61 2 * * *", "UTC"), ("0 2 * * *", "Mars/Olympus")):
        with pytest.raises(ValidationError):
            CronSchedule(cron=cron, timezone=tz)
        with pytest.raises(ConfigError):
            load_settings(ROOT / "params.yaml", overrides={"schedule": {"reindex_cron": cron, "timezone": tz}})


def test_integers_still_read_as_floats():
    cfg = load_settings(ROOT / "params.yaml", overrides={"calibrate": {"gamma": 1}, "evaluate": {"gammas": [1]}})
    assert cfg.calibrate.gamma == 1.0 and cfg.evaluate.gammas == (1.0,)


def test_windows_checked_only_when_depth_is_known():
    over = {"evaluate": {"windows": ["sr", "20-23"]}}
    with pytest.raises(ConfigError, match="has 6 layers"):
        load_settings(ROOT / "params.yaml", overrides=over)
    colpali = {"backbones": [{"name": "c", "kind": "colpali", "model_id": "vidore/colpali-v1.2"}], **over}
    assert load_settings(ROOT / "params.yaml", overrides=colpali).evaluate.windows == ("sr", "20-23")


def test_project_root_is_the_params_folder(tmp_path, monkeypatch):
    from anchorprune.config import project_root

    (tmp_path / "proj").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert project_root("../proj/params.yaml") == (tmp_path / "proj").resolve()


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
