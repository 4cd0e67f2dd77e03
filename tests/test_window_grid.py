"""Layer choices in the grid (sr, v1/v2, sweep), the per-config cache, the DVC outputs and two backbones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from anchorprune.config import Settings
from anchorprune.data.schema import DatasetWriter
from anchorprune.evaluation.grid import grid_jobs
from anchorprune.stages.calibrate import stage_calibrate
from anchorprune.stages.evaluate import stage_evaluate
from anchorprune.stages.promote import stage_promote
from anchorprune.stages.workspace import Workspace
from anchorprune.windows import grid_windows, scaled_published, sweep_windows, window_source
from synth import add_topic_pages

N = 12


def test_grid_windows_published_scaled_and_sweep():
    wins, notes = grid_windows(["sr", "v1", "v2", "sweep"], 18, [6, 7, 8, 9], "colpali")
    assert wins["v1"] == [8, 9, 10, 11] and wins["v2"] == [11, 12, 13, 14] and not notes
    assert [k for k in wins if k.startswith("sweep:")] == [f"sweep:{s}-{s + 3}" for s in range(15)]
    wins, notes = grid_windows(["v1", "v2", "sweep"], 6, [3, 4], "minilm-text", stride=2)
    assert wins["v1"] == scaled_published("v1", 6) == [2, 3] and wins["v2"] == [4, 5]
    assert set(notes) == {"v1", "v2"} and "scaled" in notes["v1"]
    assert [wins[k] for k in wins if k.startswith("sweep")] == sweep_windows(6, 2, 2) == [[0, 1], [2, 3], [4, 5]]
    assert [window_source(s) for s in ("sr", "v1", "2-3", "sweep:0-1", None)] == ["sr", "fixed", "fixed", "sweep",
                                                                                  None]


def test_grid_jobs_dedup_windows_keep_first_spec():
    jobs = grid_jobs(["sap", "random"], [0.1], {"sr": [2, 3], "v1": [2, 3], "sweep:0-1": [0, 1],
                                                "sweep:2-3": [2, 3]})
    assert [(m, s) for m, _, s, _ in jobs] == [("sap", "sr"), ("sap", "sweep:0-1"), ("random", None)]


def _dataset(root):
    add_topic_pages(DatasetWriter(root / "data" / "one"), N, text="page about topic:t{i} and some filler words here",
                    source_doc="d").finish(name="one", source="pdfs", revision="test")


def _ws(root, tracking_config, backbones=None, **evaluate):
    settings = Settings.model_validate({
        "data": {"dataset": "one", "source": "pdfs", "calibration_fraction": 0.25},
        "backbones": backbones or [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted"}],
        "calibrate": {"pairs": 20, "random_trials": 2, "min_pairs": 3},
        "evaluate": {"gammas": [0.25], "methods": ["sap", "random"], "windows": ["sr", "v1", "v2", "sweep"],
                     "random_trials": 2, **evaluate},
        "promote": {"min_queries": 1, "bootstrap_resamples": 200, "min_retention": 0.5},
        "tracking": tracking_config.model_dump(),
    })
    return Workspace(settings, root)


@pytest.fixture
def prune_calls(monkeypatch):
    """Counts ``prune`` calls of every pruner the grid builds."""
    import anchorprune.pruning as pruning

    calls = []
    real = pruning.build_pruner

    def counting(method, **kw):
        p = real(method, **kw)
        orig = p.prune

        def prune(f, gamma):
            calls.append((method, gamma))
            return orig(f, gamma)
        p.prune = prune
        return p
    monkeypatch.setattr(pruning, "build_pruner", counting)
    return calls


def test_windows_in_mlflow_plots_data_and_clean_outputs(tmp_path, tracking_config, prune_calls):
    _dataset(tmp_path)
    ws = _ws(tmp_path, tracking_config)
    bcfg = ws.settings.backbones[0]
    calib = stage_calibrate(ws, bcfg)
    result = stage_evaluate(ws, bcfg)
    width = len(calib.window)
    sap = [c for c in result.configs if c.method == "sap"]
    starts = sorted(c.window_start for c in sap)
    assert starts == list(range(8 - width + 1)), "every window start of the sweep (SR, v1, v2 are among them)"
    assert {c.window_source for c in sap} >= {"sr", "sweep"}
    assert result.cache_stats == {"hits": 0, "misses": len(result.configs)}

    t = ws.tracker
    parent = t.client.search_runs([t.experiment_id], "tags.`anchorprune.stage` = 'evaluate'")[0]
    assert "v1" in json.loads(parent.data.params["window_notes"])            # mock has no published window
    kids = [c for c in t.child_runs(parent.info.run_id) if c.data.params["method"] == "sap"]
    assert len(kids) == len(sap)
    for k in kids:
        p = k.data.params
        assert p["window_source"] in ("sr", "fixed", "sweep") and int(p["window_end"]) - int(p["window_start"]) >= 0
        assert "ndcg_retention" in k.data.metrics and "sr_ratio_of_means" in k.data.metrics
    arts = [a.path for a in t.client.list_artifacts(parent.info.run_id)]
    assert "retention_by_window.png" in arts

    rw = pd.read_csv(tmp_path / "plots" / "retention_by_window.csv")
    assert sorted(rw[rw.method == "sap"].window_start) == starts
    sr = pd.read_csv(tmp_path / "plots" / "sr_by_layer.csv")
    assert list(sr.layer) == list(range(8)) and sr.in_sr_window.sum() == width
    assert (tmp_path / "reports" / "evaluation" / "windows.png").exists()

    # DVC outputs carry no run ids nor commit; the provenance beside them gives them back on load
    text = (tmp_path / "reports" / "evaluation" / "mock.json").read_text()
    assert kids[0].info.run_id not in text and "git_commit" not in text
    assert "run_id" not in pd.read_csv(tmp_path / "reports" / "evaluation" / "results.csv").columns
    from anchorprune.evaluation.results import EvaluationResult
    back = EvaluationResult.load(tmp_path / "reports" / "evaluation" / "mock.json")
    assert back.parent_run_id == parent.info.run_id and all(c.run_id for c in back.configs)

    # nothing changed: nothing recomputed, and the DVC outputs are byte-identical
    outs = {p: p.read_bytes() for p in [tmp_path / "reports" / "evaluation" / "mock.json",
                                        tmp_path / "reports" / "evaluation" / "results.csv",
                                        *(tmp_path / "plots").glob("*.csv")]}
    prune_calls.clear()
    again = stage_evaluate(ws, bcfg)
    assert prune_calls == [] and again.cache_stats["misses"] == 0
    assert {p: p.read_bytes() for p in outs} == outs

    # one γ added: only its configs are computed
    ws2 = _ws(tmp_path, tracking_config, gammas=[0.25, 0.5])
    more = stage_evaluate(ws2, bcfg)
    assert {g for _, g in prune_calls} == {0.5}
    assert more.cache_stats == {"hits": len(result.configs), "misses": len(result.configs)}

    # promote: champion/* in the flat headline metrics, no run ids in the DVC output
    decision = stage_promote(ws2, bcfg)
    head = json.loads((tmp_path / "metrics.json").read_text())
    assert "mock/full/ndcg@5" in head and "mock/sap/sr/0.25/ndcg@5_retention" in head
    assert "mock/sap/best/0.5/window_start" in head
    assert not any("sweep" in k for k in head)
    if decision.champion is not None:
        assert head["champion/mock/gamma"] == decision.champion.gamma
    report = tmp_path / "reports" / "promotion" / "mock.json"
    assert "run_id" not in report.read_text()

    # a second promote on the same evaluation moves nothing and leaves the DVC output byte for byte
    # (whether this run promoted is kept beside it, with the run ids): a rerun of the demo keeps dvc.lock
    first = report.read_bytes()
    again = stage_promote(ws2, bcfg)
    assert not again.promoted and report.read_bytes() == first


def test_two_backbones_each_get_their_window_grid_and_figure(tmp_path, tracking_config):
    _dataset(tmp_path)
    backbones = [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted"},
                 {"name": "mock2", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 4}]
    ws = _ws(tmp_path, tracking_config, backbones=backbones, windows=["sr", "sweep"], sweep_stride=3)

    for bcfg in ws.settings.backbones:
        stage_calibrate(ws, bcfg)
        stage_evaluate(ws, bcfg)
        stage_promote(ws, bcfg)
    rw = pd.read_csv(tmp_path / "plots" / "retention_by_window.csv")
    sr = pd.read_csv(tmp_path / "plots" / "sr_by_layer.csv")
    assert set(rw.backbone) == set(sr.backbone) == {"mock", "mock2"}
    assert list(rw.backbone) == sorted(rw.backbone)          # stable order: a rerun writes the same bytes
    head = json.loads((tmp_path / "metrics.json").read_text())
    assert {k.split("/")[0] for k in head} >= {"mock", "mock2"}
    for name in ("mock", "mock2"):
        rec = json.loads((tmp_path / "reports" / "promotion" / f"{name}.json").read_text())
        assert rec["candidates"] and all(c["backbone"] == name for c in rec["candidates"])
    from anchorprune.stages.evaluate import window_comparison_png
    assert window_comparison_png(ws).exists()
