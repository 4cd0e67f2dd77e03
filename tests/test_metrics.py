"""Retrieval metrics: hand cases, tie-breaking, and a pytrec_eval cross-check on random runs."""

from __future__ import annotations

import math
import random

import pytest
import pytrec_eval
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.evaluation.metrics import (
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    ranking,
    recall_at_k,
    run_from_scores,
)


def test_hand_computed_graded_case():
    rels = {"a": 2, "b": 1, "c": 0}
    ranked = ["c", "b", "x", "a"]
    # DCG@4 = 0 + 1/log2(3) + 0 + 2/log2(5); IDCG@4 = 2 + 1/log2(3)
    expected = (1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(rels, ranked, 4) == pytest.approx(expected)
    assert ndcg_at_k(rels, ranked, 1) == 0.0
    assert recall_at_k(rels, ranked, 2) == 0.5
    assert recall_at_k(rels, ranked, 4) == 1.0
    assert mrr_at_k(rels, ranked, 10) == 0.5
    assert mrr_at_k(rels, ranked, 1) == 0.0


def test_ties_broken_by_page_id_ascending():
    qrels = {"q": {"p2": 1}}
    run = {"q": {"p3": 1.0, "p2": 1.0, "p1": 1.0}}
    assert ranking(run["q"]) == ["p1", "p2", "p3"]
    ev = evaluate_run(qrels, run, ks=(1, 2))
    assert ev["per_query"]["q"]["mrr@2"] == 0.5
    assert ev["per_query"]["q"]["recall@1"] == 0.0


def test_query_without_relevant_pages_and_missing_queries_score_zero():
    qrels = {"q1": {"a": 1}, "q2": {"a": 0}, "q3": {"b": 1}}
    run = {"q1": {"a": 1.0, "b": 0.0}, "q2": {"a": 1.0}}
    ev = evaluate_run(qrels, run, ks=(5,))
    assert ev["per_query"]["q1"]["ndcg@5"] == 1.0
    assert ev["per_query"]["q2"] == {"ndcg@5": 0.0, "recall@5": 0.0, "mrr@5": 0.0}
    assert ev["per_query"]["q3"]["ndcg@5"] == 0.0
    assert ev["missing_from_run"] == ["q3"]
    assert ev["mean"]["ndcg@5"] == pytest.approx(1 / 3)
    assert ev["num_queries"] == 3


def test_nan_score_and_bad_cutoffs_raise():
    with pytest.raises(ValueError, match="page 'b'.*NaN"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0, "b": float("nan")}})
    with pytest.raises(ValueError, match="cut-offs"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, ks=(0,))
    with pytest.raises(ValueError, match="NaN"):
        run_from_scores(torch.tensor([[float("nan")]]), ["q"], ["p"])
    with pytest.raises(ValueError, match="expected"):
        run_from_scores(torch.zeros(2, 3), ["q"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        run_from_scores(torch.zeros(1, 2), ["q"], ["a", "a"])


def test_run_from_scores_top_keeps_best_with_tie_rule():
    scores = torch.tensor([[0.3, 0.9, 0.3, 0.1], [1.0, 0.0, 0.0, 0.0]])
    run = run_from_scores(scores, ["q1", "q2"], ["d", "c", "b", "a"], top=2)
    assert run["q1"] == {"c": pytest.approx(0.9), "b": pytest.approx(0.3)}
    assert list(run["q2"]) == ["d", "a"]   # ties on 0.0 -> 'a' first
    full = run_from_scores(scores, ["q1", "q2"], ["d", "c", "b", "a"])
    assert len(full["q1"]) == 4


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 100_000), graded=st.booleans())
def test_matches_pytrec_eval_on_random_runs(seed, graded):
    rng = random.Random(seed)
    pages = [f"p{i:03d}" for i in range(rng.randint(3, 40))]
    qrels, run = {}, {}
    for q in range(rng.randint(1, 8)):
        qid = f"q{q}"
        judged = rng.sample(pages, rng.randint(1, min(6, len(pages))))
        qrels[qid] = {p: (rng.randint(0, 3) if graded else rng.randint(0, 1)) for p in judged}
        # distinct scores: trec_eval breaks ties the other way round (page id descending)
        scores = rng.sample(range(10 * len(pages)), len(pages))
        run[qid] = {p: float(s) / 7.0 for p, s in zip(pages, scores, strict=True)}
    ks = (1, 3, 5, 10)
    ours = evaluate_run(qrels, run, ks=ks)
    measures = {"ndcg_cut." + ",".join(map(str, ks)), "recall." + ",".join(map(str, ks))}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for qid in qrels:
        for k in ks:
            assert ours["per_query"][qid][f"ndcg@{k}"] == pytest.approx(ref[qid][f"ndcg_cut_{k}"], abs=1e-6)
            assert ours["per_query"][qid][f"recall@{k}"] == pytest.approx(ref[qid][f"recall_{k}"], abs=1e-6)
        # MRR@k: recip_rank of the run cut to its top k
        for k in ks:
            top = {p: run[qid][p] for p in ranking(run[qid], k)}
            rr = pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate({qid: top})
            assert ours["per_query"][qid][f"mrr@{k}"] == pytest.approx(rr[qid]["recip_rank"], abs=1e-6)
    for name, value in ours["mean"].items():
        assert value == pytest.approx(sum(v[name] for v in ours["per_query"].values()) / len(qrels))
