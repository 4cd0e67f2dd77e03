import json

import pytest

from anchorprune.promotion.registry import ChampionSpec, current_champion, model_name, promote, stale_reason
from anchorprune.promotion.rule import Candidate
from anchorprune.tracking.tracker import Tracker


def cand(gamma, vectors, retention, random=0.5):
    return Candidate("mock", "sap", gamma, "2-3", retention, vectors, random, retention_low=retention - 0.01,
                     retention_high=retention + 0.01, vs_random_low=retention - random - 0.05,
                     vs_random_high=retention - random + 0.05, confidence=0.95, num_queries=50)


def spec_for(c):
    return ChampionSpec(backbone={"name": "mock", "kind": "mock", "model_id": "anchorprune/mock"},
                        method=c.method, gamma=c.gamma, window=[2, 3])


@pytest.fixture
def tracker(tracking_config, tmp_path):
    return Tracker.from_config(tracking_config, tmp_path)


def _promote(tracker, cands):
    with tracker.run("promote-mock") as run_id:
        decision, version = promote(tracker, run_id, cands, spec_for, min_retention=0.9)
    return decision, version, run_id


def test_first_champion_then_better_moves_then_worse_stays(tracker):
    d, v1, run_id = _promote(tracker, [cand(0.1, 10, 0.95), cand(0.05, 5, 0.7)])
    assert d.promoted and v1 == "1"
    champ, spec = current_champion(tracker, "mock")
    assert champ.gamma == 0.1 and spec.version == "1" and spec.window == [2, 3]
    run = tracker.client.get_run(run_id)
    assert run.data.tags["anchorprune.promotion"] == "promoted"

    mv = tracker.client.get_model_version(model_name("mock"), "1")
    assert "first champion" in mv.description
    assert mv.tags["anchorprune.retention_low"] == "0.94" and "anchorprune.spec" not in mv.tags
    assert all(len(v) < 100 for v in mv.tags.values())

    d, v2, _ = _promote(tracker, [cand(0.05, 5, 0.93), cand(0.1, 10, 0.95)])
    assert d.promoted and v2 == "2"
    assert str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version) == "2"

    d, v3, run_id = _promote(tracker, [cand(0.2, 20, 0.99), cand(0.05, 5, 0.93)])
    assert not d.promoted and v3 == "2"
    assert str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version) == "2"
    run = tracker.client.get_run(run_id)
    assert run.data.tags["anchorprune.promotion"] == "kept"
    assert "still the best certified config" in run.data.tags["anchorprune.reason"]
    path = tracker.client.download_artifacts(run_id, "promotion.json")
    with open(path) as fh:
        record = json.load(fh)
    assert record["promoted"] is False
    assert {c["name"]: c["certified"] for c in record["candidates"]} == {"sap@0.2[2-3]": True, "sap@0.05[2-3]": True}
    assert run.data.metrics["champion_retention_low"] == pytest.approx(0.92)

    # the champion fails on current data and nothing passes: the alias stays, tagged stale, until one passes
    d, v4, run_id = _promote(tracker, [cand(0.05, 5, 0.80), cand(0.2, 20, 0.5)])
    assert not d.promoted and d.stale and v4 == "2"
    assert stale_reason(tracker, "mock").startswith("STALE")
    assert tracker.client.get_run(run_id).data.tags["anchorprune.promotion"] == "stale"
    _promote(tracker, [cand(0.05, 5, 0.95)])
    assert stale_reason(tracker, "mock") is None


def test_spec_round_trip_with_kappa(tracker):
    def eos_spec(c):
        return ChampionSpec(backbone={"name": "mock", "kind": "mock", "model_id": "anchorprune/mock"},
                            method="eos_adaptive", gamma=c.gamma, window=None, kappa=1.25, resolved_revision="r1")

    c = Candidate("mock", "eos_adaptive", 0.1, None, 0.95, 3.0, 0.5, retention_low=0.93, retention_high=0.97,
                  vs_random_low=0.1, vs_random_high=0.2, confidence=0.95, num_queries=40, kappa=1.25)
    with tracker.run("promote-mock") as run_id:
        promote(tracker, run_id, [c], eos_spec, min_retention=0.9)
    champ, spec = current_champion(tracker, "mock")
    assert (spec.kappa, spec.resolved_revision, spec.version) == (1.25, "r1", "1")
    assert spec.pruner().kappa == 1.25 and champ.kappa == 1.25


def test_no_global_mlflow_state(tracking_config, tmp_path):
    import os

    import mlflow

    before = mlflow.get_tracking_uri()
    t = Tracker.from_config(tracking_config, tmp_path)
    assert mlflow.get_tracking_uri() == before
    with t.fluent():
        assert mlflow.get_tracking_uri() == t.uri
    assert mlflow.get_tracking_uri() == before
    # set_tracking_uri writes MLFLOW_TRACKING_URI, which would redirect every later Tracker: it is restored
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    exp = t.client.get_experiment(t.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    with t.run("tagged") as run_id:
        t.log_metrics(run_id, {"ok": 1.0, "undefined": float("nan")})
    run = t.client.get_run(run_id)
    assert run.data.metrics == {"ok": 1.0}
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]


def test_gate_no_candidate_passes_leaves_no_champion(tracker):
    d, version, run_id = _promote(tracker, [cand(0.1, 10, 0.5), cand(0.2, 20, 0.4)])
    assert not d.promoted and version is None
    assert current_champion(tracker, "mock") is None
    assert "there is no champion" in tracker.client.get_run(run_id).data.tags["anchorprune.reason"]


def test_failed_block_marks_run_failed(tracker):
    with pytest.raises(RuntimeError), tracker.run("boom") as run_id:
        raise RuntimeError("x")
    assert tracker.client.get_run(run_id).info.status == "FAILED"


def test_series_logged_with_step(tracker):
    with tracker.run("curve") as run_id:
        tracker.log_series(run_id, "sr_by_layer", [0.1, 0.5, 0.3])
    hist = tracker.client.get_metric_history(run_id, "sr_by_layer")
    assert sorted((m.step, round(m.value, 3)) for m in hist) == [(0, 0.1), (1, 0.5), (2, 0.3)]


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    from anchorprune.config import TrackingConfig
    from anchorprune.tracking.tracker import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == "http://mlflow.internal:5000"
