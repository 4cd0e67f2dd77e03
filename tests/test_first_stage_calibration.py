"""First-stage calibration (index/calibration.py): a token_ivf build picks its own (nprobe, candidates) to reach
``index.target_recall``, records them in the manifest, search uses them unless the config pins them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.config import IndexConfig
from anchorprune.index import open_index
from anchorprune.index.base import IndexInputError
from anchorprune.index.calibration import (
    CalibrationParams,
    exact_scores,
    Setting,
    choose,
    lower_bound,
    plain_recall,
    pseudo_queries,
    tie_aware_recall,
)
from anchorprune.index.local import LocalIndex

sys.path.insert(0, str(Path(__file__).parent / "index"))
from index_helpers import make_pages  # noqa: E402

#: 400 random pages of 6-9 16-d vectors over 64 lists: token_ivf's fixed default (nprobe 8, 100 candidates)
#: keeps about 0.8 of the exact top 10 here, far below 0.99
PAGES = 400
CENTROIDS = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One calibrated token_ivf version (80 pseudo-queries), serving, and its pages."""
    root = tmp_path_factory.mktemp("cal")
    pages = make_pages(PAGES, dim=16, per_page=6)
    idx = LocalIndex(root, "cal", dtype="float32", first_stage="token_ivf",
                     first_stage_params={"centroids": CENTROIDS}, calibration={"queries": 80})
    v = idx.build(pages, {"config_hash": "c"})
    idx.swap(v)
    return root, pages, v


def held_out(pages, n: int = 60, seed: int = 7) -> list[torch.Tensor]:
    """Pseudo-queries the calibration never saw (another seed), ``[m, 16]`` each."""
    vecs = torch.cat([p.vectors for p in pages]).numpy()                          # [T, 16]
    offsets = np.concatenate([[0], np.cumsum([p.vectors.shape[0] for p in pages])])
    qs = pseudo_queries(lambda rows: vecs[rows], offsets, CalibrationParams(queries=n, seed=seed))
    return [torch.from_numpy(q) for q in qs]


def recall_of(idx: LocalIndex, queries: list[torch.Tensor]) -> float:
    ids, exact = idx.exact_scores(queries)                                        # [Q, P]
    pos = {pid: j for j, pid in enumerate(ids)}
    hits, _ = idx.search_report(queries, k=10)
    return float(np.mean([plain_recall(exact[i].numpy(), [pos[h.page_id] for h in row], 10)
                          for i, row in enumerate(hits)]))


# ---------------------------------------------------------------- recall definitions
def test_tie_aware_recall_counts_a_page_that_ties_the_kth_exact_score():
    exact = np.array([5.0, 4.0, 3.0, 3.0, 3.0, 1.0])                              # pages 2, 3, 4 tie for 3rd
    assert plain_recall(exact, [0, 1, 4], 3) == pytest.approx(2 / 3)             # tie-break picked page 2
    assert tie_aware_recall(exact, [0, 1, 4], 3) == 1.0                           # page 4 scores as well
    assert tie_aware_recall(exact, [0, 1, 5], 3) == pytest.approx(2 / 3)          # page 5 is below the 3rd
    assert tie_aware_recall(np.array([2.0, 1.0 - 1e-7, 1.0]), [0, 1], 2) == 1.0   # float noise within TIE_RTOL


def test_lower_bound_is_below_the_mean_and_tightens_with_more_queries():
    few = np.array([1.0, 0.9] * 5)                                                 # [10]
    many = np.array([1.0, 0.9] * 500)                                              # [1000]
    assert lower_bound(few) < lower_bound(many) < many.mean()


def test_a_small_all_perfect_sample_cannot_certify_099():
    """sd 0 made the normal bound 1.0 for any all-perfect sample; the slot-level Wilson cap needs 30 queries of
    recall@10 before 0.99 can be certified."""
    assert lower_bound(np.ones(10), slots=10) < 0.99 <= lower_bound(np.ones(30), slots=10)
    assert choose([Setting(2, 50, 1.0, 1.0, lower_bound(np.ones(10), slots=10), 1.0)], 0.99) is None


# ---------------------------------------------------------------- build-time calibration
def test_calibration_meets_the_target_where_the_fixed_default_misses(corpus):
    root, pages, v = corpus
    cal = v.manifest["first_stage"]["calibration"]
    assert cal["met"] and cal["recall_lower_bound"] >= 0.99
    qs = held_out(pages)
    fixed = LocalIndex(root, "cal", candidates=100, first_stage="token_ivf", first_stage_params={"nprobe": 8})
    calibrated = LocalIndex(root, "cal", first_stage="token_ivf")
    assert recall_of(fixed, qs) < 0.9                                              # the old default misses
    assert recall_of(calibrated, qs) >= 0.97                                       # held-out: the choice holds
    assert (cal["nprobe"], cal["candidates"]) != (8, 100)


def test_the_choice_is_the_cheapest_setting_whose_lower_bound_reaches_the_target(corpus):
    cal = corpus[2].manifest["first_stage"]["calibration"]
    ok = [s for s in cal["settings"] if s["recall_lower_bound"] >= cal["target_recall"]]
    assert ok and cal["cost"] == min(s["cost"] for s in ok)
    assert any(s["recall"] >= 0.99 > s["recall_lower_bound"] for s in cal["settings"]) or \
        all(s["recall_lower_bound"] <= s["recall"] for s in cal["settings"])       # the margin never adds recall


def test_the_manifest_records_the_choice_the_sample_and_the_time(corpus):
    cal = corpus[2].manifest["first_stage"]["calibration"]
    for key in ("nprobe", "candidates", "recall", "recall_tie_aware", "recall_lower_bound", "seconds", "margin",
                "cost", "target_recall", "grid"):
        assert key in cal, key
    assert cal["sample"]["kind"] == "pseudo" and cal["sample"]["queries"] == 80
    assert "exact MaxSim over every page" in cal["sample"]["how"]
    assert cal["target_recall"] == 0.99 and cal["k"] == 10 and cal["seconds"] >= 0


def test_search_uses_the_calibrated_settings_and_a_pinned_config_wins(corpus):
    root, pages, v = corpus
    cal = v.manifest["first_stage"]["calibration"]
    q = [pages[0].vectors[:4]]
    idx = LocalIndex(root, "cal", first_stage="token_ivf")
    plan = idx.plan(idx._serving(), 10)
    assert (plan.nprobe, plan.candidates, plan.settings) == (cal["nprobe"], cal["candidates"], "calibrated")
    assert idx.search_report(q, k=10)[1].candidates == cal["candidates"]
    pinned = LocalIndex(root, "cal", candidates=37, first_stage="token_ivf", first_stage_params={"nprobe": 3})
    plan = pinned.plan(pinned._serving(), 10)
    assert (plan.nprobe, plan.candidates, plan.settings) == (3, 37, "configured")
    assert pinned.search_report(q, k=10)[1].candidates == 37


def test_params_yaml_pins_only_the_settings_it_names(tmp_path, corpus):
    root = corpus[0]
    free = open_index(IndexConfig(name="cal", first_stage="token_ivf"), root)
    assert free.candidates is None and "nprobe" not in free.first_stage_params
    pinned = open_index(IndexConfig(name="cal", first_stage="token_ivf", candidates=250,
                                    token_ivf={"nprobe": 2}), root)
    assert pinned.candidates == 250 and pinned.first_stage_params["nprobe"] == 2


def test_given_queries_calibrate_instead_of_pseudo_queries(tmp_path):
    pages = make_pages(60, dim=16, per_page=6)
    qs = [p.vectors[:3] for p in pages[:12]]
    idx = LocalIndex(tmp_path, "q", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 8},
                     calibration_queries=qs)
    cal = idx.build(pages, {}).manifest["first_stage"]["calibration"]
    assert cal["sample"] == {"kind": "queries", "queries": 12, "how": "held-out queries given to the build"}


def test_no_setting_reaching_the_target_makes_search_exact(tmp_path, monkeypatch):
    import anchorprune.index.calibration as calibration

    monkeypatch.setattr(calibration, "NPROBE_GRID", (1,))
    monkeypatch.setattr(calibration, "CANDIDATE_GRID", (10,))
    pages = make_pages(200, dim=16, per_page=6)
    idx = LocalIndex(tmp_path, "x", dtype="float32", first_stage="token_ivf", first_stage_params={"centroids": 32},
                     calibration={"queries": 30})
    v = idx.build(pages, {})
    idx.swap(v)
    cal = v.manifest["first_stage"]["calibration"]
    assert not cal["met"] and cal["candidates"] == 200 and cal["best_measured"]["recall"] < 0.99
    assert idx.search_report([pages[3].vectors[:3]], k=10)[1].first_stage == "none"


def test_calibration_off_keeps_the_fixed_settings(tmp_path):
    idx = LocalIndex(tmp_path, "off", first_stage="token_ivf", first_stage_params={"centroids": 8},
                     calibration={"queries": 0})
    v = idx.build(make_pages(150, dim=16), {})
    idx.swap(v)
    assert "calibration" not in v.manifest["first_stage"]
    plan = idx.plan(idx._serving(), 10)
    assert (plan.candidates, plan.settings) == (100, "default")


def test_exact_scores_match_brute_force_maxsim():
    pages = make_pages(30, dim=8, per_page=4)
    vecs = torch.cat([p.vectors for p in pages]).numpy()
    offsets = np.concatenate([[0], np.cumsum([p.vectors.shape[0] for p in pages])])
    q = pages[5].vectors[:2].numpy()
    got = exact_scores([q], lambda rows: vecs[rows], offsets)[0]                   # [P]
    want = [(q @ p.vectors.numpy().T).max(axis=1).sum() for p in pages]
    assert np.allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- configuration and status
@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_target_recall_out_of_range_is_refused_naming_the_value(bad, tmp_path):
    with pytest.raises(ValueError, match=f"target_recall must be in \\(0, 1\\], got {bad}"):
        IndexConfig(target_recall=bad)
    with pytest.raises(IndexInputError, match=f"got {bad}"):
        LocalIndex(tmp_path, "bad", target_recall=bad)


def test_status_shows_the_calibrated_settings_and_says_when_config_pins_them(tmp_path, corpus):
    root, _, v = corpus
    cal = v.manifest["first_stage"]["calibration"]

    def status(index: dict) -> str:
        p = tmp_path / "params.yaml"
        p.write_text(yaml.safe_dump({"paths": {"index_dir": str(root)},
                                     "index": {"name": "cal", "first_stage": "token_ivf", **index},
                                     "backbones": [{"name": "m", "kind": "mock", "model_id": "m"}]}))
        out = CliRunner().invoke(app, ["index", "status", "--params", str(p)])
        assert out.exit_code == 0, out.output
        return out.output

    out = status({})
    assert f"candidates {cal['candidates']} (calibrated), nprobe {cal['nprobe']} (calibrated)" in out
    assert f"recall@10 target 0.99 met with nprobe {cal['nprobe']}, candidates {cal['candidates']}" in out
    assert "on 80 pseudo-queries" in out
    out = status({"candidates": 250, "token_ivf": {"nprobe": 2}})
    assert f"candidates 250 (pinned in params.yaml; calibration chose {cal['candidates']})" in out
    assert f"nprobe 2 (pinned in params.yaml; calibration chose {cal['nprobe']})" in out
