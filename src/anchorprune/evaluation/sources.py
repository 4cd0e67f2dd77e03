"""The per-dataset protocol (docs/method.md §5): rank each source's queries against its own pages, then macro-average.

A dataset folder may hold several evaluation datasets (a ``source`` column, e.g. one per
ViDoRe set). Evaluation then scores every source on its own: a query's candidates are the
pages of its source only, metrics are averaged over that source's queries, and the headline
figure is the macro average over sources (each source weighs the same, whatever its number
of queries). Without sources the whole folder is one source: the old protocol, unchanged.

Examples
--------
>>> groups = source_groups(["q1", "q2", "q3"], ["a", "b", "c"],
...                        {"q1": "x", "q2": "y", "q3": "x"}, {"a": "x", "b": "y", "c": "x"})
>>> [(g.name, g.qids, g.pids) for g in groups]
[('x', ('q1', 'q3'), ('a', 'c')), ('y', ('q2',), ('b',))]
>>> macro_average({"x": {"ndcg@5": 1.0}, "y": {"ndcg@5": 0.5}})
{'ndcg@5': 0.75}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALL = "all"   # the name of the single group when a dataset has no sources


@dataclass(frozen=True)
class SourceGroup:
    """One evaluation dataset: its queries and the only pages they are ranked against."""

    name: str
    qids: tuple[str, ...]
    pids: tuple[str, ...]


def source_groups(
    qids: Sequence[str],
    pids: Sequence[str],
    query_sources: Mapping[str, str] | None = None,
    page_sources: Mapping[str, str] | None = None,
) -> list[SourceGroup]:
    """Split queries and pages by source, keeping the given orders; sources without a query are left out.

    With no sources at all, one group ``"all"`` holds every query and page. Raises ``ValueError``
    naming the query or page without a source, or the source whose queries have no page.

    >>> [(g.name, len(g.qids), len(g.pids)) for g in source_groups(["q"], ["a", "b"])]
    [('all', 1, 2)]
    """
    if not query_sources and not page_sources:
        return [SourceGroup(ALL, tuple(qids), tuple(pids))]
    query_sources, page_sources = query_sources or {}, page_sources or {}
    no_src = [q for q in qids if q not in query_sources]
    if no_src:
        raise ValueError(f"query {no_src[0]!r} has no source ({len(no_src)} such): the dataset's queries.parquet "
                         "needs a source for every query; rebuild the dataset")
    no_src = [p for p in pids if p not in page_sources]
    if no_src:
        raise ValueError(f"page {no_src[0]!r} has no source ({len(no_src)} such): the dataset's corpus.parquet "
                         "needs a source for every page; rebuild the dataset")
    pages: dict[str, list[str]] = {}
    for p in pids:
        pages.setdefault(page_sources[p], []).append(p)
    queries: dict[str, list[str]] = {}
    for q in qids:
        queries.setdefault(query_sources[q], []).append(q)
    empty = [s for s in queries if s not in pages]
    if empty:
        raise ValueError(f"source {empty[0]!r} has queries but no page to rank them against; rebuild the dataset "
                         "with that source's corpus")
    order = list(pages) + [s for s in queries if s not in pages]
    return [SourceGroup(s, tuple(queries[s]), tuple(pages[s])) for s in order if s in queries]


def macro_average(per_source: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean over sources of each metric (every source weighs the same).

    >>> macro_average({"x": {"a": 1.0, "b": 0.0}, "y": {"a": 0.0, "b": 1.0}, "z": {"a": 0.5, "b": 0.5}})
    {'a': 0.5, 'b': 0.5}
    """
    if not per_source:
        raise ValueError("no source to average over")
    keys = [set(m) for m in per_source.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"sources report different metrics: {sorted(set.union(*keys) - set.intersection(*keys))}")
    n = len(per_source)
    return {k: math.fsum(m[k] for m in per_source.values()) / n for k in next(iter(per_source.values()))}


def per_source_keys(per_source: Mapping[str, Mapping[str, float]], prefix: str = "per_source") -> dict[str, float]:
    """Flat keys for reports and MLflow: ``per_source/<source>/ndcg_at_5`` (no ``@``, so never a headline metric).

    >>> per_source_keys({"esg": {"ndcg@5": 0.5}})
    {'per_source/esg/ndcg_at_5': 0.5}
    """
    return {f"{prefix}/{s}/{k.replace('@', '_at_')}": v for s, m in per_source.items() for k, v in m.items()}
