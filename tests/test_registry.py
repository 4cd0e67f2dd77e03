import json

import pytest

from anchorprune.promotion import Candidate
from anchorprune.registry import ChampionSpec, current_champion, model_name, promote
from anchorprune.tracking import Tracker


def cand(gamma, vectors, retention, random=0.5):
    return Candidate("mock", "sap", gamma, "2-3", retention, vectors, random)


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

    d, v2, _ = _promote(tracker, [cand(0.05, 5, 0.93)])
    assert d.promoted and v2 == "2"
    assert str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version) == "2"

    d, v3, run_id = _promote(tracker, [cand(0.2, 20, 0.99)])
    assert not d.promoted and v3 == "2"
    assert str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version) == "2"
    run = tracker.client.get_run(run_id)
    assert run.data.tags["anchorprune.promotion"] == "kept"
    assert "does not beat current" in run.data.tags["anchorprune.reason"]
    path = tracker.client.download_artifacts(run_id, "promotion.json")
    with open(path) as fh:
        assert json.load(fh)["promoted"] is False


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
    from anchorprune.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == "http://mlflow.internal:5000"
