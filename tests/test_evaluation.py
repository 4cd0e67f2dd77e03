"""evaluate_grid's arithmetic on a hand-made corpus whose figures can be worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from anchorprune.evaluation.grid import evaluate_grid, grid_jobs
from anchorprune.evaluation.results import BYTES_PER_VALUE, EvaluationResult
from anchorprune.features import PageFeatures
from anchorprune.features.encoding import EncodedCorpus

E = torch.eye(4)
NDCG_RANK2 = 1 / math.log2(3)  # one relevant page found at rank 2


def page(pid: str, rows: list[int], eos: list[float]) -> PageFeatures:
    n = len(rows)
    return PageFeatures(pid, f"h-{pid}", E[rows].clone(), torch.tensor([eos]), torch.tensor([eos]),
                        torch.arange(n), (0,), 1)


@pytest.fixture
def corpus() -> EncodedCorpus:
    # p0: 4 tokens, the e0 token carries the EOS attention; p1: 8 tokens, its e1 token has the LOWEST attention
    p0 = page("p0", [0, 2, 3, 2], [0.9, 0.1, 0.1, 0.1])
    p1 = page("p1", [1, 3, 3, 3, 2, 2, 2, 3], [0.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    queries = {"q0": E[[0]].clone(), "q1": (E[1] + 0.1 * E[0]).unsqueeze(0)}
    return EncodedCorpus("hand", 1, {"p0": p0, "p1": p1}, queries)


QRELS = {"q0": {"p0": 1}, "q1": {"p1": 1}}


def grid(corpus, methods, gammas, **kw) -> EvaluationResult:
    return evaluate_grid(corpus, QRELS, ["q0", "q1"], methods, gammas, {}, progress=False, **kw)


def test_full_reference_and_storage(corpus):
    r = grid(corpus, ["eos_topk"], [0.5])
    assert r.full.per_query == {"q0": 1.0, "q1": 1.0}
    assert r.full.ndcg_retention == 1.0
    assert r.full.vectors_per_page == 6.0                     # (4 + 8) / 2
    assert r.full.bytes_per_page == 6.0 * 4 * BYTES_PER_VALUE  # d = 4, float32
    assert (r.num_queries, r.num_pages) == (2, 2)


def test_retention_is_ratio_of_mean_ndcg(corpus):
    # eos_topk@0.5 keeps p0's e0 (q0 still finds p0) but drops p1's e1: q1 then ranks p0 (0.1) above p1 (0)
    c = grid(corpus, ["eos_topk"], [0.5]).configs[0]
    assert c.per_query == pytest.approx({"q0": 1.0, "q1": NDCG_RANK2})
    assert c.metrics["ndcg@5"] == pytest.approx((1.0 + NDCG_RANK2) / 2)
    assert c.ndcg_retention == pytest.approx((1.0 + NDCG_RANK2) / 2 / 1.0)
    assert not any(k.endswith("_std") for k in c.metrics)   # deterministic: no std, so no NaN anywhere


def test_vectors_and_realised_gamma(corpus):
    r = grid(corpus, ["eos_topk"], [0.5, 0.3])
    by_gamma = {c.gamma: c for c in r.configs}
    # γ=0.5 keeps 2 of 4 and 4 of 8; γ=0.3 keeps floor(1.2)=1 of 4 and floor(2.4)=2 of 8
    assert by_gamma[0.5].vectors_per_page == 3.0 and by_gamma[0.5].realised_gamma == 0.5
    assert by_gamma[0.3].vectors_per_page == 1.5 and by_gamma[0.3].realised_gamma == 0.25
    assert by_gamma[0.3].bytes_per_page == 1.5 * 4 * BYTES_PER_VALUE


def test_random_trials_are_averaged_per_query(corpus):
    three = grid(corpus, ["random"], [0.5], random_trials=3, seed=10).configs[0]
    singles = [grid(corpus, ["random"], [0.5], random_trials=1, seed=s).configs[0] for s in (10, 11, 12)]
    for q in ("q0", "q1"):
        assert three.per_query[q] == pytest.approx(sum(s.per_query[q] for s in singles) / 3)
    assert three.metrics["ndcg@5"] == pytest.approx(sum(s.metrics["ndcg@5"] for s in singles) / 3)
    assert three.metrics["ndcg@5_std"] == pytest.approx(
        torch.tensor([s.metrics["ndcg@5"] for s in singles], dtype=torch.float64).std().item())
    assert "ndcg@5_std" not in singles[0].metrics


def test_eos_adaptive_records_its_kappa(corpus):
    c = grid(corpus, ["eos_adaptive"], [0.25]).configs[0]
    assert c.kappa is not None and math.isfinite(c.kappa)


def test_round_trip_through_json(corpus, tmp_path):
    from anchorprune.stages.evaluate import load_evaluation

    r = grid(corpus, ["eos_topk", "random"], [0.5], random_trials=2)
    r.configs[0].run_id = "abc"
    r.meta = {"data_version": "v1"}
    r.save(tmp_path / "hand.json")
    back = load_evaluation(tmp_path / "hand.json", "hand")
    assert back == r
    assert back.configs[0].per_query == r.configs[0].per_query and back.configs[0].run_id == "abc"


def test_old_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `anchorprune evaluate` first"):
        EvaluationResult.load(tmp_path / "none.json")
    (tmp_path / "old.json").write_text('{"rows": [], "num_queries": 1}')
    with pytest.raises(ValueError, match="rerun `anchorprune evaluate`"):
        EvaluationResult.load(tmp_path / "old.json")


def test_champion_config_is_added_with_its_random_baseline():
    jobs = grid_jobs(["sap"], [0.2], {"sr": [2, 3]}, extra_configs=[("eos_topk", 0.05, None), ("sap", 0.2, [2, 3])])
    assert ("eos_topk", 0.05, None, None) in jobs and ("random", 0.05, None, None) in jobs
    assert [j for j in jobs if j[0] == "sap"] == [("sap", 0.2, "sr", (2, 3))]   # already in the grid: not twice
    jobs = grid_jobs(["sap"], [0.2], {"sr": [2, 3]}, extra_configs=[("sap", 0.2, [4, 5])])
    assert ("sap", 0.2, "4-5", (4, 5)) in jobs
