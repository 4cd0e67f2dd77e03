"""Retrieval metrics over TREC-style dicts (docs/method.md §5): nDCG@k, recall@k, MRR@k.

``qrels = {qid: {pid: rel}}`` and ``run = {qid: {pid: score}}``. Ranking is by
score descending, ties broken by page id **ascending** (deterministic).
nDCG is TREC-style: gain = relevance (values <= 0 give no gain), discount
``log2(rank + 1)``, the ideal ranking built from the qrels. A page is relevant
when ``rel > 0``.

Which queries are averaged: every query of ``qrels``. A query missing from the
run scores 0 (as ``trec_eval -c``); a query with no relevant page scores 0 (as
``pytrec_eval``). Queries only in the run are ignored.

Note: ``trec_eval``/``pytrec_eval`` break score ties by document id
*descending*; results agree with them whenever a run has no tied scores.

Examples
--------
>>> qrels = {"q1": {"p2": 1}}
>>> run = {"q1": {"p1": 0.9, "p2": 0.8, "p3": 0.1}}
>>> ev = evaluate_run(qrels, run, ks=(1, 5))
>>> ev["mean"]["recall@1"], ev["mean"]["recall@5"], ev["mean"]["mrr@5"]
(0.0, 1.0, 0.5)
>>> round(ev["mean"]["ndcg@5"], 4)   # 1 / log2(3)
0.6309
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Mapping, Sequence

import torch

log = logging.getLogger(__name__)

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    return ks


def ranking(scores: Mapping[str, float], depth: int | None = None) -> list[str]:
    """Page ids by score descending, ties by page id ascending; the first ``depth`` only.

    >>> ranking({"b": 1.0, "a": 1.0, "c": 2.0})
    ['c', 'a', 'b']
    """
    for pid, s in scores.items():
        if isinstance(s, float) and math.isnan(s):
            raise ValueError(f"score of page {pid!r} is NaN; a run cannot be ranked with NaN scores")
    key = lambda item: (-item[1], item[0])  # noqa: E731
    items = scores.items()
    if depth is not None and depth < len(scores):
        return [pid for pid, _ in heapq.nsmallest(depth, items, key=key)]
    return [pid for pid, _ in sorted(items, key=key)]


def ndcg_at_k(rels: Mapping[str, int], ranked: Sequence[str], k: int) -> float:
    """TREC-style nDCG@k of a ranked list of page ids.

    >>> round(ndcg_at_k({"a": 2, "b": 1}, ["b", "a"], 2), 6)   # (1 + 2/log2 3) / (2 + 1/log2 3)
    0.859719
    """
    dcg = sum(max(rels.get(pid, 0), 0) / math.log2(r + 2) for r, pid in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(rels: Mapping[str, int], ranked: Sequence[str], k: int) -> float:
    """Fraction of the relevant pages (rel > 0) found in the top k.

    >>> recall_at_k({"a": 1, "b": 1, "c": 0}, ["c", "a", "x"], 2)
    0.5
    """
    relevant = sum(1 for r in rels.values() if r > 0)
    if relevant == 0:
        return 0.0
    return sum(1 for pid in ranked[:k] if rels.get(pid, 0) > 0) / relevant


def mrr_at_k(rels: Mapping[str, int], ranked: Sequence[str], k: int) -> float:
    """Reciprocal rank of the first relevant page within the top k (0 if none).

    >>> mrr_at_k({"a": 1}, ["x", "y", "a"], 3), mrr_at_k({"a": 1}, ["x", "y", "a"], 2)
    (0.3333333333333333, 0.0)
    """
    for r, pid in enumerate(ranked[:k]):
        if rels.get(pid, 0) > 0:
            return 1.0 / (r + 1)
    return 0.0


def metric_names(ks: Sequence[int]) -> list[str]:
    """``['ndcg@1', ..., 'recall@1', ..., 'mrr@1', ...]`` for the given cut-offs."""
    ks = _check_ks(ks)
    return [f"{m}@{k}" for m in ("ndcg", "recall", "mrr") for k in ks]


def evaluate_run(qrels: Qrels, run: Run, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """nDCG@k, recall@k and MRR@k per query and their means.

    Returns ``{"per_query": {qid: {"ndcg@5": ..., ...}}, "mean": {"ndcg@5": ...},
    "num_queries": n, "missing_from_run": [qids]}``.
    """
    ks = _check_ks(ks)
    if not qrels:
        raise ValueError("qrels is empty: there is nothing to evaluate")
    depth = max(ks)
    names = metric_names(ks)
    per_query: dict[str, dict[str, float]] = {}
    missing = []
    for qid in sorted(qrels):
        rels = qrels[qid]
        if qid not in run:
            missing.append(qid)
        ranked = ranking(run.get(qid, {}), depth)
        row = {}
        for k in ks:
            row[f"ndcg@{k}"] = ndcg_at_k(rels, ranked, k)
            row[f"recall@{k}"] = recall_at_k(rels, ranked, k)
            row[f"mrr@{k}"] = mrr_at_k(rels, ranked, k)
        per_query[qid] = {n: row[n] for n in names}
    if missing:
        log.warning("%d queries of the qrels are missing from the run and score 0 (e.g. %r)",
                    len(missing), missing[0])
    n = len(per_query)
    mean = {name: math.fsum(v[name] for v in per_query.values()) / n for name in names}
    return {"per_query": per_query, "mean": mean, "num_queries": n, "missing_from_run": missing}


def run_from_scores(
    scores: torch.Tensor,            # [Q, P]
    query_ids: Sequence[str],
    page_ids: Sequence[str],
    top: int | None = None,
) -> dict[str, dict[str, float]]:
    """A TREC-style run from a score matrix; ``top`` keeps each query's best ``top`` pages.

    >>> import torch
    >>> run_from_scores(torch.tensor([[0.1, 0.5, 0.5]]), ["q"], ["a", "b", "c"], top=2)
    {'q': {'b': 0.5, 'c': 0.5}}
    """
    if scores.ndim != 2 or scores.shape != (len(query_ids), len(page_ids)):
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected [{len(query_ids)}, {len(page_ids)}] "
                         "(queries x pages)")
    if len(set(page_ids)) != len(page_ids):
        dupes = sorted({p for p in page_ids if page_ids.count(p) > 1})[:3]
        raise ValueError(f"page ids must be unique, repeated: {dupes}")
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if torch.isnan(scores).any():
        q, p = (int(x) for x in torch.nonzero(torch.isnan(scores))[0])
        raise ValueError(f"score of query {query_ids[q]!r} for page {page_ids[p]!r} is NaN")
    rows = scores.detach().to(torch.float64).cpu().tolist()
    run: dict[str, dict[str, float]] = {}
    for qid, row in zip(query_ids, rows, strict=True):
        pairs = dict(zip(page_ids, row, strict=True))
        if top is not None and top < len(pairs):
            pairs = {pid: pairs[pid] for pid in ranking(pairs, top)}
        run[qid] = pairs
    return run
