"""The per-dataset protocol (docs/method.md §5): each source's queries ranked on its own pages, macro average."""

from __future__ import annotations

import math

import pytest
import torch

from anchorprune.evaluation.grid import evaluate_grid
from anchorprune.evaluation.sources import macro_average, per_source_keys, source_groups
from anchorprune.features import PageFeatures
from anchorprune.features.encoding import EncodedCorpus


def _unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def _page(pid: str, vecs: list[torch.Tensor]) -> PageFeatures:
    n = len(vecs)
    return PageFeatures(pid, f"h-{pid}", torch.stack(vecs), torch.rand(2, n), torch.rand(2, n),
                        torch.arange(n), (0, 1), 2)


def two_sources():
    """Source x: queries qx0, qx1 with gold pages x0, x1; source y: query qy0 with gold page y0.

    Page y_trap matches qx0 and qx1 exactly (score 1) and beats their own gold pages (score ~0.8):
    ranked against every page, x's queries would put it first; per source it is never a candidate.
    """
    e = [_unit(*row) for row in torch.eye(4).tolist()]
    near0, near1 = _unit(1, 0.75, 0, 0), _unit(0, 1, 0.75, 0)
    pages = {
        "x0": _page("x0", [near0, e[3]]), "x1": _page("x1", [near1, e[3]]),
        "y0": _page("y0", [e[2], e[3]]), "y_trap": _page("y_trap", [e[0], e[1]]),
    }
    queries = {"qx0": e[0][None], "qx1": e[1][None], "qy0": e[2][None]}
    corpus = EncodedCorpus("toy", 2, pages, queries)
    qrels = {"qx0": {"x0": 1}, "qx1": {"x1": 1}, "qy0": {"y0": 1}}
    qsrc = {"qx0": "x", "qx1": "x", "qy0": "y"}
    psrc = {"x0": "x", "x1": "x", "y0": "y", "y_trap": "y"}
    return corpus, qrels, qsrc, psrc


def test_groups_hold_only_their_own_pages():
    corpus, _, qsrc, psrc = two_sources()
    groups = source_groups(list(qsrc), corpus.page_ids, qsrc, psrc)
    assert [(g.name, g.qids, g.pids) for g in groups] == [
        ("x", ("qx0", "qx1"), ("x0", "x1")), ("y", ("qy0",), ("y0", "y_trap"))]
    for g in groups:
        assert {psrc[p] for p in g.pids} == {g.name} == {qsrc[q] for q in g.qids}


def test_a_query_never_ranks_another_sources_pages():
    corpus, qrels, qsrc, psrc = two_sources()
    union = evaluate_grid(corpus, qrels, list(qrels), [], [0.5], {}, progress=False)
    per_source = evaluate_grid(corpus, qrels, list(qrels), [], [0.5], {}, progress=False,
                               query_sources=qsrc, page_sources=psrc)
    # one corpus: y_trap outranks x0 and x1 for both x queries (recall@1 of x is 0, y's is 1)
    assert union.full.metrics["recall@1"] == pytest.approx(1 / 3)
    assert union.sources == [] and union.full.extra == {}
    # per source: the trap is not a candidate for x's queries; every query finds its page first
    assert per_source.full.metrics["recall@1"] == 1.0 and per_source.sources == ["x", "y"]
    assert per_source.full.extra["per_source/x/recall_at_1"] == 1.0
    assert per_source.num_queries == 3 and per_source.num_pages == 4


def test_metrics_are_macro_averaged_over_sources():
    """Source x (2 queries) and y (1 query) weigh the same: macro is not the mean over the 3 queries."""
    corpus, qrels, qsrc, psrc = two_sources()
    qrels = {**qrels, "qx1": {"x0": 1}}            # qx1's gold is now x0, which it ranks second
    r = evaluate_grid(corpus, qrels, list(qrels), [], [0.5], {}, progress=False, query_sources=qsrc,
                      page_sources=psrc)
    x, y = r.full.extra["per_source/x/mrr_at_10"], r.full.extra["per_source/y/mrr_at_10"]
    assert (x, y) == (pytest.approx(0.75), 1.0)      # x: (1 + 1/2) / 2
    assert r.full.metrics["mrr@10"] == pytest.approx((x + y) / 2) != pytest.approx((1 + 0.5 + 1) / 3)


def test_retention_is_of_the_macro_ndcg_and_reported_per_source():
    corpus, qrels, qsrc, psrc = two_sources()
    r = evaluate_grid(corpus, qrels, list(qrels), ["random"], [0.5], {}, random_trials=3, progress=False,
                      query_sources=qsrc, page_sources=psrc)
    (cfg,) = r.configs
    px, py = cfg.extra["per_source/x/ndcg_at_5"], cfg.extra["per_source/y/ndcg_at_5"]
    fx, fy = r.full.extra["per_source/x/ndcg_at_5"], r.full.extra["per_source/y/ndcg_at_5"]
    assert cfg.metrics["ndcg@5"] == pytest.approx((px + py) / 2)
    assert cfg.ndcg_retention == pytest.approx(((px + py) / 2) / ((fx + fy) / 2))
    assert cfg.extra["per_source/x/ndcg_retention"] == pytest.approx(px / fx)
    assert "ndcg@5_std" in cfg.metrics                   # random's trials still give a std


def test_one_source_is_the_old_protocol():
    corpus, qrels, _, _ = two_sources()
    plain = evaluate_grid(corpus, qrels, list(qrels), ["random"], [0.5], {}, random_trials=2, progress=False)
    one = {q: "s" for q in qrels}, {p: "s" for p in corpus.page_ids}
    same = evaluate_grid(corpus, qrels, list(qrels), ["random"], [0.5], {}, random_trials=2, progress=False,
                         query_sources=one[0], page_sources=one[1])
    assert same.rows() == plain.rows() and same.sources == []


def test_missing_sources_are_named():
    with pytest.raises(ValueError, match="query 'q2' has no source"):
        source_groups(["q1", "q2"], ["a"], {"q1": "x"}, {"a": "x"})
    with pytest.raises(ValueError, match="page 'b' has no source"):
        source_groups(["q1"], ["a", "b"], {"q1": "x"}, {"a": "x"})
    with pytest.raises(ValueError, match="source 'y' has queries but no page"):
        source_groups(["q1", "q2"], ["a"], {"q1": "x", "q2": "y"}, {"a": "x"})


def test_sources_without_evaluation_queries_are_left_out():
    groups = source_groups(["q1"], ["a", "b"], {"q1": "x", "q9": "y"}, {"a": "x", "b": "y"})
    assert [g.name for g in groups] == ["x"]


def test_macro_average_refuses_mismatched_metrics():
    with pytest.raises(ValueError, match="different metrics"):
        macro_average({"x": {"a": 1.0}, "y": {"b": 1.0}})
    with pytest.raises(ValueError, match="no source"):
        macro_average({})
    assert math.isclose(macro_average({"x": {"a": 0.2}})["a"], 0.2)
    assert "@" not in "".join(per_source_keys({"s": {"ndcg@5": 1.0}}))
