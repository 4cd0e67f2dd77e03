"""The first-stage policy of :mod:`anchorprune.index.facade`, one rule for both backends: every test runs on
the local backend and on the Elasticsearch backend over the strict double (``make_index``), and on a live
cluster when ``ELASTICSEARCH_URL`` is set.

- A version built without the asked stage's vectors answers with its own first stage (muvera / token_ivf),
  else with the mean vector.
- Search is exact only when the stage resolves to ``none`` (configured, or ``auto`` below its threshold) or
  the candidates cover every page; a configured first stage is used on a small corpus too.
"""

from __future__ import annotations

import logging

import index_fixtures
import pytest
from index_helpers import brute_maxsim, make_pages, planted_query

from anchorprune.index.facade import fallback_stage, plan_search

make_index = index_fixtures.make_index        # the shared fixture (see index_fixtures.py)

PARAMS = {"muvera": {"k_sim": 3, "d_proj": 8, "reps": 4, "seed": 7},
          "token_ivf": {"centroids": 8, "nprobe": 2, "seed": 7}, "mean": None}


@pytest.mark.parametrize(("built", "asked", "answers"), [
    ("muvera", "token_ivf", "muvera"), ("token_ivf", "muvera", "token_ivf"),
    ("mean", "token_ivf", "mean"), ("mean", "muvera", "mean")])
def test_a_version_without_the_asked_stage_answers_with_its_own(make_index, caplog, built, asked, answers):
    pages = make_pages(n=30, seed=4)
    idx = make_index("float32", candidates=6, first_stage=built, first_stage_params=PARAMS[built])
    idx.swap(idx.build(pages, {}))
    other = make_index("float32", candidates=6, first_stage=asked, first_stage_params=PARAMS[asked], reopen=idx)
    q = planted_query(pages[11], m=3)
    with caplog.at_level(logging.WARNING):
        hits, report = other.search_report([q], k=3)
    assert (report.first_stage, report.configured, report.candidates) == (answers, asked, 6)
    assert f"first stage {asked!r} asked for, but the serving v1 was built without" in caplog.text
    assert f"using {answers}" in caplog.text
    assert hits[0][0].page_id == "p011"
    assert hits[0][0].score == pytest.approx(brute_maxsim(q, pages[11].vectors), abs=1e-4)


@pytest.mark.parametrize("stage", ["mean", "muvera", "token_ivf"])
def test_a_configured_first_stage_answers_on_a_small_corpus(make_index, stage):
    pages = make_pages(n=20, seed=5)
    idx = make_index("float32", candidates=5, first_stage=stage, first_stage_params=PARAMS[stage])
    idx.swap(idx.build(pages, {}))
    _, report = idx.search_report([planted_query(pages[2])], k=3)
    assert (report.first_stage, report.candidates, report.pages) == (stage, 5, 20)


def test_search_is_exact_when_the_candidates_cover_every_page(make_index):
    pages = make_pages(n=8, seed=6)
    idx = make_index("float32", candidates=8, first_stage="mean")
    idx.swap(idx.build(pages, {}))
    _, report = idx.search_report([planted_query(pages[2])], k=3)
    assert (report.first_stage, report.candidates, report.configured) == ("none", 8, "mean")


@pytest.mark.parametrize(("threshold", "used"), [(9, "mean"), (10, "none")])
def test_auto_decides_exact_search_by_its_threshold(make_index, threshold, used):
    pages = make_pages(n=9, seed=7)
    idx = make_index("float32", candidates=3, first_stage="auto", first_stage_auto="mean",
                     first_stage_threshold=threshold)
    idx.swap(idx.build(pages, {}))
    _, report = idx.search_report([planted_query(pages[2])], k=2)
    assert (report.first_stage, report.candidates) == (used, 3 if used == "mean" else 9)


def test_a_search_for_more_hits_than_candidates_returns_k_hits(make_index):
    pages = make_pages(n=12, seed=8)
    idx = make_index("float32", candidates=3, first_stage="mean")
    idx.swap(idx.build(pages, {}))
    hits, report = idx.search_report([planted_query(pages[2])], k=5)
    assert report.candidates == 5 and len(hits[0]) == 5


def test_the_rules_as_functions():
    assert [fallback_stage(a, b) for a, b in [("token_ivf", "muvera"), ("muvera", None), ("mean", "muvera")]] == [
        "muvera", "mean", "mean"]
    assert plan_search("mean", 100, "mean", 10, 100).stage == "none"
    assert plan_search("mean", 100, "mean", 10, 99).stage == "mean"
    assert plan_search("auto", 100, "token_ivf", 10, 5, threshold=101).stage == "none"
    with pytest.raises(ValueError, match="k must be >= 1"):
        plan_search("mean", 100, "mean", 0, 5)
