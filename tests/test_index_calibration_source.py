"""index.calibration.source (#31): the index stage calibrates token_ivf on the dataset's own calibration-split
queries (never its evaluation queries), ``auto`` falls back to pseudo-queries below ``min_queries``, the manifest
and ``index status`` say which sample was used, and bad settings are refused naming what to set."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.config import ConfigError, load_settings
from anchorprune.index.base import IndexInputError
from anchorprune.index.calibration import QuerySample
from anchorprune.index.local import LocalIndex
from anchorprune.index_config import CalibrationConfig, IndexConfig
from anchorprune.stages.index import IndexStageError, calibration_queries, stage_index
from anchorprune.stages.workspace import Workspace
from synth import build_synth, sap_champion

sys.path.insert(0, str(Path(__file__).parent / "index"))
from index_helpers import make_pages  # noqa: E402

#: 40 pages, one query each (q{i} asks for p{i}): data.calibration_fraction 0.3 holds out round(40 * 0.3) = 12
N = 40
CALIB = 12
SPEC_BACKBONE = {"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 3}


@pytest.fixture
def make_project(tmp_path, tracking_config, monkeypatch):
    """``make_project(calibration, **index)``: a workspace over the synthetic corpus whose champion is a SAP spec
    (the registry stubbed), and the list every query encoding is appended to as (backbone, texts)."""
    import anchorprune.promotion.registry as registry
    from anchorprune.features.cache import QueryCache

    encoded: list[tuple[object, list[str]]] = []
    real_encode = QueryCache.get_or_encode

    def spy(self, backbone, texts, *a, **kw):
        encoded.append((backbone, list(texts)))
        return real_encode(self, backbone, texts, *a, **kw)

    monkeypatch.setattr(QueryCache, "get_or_encode", spy)
    cand, spec = sap_champion(SPEC_BACKBONE)
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    root = tmp_path / "proj"
    root.mkdir()
    build_synth(root, N)

    def make(calibration: dict, **index) -> Workspace:
        params = {"data": {"dataset": "synth", "calibration_fraction": 0.3, "seed": 0},
                  # the config's backbone differs from the champion's (batch size): calibration must use the champion's
                  "backbones": [{**SPEC_BACKBONE, "batch_size": 8}],
                  "index": {"backend": "local", "name": "t", "dtype": "float32", "first_stage": "token_ivf",
                            "token_ivf": {"centroids": 8}, "calibration": calibration, **index},
                  "tracking": {"uri": tracking_config.uri, "artifact_root": str(tracking_config.artifact_root)}}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        return Workspace(load_settings(root / "params.yaml"), root)

    return make, encoded


def serving_calibration(ws: Workspace) -> dict | None:
    from anchorprune.stages.index import open_serving_index

    return open_serving_index(ws).current().manifest["first_stage"].get("calibration")


def split_texts(ws: Workspace) -> tuple[list[str], list[str]]:
    calib, evalq = ws.split()
    return [ws.dataset.queries[q] for q in calib], [ws.dataset.queries[q] for q in evalq]


# ---------------------------------------------------------------- the stage
def test_the_stage_calibrates_on_the_calibration_split_never_on_evaluation_queries(make_project, monkeypatch):
    make, encoded = make_project
    ws = make({"source": "queries", "min_queries": 5})
    loaded = []
    real_backbone = Workspace.backbone
    monkeypatch.setattr(Workspace, "backbone", lambda self, cfg: loaded.append((cfg, real_backbone(self, cfg)))
                        or loaded[-1][1])
    stage_index(ws)
    calib_ids, eval_ids = ws.split()
    calib, evalq = split_texts(ws)
    assert len(calib_ids) == CALIB and len(eval_ids) == N - CALIB
    assert len(encoded) == 1                                       # encoded once, at calibration
    backbone, texts = encoded[0]
    assert texts == calib                                          # exactly the calibration split, in split order
    assert not set(texts) & set(evalq)                             # and no evaluation query
    champion_backbone = [b for cfg, b in loaded if cfg.batch_size == 3]
    assert champion_backbone and backbone is champion_backbone[0]  # the serving (champion's) query encoder
    cal = serving_calibration(ws)
    assert cal["source"] == "queries"
    s = cal["sample"]
    assert s["kind"] == "queries" and s["queries"] == CALIB and s["split_queries"] == CALIB and s["drawn"] == "all"
    assert "calibration split" in s["from"] and s["dataset"] == "synth"
    assert s["query_ids_sha256"] == hashlib.sha256("\n".join(calib_ids).encode()).hexdigest()


def test_a_split_larger_than_the_sample_size_is_drawn_from_seeded(make_project):
    make, encoded = make_project
    ws = make({"source": "queries", "queries": 5, "min_queries": 5})
    stage_index(ws)
    calib, evalq = split_texts(ws)
    texts = encoded[0][1]
    assert len(texts) == 5 and set(texts) <= set(calib) and not set(texts) & set(evalq)
    s = serving_calibration(ws)["sample"]
    assert (s["kind"], s["queries"], s["split_queries"], s["drawn"]) == ("queries", 5, CALIB, f"5 of {CALIB}, seed 0")


def test_auto_uses_the_split_when_it_holds_min_queries(make_project):
    make, encoded = make_project
    ws = make({"source": "auto", "min_queries": CALIB})                # 12 >= 12
    stage_index(ws)
    assert encoded[0][1] == split_texts(ws)[0]
    cal = serving_calibration(ws)
    assert cal["source"] == "auto" and cal["sample"]["kind"] == "queries"


def test_auto_falls_back_to_pseudo_queries_below_min_queries_and_says_why(make_project):
    make, encoded = make_project
    ws = make({"source": "auto", "queries": 40, "min_queries": CALIB + 1})   # 12 < 13
    stage_index(ws)
    assert encoded == []                                           # no query encoded for calibration
    cal = serving_calibration(ws)
    s = cal["sample"]
    assert cal["source"] == "auto" and s["kind"] == "pseudo" and s["queries"] == 40
    assert f"holds {CALIB} queries" in s["fallback"] and f"min_queries {CALIB + 1}" in s["fallback"]


def test_source_queries_with_too_few_split_queries_is_refused_before_anything_is_built(make_project):
    make, encoded = make_project
    ws = make({"source": "queries"})                               # min_queries 30 > 12
    with pytest.raises(IndexStageError) as err:
        stage_index(ws)
    msg = str(err.value)
    assert f"holds {CALIB} queries" in msg and "of 40 queries" in msg and "min_queries 30" in msg
    assert f"index.calibration.min_queries: {CALIB}" in msg and "data.calibration_fraction" in msg
    assert encoded == [] and not (ws.root / "indexes" / "t").exists()


def test_pseudo_and_none_encode_nothing(make_project):
    make, encoded = make_project
    ws = make({"source": "pseudo", "queries": 30})
    stage_index(ws)
    assert encoded == [] and serving_calibration(ws)["sample"]["kind"] == "pseudo"
    ws = make({"source": "none"})
    stage_index(ws)
    assert encoded == [] and serving_calibration(ws) is None


def test_an_auto_index_below_its_threshold_neither_calibrates_nor_checks_the_split(make_project):
    make, encoded = make_project
    ws = make({"source": "queries"}, first_stage="auto")           # 40 pages < 20,000: searches are exact
    assert calibration_queries(ws) is None                         # no refusal: nothing would be calibrated
    stage_index(ws)
    assert encoded == [] and serving_calibration(ws) is None
    ws = make({"source": "queries", "min_queries": 5}, first_stage="auto", first_stage_threshold=N)
    stage_index(ws, force=True)                                    # 40 >= 40: token_ivf searches, so it calibrates
    assert serving_calibration(ws)["sample"]["kind"] == "queries"


def test_status_says_which_sample_calibrated(make_project):
    make, _ = make_project
    ws = make({"source": "queries", "min_queries": 5})
    stage_index(ws)
    out = CliRunner().invoke(app, ["index", "status", "--params", str(ws.root / "params.yaml")])
    assert out.exit_code == 0, out.output
    assert f"on {CALIB} held-out queries (the dataset's calibration split)" in out.output
    ws = make({"source": "auto", "queries": 40, "min_queries": CALIB + 1})
    stage_index(ws)
    out = CliRunner().invoke(app, ["index", "status", "--params", str(ws.root / "params.yaml")])
    assert out.exit_code == 0, out.output
    assert f"on 40 pseudo-queries (source auto: the calibration split of dataset 'synth' holds {CALIB}" in out.output


def test_elasticsearch_is_given_no_calibration_queries(tmp_path):
    from anchorprune.config import Settings

    ws = Workspace(Settings(backbones=[SPEC_BACKBONE],
                            index={"backend": "elasticsearch", "calibration": {"source": "queries"}}), tmp_path)
    assert calibration_queries(ws) is None                         # it does not calibrate: nothing is encoded


# ---------------------------------------------------------------- the index
def test_a_callable_is_called_once_and_only_by_a_build_that_calibrates(tmp_path):
    pages = make_pages(60, dim=16, per_page=6)
    calls = []

    def give():
        calls.append(1)
        return QuerySample([p.vectors[:3] for p in pages[:12]], {"from": "a test"})

    mean = LocalIndex(tmp_path, "m", dtype="float32", first_stage="mean", calibration_queries=give)
    mean.build(pages, {})
    assert calls == []                                             # no token_ivf: never encoded
    ivf = LocalIndex(tmp_path, "i", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8},
                     calibration={"source": "queries"}, calibration_queries=give)
    s = ivf.build(pages, {}).manifest["first_stage"]["calibration"]["sample"]
    assert calls == [1] and s["kind"] == "queries" and s["queries"] == 12 and s["from"] == "a test"
    pseudo = LocalIndex(tmp_path, "p", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8},
                        calibration={"source": "pseudo", "queries": 20}, calibration_queries=give)
    assert pseudo.build(pages, {}).manifest["first_stage"]["calibration"]["sample"]["kind"] == "pseudo"
    assert calls == [1]                                            # pseudo: the queries are not even asked for


def test_a_local_index_without_a_calibration_config_does_not_calibrate(tmp_path):
    """Off by default from the API too (index.calibration.source: none); a config without source still calibrates."""
    pages = make_pages(60, dim=16, per_page=6)
    plain = LocalIndex(tmp_path, "d", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8})
    assert "calibration" not in plain.build(pages, {}).manifest["first_stage"]
    legacy = LocalIndex(tmp_path, "l", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8},
                        calibration={"queries": 20})
    assert legacy.build(pages, {}).manifest["first_stage"]["calibration"]["sample"]["kind"] == "pseudo"


def test_source_queries_without_queries_is_refused_naming_the_fix(tmp_path):
    idx = LocalIndex(tmp_path, "q", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8},
                     calibration={"source": "queries"})
    with pytest.raises(IndexInputError, match="source is 'queries' but this build was given no query matrices"):
        idx.build(make_pages(60, dim=16), {})
    with pytest.raises(IndexInputError, match="calibration source must be one of none, queries, pseudo, auto"):
        LocalIndex(tmp_path, "q", calibration={"source": "real"})


# ---------------------------------------------------------------- configuration
def write_params(tmp_path: Path, calibration) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"backbones": [SPEC_BACKBONE]}) + "index:\n  calibration: " + calibration + "\n")
    return p


@pytest.mark.parametrize(("calibration", "message"), [
    ("{source: real}", "index.calibration.source must be none | queries | pseudo | auto, got 'real'"),
    ("{source: queries, queries: 0}", "queries is the sample size and must be >= 1 with source 'queries', got 0"),
    ("{source: auto, queries: 10}", "queries (10) caps the calibration queries measured, so it must be >= "
                                    "min_queries (30)"),
    ("{source: queries, min_queries: 1}", "min_queries"),
])
def test_bad_calibration_settings_are_refused_naming_them(tmp_path, calibration, message):
    with pytest.raises(ConfigError) as err:
        load_settings(write_params(tmp_path, calibration))
    assert message in str(err.value) and "calibration" in str(err.value)


@pytest.mark.parametrize(("calibration", "source", "queries"), [
    ("{queries: 0}", "none", 0),                # params.yaml before `source`: 0 was off ...
    ("{queries: 150}", "pseudo", 150),          # ... and N was N pseudo-queries: both keep their meaning
    ("{}", "none", 200),                        # the default: off
    ("{source: off}", "none", 200),             # YAML reads off as false
    ("{source: queries}", "queries", 200),
])
def test_old_configs_keep_their_meaning(tmp_path, calibration, source, queries):
    cfg = load_settings(write_params(tmp_path, calibration)).index.calibration
    assert (cfg.source, cfg.queries) == (source, queries)


def test_open_index_hands_the_source_and_the_queries_to_the_local_index(tmp_path):
    from anchorprune.index import open_index

    qs = [torch.ones(2, 4)]
    idx = open_index(IndexConfig(name="x", calibration=CalibrationConfig(source="queries")), tmp_path,
                     calibration_queries=qs)
    assert idx.calibration.source == "queries" and idx.calibration_queries is qs
    assert open_index(IndexConfig(name="x"), tmp_path).calibration.source == "none"


def test_a_different_calibration_split_rebuilds_and_none_does_not_look_at_it(make_project):
    from anchorprune.stages.index import index_config_key

    make, encoded = make_project
    ws = make({"source": "queries", "min_queries": 5})
    stage_index(ws)
    assert stage_index(ws).rebuilt is False                        # nothing changed
    (ws.root / "params.yaml").write_text((ws.root / "params.yaml").read_text()
                                         .replace("calibration_fraction: 0.3", "calibration_fraction: 0.4"))
    ws = Workspace(load_settings(ws.root / "params.yaml"), ws.root)
    assert stage_index(ws).rebuilt is True                         # another split: another calibration sample
    assert len(encoded[-1][1]) == 16                               # round(40 * 0.4)
    off = make({"source": "none"})
    assert "calibration_split" not in index_config_key(off)
