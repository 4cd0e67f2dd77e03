"""The whole pipeline on a tiny synthetic dataset with the mocked backbone (planted anchors)."""

from __future__ import annotations

import json

import pytest

from anchorprune.config import load_settings
from anchorprune.promotion.registry import current_champion, model_name
from anchorprune.promotion.rule import choose_champion
from anchorprune.stages.evaluate import candidates_from, load_evaluation
from anchorprune.stages.index import open_serving_index
from anchorprune.stages.search import stage_search
from anchorprune.stages.workspace import Workspace
from anchorprune.tracking.tracker import Tracker

pytestmark = pytest.mark.slow


def _ws(root):
    return Workspace(load_settings(root / "params.yaml"), root)


def _run_pipeline(root):
    from flows.pipeline import pipeline_flow

    return pipeline_flow(params="params.yaml", root=str(root))


def test_pipeline_end_to_end(project):
    result = _run_pipeline(project)
    ws = _ws(project)
    tracker = Tracker.from_config(ws.settings.tracking, project)
    client = tracker.client

    # data: tracked by DVC, version recorded
    assert (project / "data.dvc").exists() and len(result["data_version"]) == 32

    # calibration: SR by layer with step = layer, window inside the planted anchor layers
    calib = client.search_runs([tracker.experiment_id], "tags.`anchorprune.stage` = 'calibrate'")
    assert len(calib) == 1
    hist = client.get_metric_history(calib[0].info.run_id, "sr_by_layer")
    assert sorted(m.step for m in hist) == list(range(8))
    window = result["windows"]["mock"]
    assert set(window) <= {2, 3, 4, 5}, window
    sr = {m.step: m.value for m in hist}
    assert min(sr[layer] for layer in window) > max(sr[0], sr[7])
    assert "sr_by_layer.png" in [a.path for a in client.list_artifacts(calib[0].info.run_id)]

    # evaluation: a parent run with one child per config and the expected metrics
    parent = client.search_runs([tracker.experiment_id], "tags.`anchorprune.stage` = 'evaluate'")[0]
    children = tracker.child_runs(parent.info.run_id)
    # full + 2 gammas x (sap x 2 windows + random + eos_topk)
    assert len(children) == 1 + 2 * 4
    for child in children:
        for key in ("ndcg_at_5", "ndcg_at_10", "recall_at_5", "ndcg_retention", "sr_ratio_of_means",
                    "sr_mean_of_ratios", "vectors_per_page", "bytes_per_page"):
            assert key in child.data.metrics, (child.info.run_name, key)
        for key in ("method", "gamma", "window", "backbone_id", "backbone_revision", "data_version", "git_commit"):
            assert key in child.data.params
    arts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert {"comparison.csv", "comparison.html", "ndcg_retention_vs_gamma.png"} <= set(arts)

    # planted structure: SAP on the SR window beats random at gamma 0.1
    ev = load_evaluation(project / "reports" / "evaluation" / "mock.json", "mock")
    sap = next(c for c in ev.configs if c.method == "sap" and c.gamma == 0.1 and c.window_spec == "sr")
    rnd = next(c for c in ev.configs if c.method == "random" and c.gamma == 0.1)
    assert sap.sr_ratio_of_means > rnd.sr_ratio_of_means + 0.1

    # promotion: the alias points at the config the rule must choose
    cands = candidates_from(ev, "mock", ws)
    expected = choose_champion(cands, 0.9).champion
    assert all(c.retention_low is not None and c.retention_low <= c.retention <= c.retention_high for c in cands)
    champ, spec = current_champion(tracker, "mock")
    assert expected is not None
    assert (champ.method, champ.gamma, champ.window) == (expected.method, expected.gamma, expected.window)
    assert champ.run_id in {c.info.run_id for c in children}  # the champion links to its evaluation run
    mv = client.get_model_version_by_alias(model_name("mock"), "champion")
    assert mv.tags["anchorprune.method"] == expected.method
    assert float(mv.tags["anchorprune.retention_low"]) >= 0.9 and mv.description
    promotion = json.loads((project / "reports" / "promotion" / "mock.json").read_text())
    assert promotion["champion"]["retention_low"] >= 0.9
    assert {"retention_low", "vs_random_low"} <= {k for c in promotion["candidates"] for k in c}

    # index: a version serves, and each query finds its planted page first
    info = json.loads((project / "reports" / "index.json").read_text())
    assert info["version"] == result["index"].version and info["pages"] == 40
    for i in (0, 5, 11):
        hits = stage_search(ws, f"which page is about topic:t{i}?", k=3)
        assert hits[0].page_id == f"p{i:02d}"

    # headline metrics for `dvc metrics show/diff`: a few numbers per backbone, the same as the evaluation
    headline = json.loads((project / "metrics.json").read_text())
    assert headline["mock/sap/sr/0.1/ndcg@5_retention"] == round(sap.ndcg_retention, 4)
    assert headline["mock/random/-/0.1/ndcg@5_retention"] == round(rnd.ndcg_retention, 4)
    assert headline["mock/full/ndcg@5"] == round(ev.full.metrics["ndcg@5"], 4)
    assert headline["champion/mock/gamma"] == expected.gamma

    # the pipeline run published its summary: decision and links to the MLflow run and model version
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as pc:   # the newest: other tests of this session run pipelines too
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["anchorprune-pipeline"])),
                                 sort=ArtifactSort.CREATED_DESC, limit=1)
    assert arts, "no pipeline artifact"
    md = arts[0].data
    assert f"/#/models/{model_name('mock')}/versions/{mv.version}" in md
    assert f"runs/{parent.info.run_id}" in md and "### promote" in md and "now serves v" in md

    # a triggered reindex with champion, data and index config unchanged builds nothing and says so
    from flows.reindex import reindex_flow

    from anchorprune.stages.index import serving_is_current, stage_index

    kept = [v.number for v in open_serving_index(ws).versions()]
    noop = reindex_flow(params="params.yaml", root=str(project))
    assert noop.rebuilt is False and noop.version == info["version"], noop
    assert "nothing rebuilt" in noop.reason
    assert [v.number for v in open_serving_index(ws).versions()] == kept
    (project / "reports" / "index.json").unlink()              # as `dvc repro` does before running the stage
    assert stage_index(ws).rebuilt is False
    recorded = json.loads((project / "reports" / "index.json").read_text())
    assert recorded["version"] == info["version"] and recorded["rebuilt"] is False

    # a changed index config (or data) is a reason to rebuild
    idx, mv = open_serving_index(ws), champ_version(tracker)
    other = Workspace(load_settings(project / "params.yaml", overrides={"index": {"dtype": "float16"}}), project)
    assert serving_is_current(ws, idx, model_name("mock"), mv, ws.check_dataset()) is not None
    assert serving_is_current(other, idx, model_name("mock"), mv, ws.check_dataset()) is None
    assert serving_is_current(ws, idx, model_name("mock"), mv, "0" * 64) is None

    # forced: a new version that re-sends nothing (every page reused)
    again = stage_index(ws, force=True)
    assert again.version == info["version"] + 1 and again.rebuilt is True
    assert (again.reused_pages, again.reencoded_pages) == (40, 0)
    before = (project / "reports" / "index.json").read_bytes()  # the build's own record (rebuilt: true)
    assert stage_index(ws).rebuilt is False                 # a no-op leaves it as it is: `dvc status` stays clean
    assert (project / "reports" / "index.json").read_bytes() == before

    # a served page whose stored vectors were overwritten is re-encoded, not copied forward
    import numpy as np

    from anchorprune.index import LocalIndex

    vdir = project / ws.settings.paths.index_dir / ws.settings.index.name / f"v{again.version}"
    vec = vdir / "vectors.bin"
    data = bytearray(vec.read_bytes())
    data[:16] = np.full(4, 0.5, dtype=np.float32).tobytes()        # page 0's first vector: wrong but finite
    vec.write_bytes(bytes(data))
    healed = stage_index(ws)       # nothing changed, but a damaged page: rebuilt
    assert (healed.reused_pages, healed.reencoded_pages) == (39, 1)
    LocalIndex(vdir.parent.parent, ws.settings.index.name).verify(healed.version)
    assert stage_search(ws, "which page is about topic:t0?", k=1)[0].page_id == "p00"


def champ_version(tracker) -> str:
    return str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version)


def test_champion_runs_as_pyfunc(project):
    import mlflow
    import pandas as pd

    _run_pipeline(project)
    ws = _ws(project)
    with Tracker.from_config(ws.settings.tracking, project).fluent():
        model = mlflow.pyfunc.load_model(f"models:/{model_name('mock')}@champion")
    out = model.predict(pd.DataFrame({"page_id": ["a", "b"], "text": ["topic:x", "topic:y"]}))
    champ, spec = current_champion(Tracker.from_config(ws.settings.tracking, project), "mock")
    assert list(out["page_id"]) == ["a", "b"]
    assert all(n == max(1, int(spec.gamma * 32)) for n in out["n_vectors"])


def test_failure_in_evaluate_leaves_champion_and_index(project, monkeypatch):
    _run_pipeline(project)
    ws = _ws(project)
    tracker = Tracker.from_config(ws.settings.tracking, project)
    before_version = str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version)
    before_index = open_serving_index(ws).current().number

    import flows.evaluate

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure inside evaluate")

    monkeypatch.setattr(flows.evaluate, "stage_evaluate", boom)
    # a changed config makes the evaluate task miss its cache, so the failure is reached
    params = (project / "params.yaml").read_text().replace("min_retention: 0.9", "min_retention: 0.5")
    (project / "params.yaml").write_text(params)
    with pytest.raises(Exception, match="injected failure"):
        _run_pipeline(project)
    assert str(tracker.client.get_model_version_by_alias(model_name("mock"), "champion").version) == before_version
    assert open_serving_index(ws).current().number == before_index
    assert stage_search(ws, "which page is about topic:t3?", k=1)[0].page_id == "p03"


def test_cli_pipeline_runs_the_flows_of_the_checkout(project):
    """`anchorprune pipeline` loads flows/pipeline.py from the params file's checkout and searches the new index."""
    from typer.testing import CliRunner

    from anchorprune.cli import app

    res = CliRunner().invoke(app, ["pipeline", "--params", str(project / "params.yaml"),
                                   "--query", "which page is about topic:t3?"])
    assert res.exit_code == 0, res.output
    assert "index test-index now serves version 1" in res.output
    hits = [ln for ln in res.output.splitlines() if ln.lstrip().startswith("1. ")]
    assert hits and "p03" in hits[0], res.output
