"""The evaluate stage on a two-source dataset: per-source ranking, macro retention for promotion, languages."""

from __future__ import annotations

import json

import pytest

from anchorprune.config import Settings
from anchorprune.data.schema import DatasetWriter
from anchorprune.stages.calibrate import stage_calibrate
from anchorprune.stages.evaluate import candidates_from, load_evaluation, stage_evaluate
from anchorprune.stages.workspace import Workspace

N = 8   # topics per source


def _two_sources(root):
    """Sources a and b, each with N pages/queries; b's pages repeat a's topics (a twin per a-page).

    Ranked against every page, each a-query ties with b's twin of its page; per source it cannot see it.
    """
    w = DatasetWriter(root / "data" / "two")
    for src in ("a", "b"):
        for i in range(N):
            w.add_page(f"{src}/p{i}", None, text=f"{src} page topic:t{i}", source_doc=src, page_number=i + 1,
                       source=src)
            w.add_query(f"{src}/q{i}", f"which {src} page is about topic:t{i}?", source=src)
            w.add_qrel(f"{src}/q{i}", f"{src}/p{i}", 1)
    w.finish(name="two", source="vidore", revision="test", extra={"languages": ["english"]})


@pytest.fixture
def ws(tmp_path, tracking_config):
    _two_sources(tmp_path)
    settings = Settings.model_validate({
        "data": {"dataset": "two", "source": "vidore", "calibration_fraction": 0.5},
        "backbones": [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted"}],
        "calibrate": {"pairs": 20, "random_trials": 2, "min_pairs": 5},   # a small fixture: 8 pairs
        "evaluate": {"gammas": [0.1], "methods": ["sap", "random"], "windows": ["sr"], "random_trials": 2},
        "tracking": tracking_config.model_dump(),
    })
    return Workspace(settings, tmp_path)


def test_evaluate_per_source_and_candidates_use_macro_retention(ws):
    bcfg = ws.settings.backbones[0]
    stage_calibrate(ws, bcfg)
    result = stage_evaluate(ws, bcfg)
    assert result.sources == ["a", "b"]
    _, evalq = ws.split()
    assert result.num_queries == len(evalq)
    # a twin in the other source would tie with the gold page; per source every query finds its page first
    assert result.full.metrics["recall@1"] == 1.0
    assert result.full.extra["per_source/a/recall_at_1"] == 1.0
    for cfg in result.configs:
        a, b = cfg.extra["per_source/a/ndcg_at_5"], cfg.extra["per_source/b/ndcg_at_5"]
        assert cfg.metrics["ndcg@5"] == pytest.approx((a + b) / 2)

    blob = json.loads((ws.reports / "evaluation" / "mock.json").read_text())
    assert blob["sources"] == ["a", "b"] and blob["meta"]["languages"] == "english"
    reloaded = load_evaluation(ws.reports / "evaluation" / "mock.json", "mock")
    assert reloaded.sources == ["a", "b"]
    assert [c.ndcg_retention for c in reloaded.configs] == [c.ndcg_retention for c in result.configs]

    t = ws.tracker
    parent = t.client.search_runs([t.experiment_id], "tags.`anchorprune.stage` = 'evaluate'")[0]
    assert parent.data.params["languages"] == "english" and json.loads(parent.data.params["sources"]) == ["a", "b"]
    child = next(c for c in t.child_runs(parent.info.run_id) if c.data.params["method"] == "sap")
    assert "per_source/b/ndcg_retention" in child.data.metrics

    # promotion's candidates carry the macro retention the grid computed (the registry step is in the flow tests)
    cands = candidates_from(reloaded, "mock")
    assert [c.retention for c in cands] == [c.ndcg_retention for c in result.configs]
    rnd = next(c for c in result.configs if c.method == "random")
    assert all(c.random_retention == rnd.ndcg_retention for c in cands)
    assert ws.meta(bcfg)["languages"] == "english"
