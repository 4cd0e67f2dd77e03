"""First-stage calibration: the cheapest token_ivf ``(nprobe, candidates)`` that reaches a recall target.

Fixed search settings cannot promise a recall: token_ivf at nprobe 8 kept recall@10 >= 0.99 at 200
candidates on the Debian-derived 100k corpus, but 0.943 on the docstrings corpus
(``benchmarks/results/first_stage*.json``). So a build calibrates the version it wrote, and search uses
what it chose (unless ``params.yaml`` pins ``index.candidates`` / ``index.token_ivf.nprobe``).

**Sample** (``source``). ``queries``: real held-out query matrices the caller gives (a :class:`QuerySample`
says where they come from; the index stage gives the dataset's calibration split); ``pseudo``: ``queries``
*pseudo-queries*; ``auto`` (the index's default): the given queries when there are any, else pseudo-queries
(``queries = 0``: none); ``none``: no calibration. A pseudo-query takes a seeded uniform page, ``m`` of its
token vectors (``m`` uniform in ``query_tokens``, at most the page's length) and perturbs every token with
Gaussian noise of relative size ``noise`` (``t + noise * |t| * g / sqrt(d)``, ``g ~ N(0, I)``, rescaled to
``|t|``), so its source page does not win by construction. Ground truth is **exact MaxSim of the pseudo-query over every page of the version**
(its exact top ``k``), never "did the source page come back": a pseudo-query is scored exactly like a
real one.

**Recall.** For every ``nprobe`` of the grid the approximate scores are computed once
(:meth:`TokenIvf.approximate_scores`, what search runs), and for every ``candidates`` of the grid the
candidate set is picked the way search picks it (the same ``argpartition``); since candidates are
rescored exactly, the returned top ``k`` is the exact top ``k`` among them. Two recalls per query:

- *plain*: ``|returned top k ∩ exact top k| / k`` (ties in the exact ranking broken by page id, as search);
- *tie-aware*: the returned pages whose exact score is at least the ``k``-th exact score (within a relative
  ``TIE_RTOL``) count as hits -- ann-benchmarks' epsilon recall with epsilon ~ 0. A page that ties the
  10th is as good an answer as the one the tie-break picked.

**Cost model.** A proxy, not a timing (deterministic, and the CPU may be shared while building):
token vectors read per query = centroid scores (``m * K``) + the probed inverted lists' tokens
(summed over query tokens, measured on the sample) + ``candidates * mean tokens per page`` (exact
rescoring). Both halves read a float vector per row and dominate measured latency
(``benchmarks/results/first_stage_calibrated*.json`` compares the proxy with p50).

**Margin.** A setting qualifies when the one-sided 95% lower confidence bound of its mean recall
(:func:`lower_bound`: ``mean - 1.645 * sd / sqrt(n)``, per-query recall as the unit, so a query's ``k`` slots do
not count as independent; and never above the Wilson bound over the ``n * k`` slots, so a small all-perfect
sample cannot certify a high target) reaches the target; the cheapest qualifying setting wins (ties: fewer candidates). When
none qualifies the version answers exactly (candidates = every page) and the record says
``met: false``.

Examples
--------
>>> tie_aware_recall(np.array([3.0, 2.0, 2.0, 1.0]), returned=[0, 2], k=2)   # page 2 ties the 2nd best
1.0
>>> plain_recall(np.array([3.0, 2.0, 2.0, 1.0]), returned=[0, 2], k=2)       # the tie-break picked page 1
0.5
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from anchorprune.evaluation.scoring import score_packed
from anchorprune.index.base import IndexInputError
from anchorprune.index.token_ivf import RowReader, TokenIvf
from anchorprune.limits import target_recall_problem

log = logging.getLogger(__name__)

#: nprobe values tried (those above the version's centroid count are dropped)
NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
#: candidates tried (those at or above the page count are dropped: that is exact search)
CANDIDATE_GRID = (10, 20, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10000)
#: one-sided 95% normal quantile of the lower confidence bound
Z_95 = 1.645
#: a returned page whose exact score is within this relative distance of the k-th exact score ties it
TIE_RTOL = 1e-5
#: page vectors decoded at once when computing the exact ground truth
_EXACT_CHUNK_TOKENS = 1 << 18


def check_target_recall(target: float) -> float:
    """``target`` if it is a recall in (0, 1], else :class:`IndexInputError` naming it.

    >>> check_target_recall(0.99)
    0.99
    """
    problem = target_recall_problem(target)
    if problem:
        raise IndexInputError(problem)
    return float(target)


#: the sample sources a build knows (``index.calibration.source``; see the module docstring)
SOURCES = ("none", "queries", "pseudo", "auto")


@dataclass(frozen=True)
class CalibrationParams:
    """How a build calibrates its first stage (``index.target_recall`` and ``index.calibration``).

    ``source`` ``auto`` with ``queries`` > 0 is what a :class:`~anchorprune.index.local.LocalIndex` built
    without a calibration config has always done: held-out queries when it is given some, else pseudo-queries.
    """

    target_recall: float = 0.99
    queries: int = 200                            # pseudo sample size (0: none; with given queries: unused)
    source: str = "auto"                          # none | queries (given ones, required) | pseudo | auto
    query_tokens: tuple[int, int] = (4, 16)       # pseudo-query length, uniform in [lo, hi]
    noise: float = 0.5                            # relative Gaussian noise on each pseudo-query token
    k: int = 10                                   # recall@k
    recall: str = "tie_aware"                     # the recall the target is met on: tie_aware | plain
    seed: int = 0

    def __post_init__(self) -> None:
        check_target_recall(self.target_recall)
        if self.source not in SOURCES:
            raise IndexInputError(f"calibration source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.recall not in ("tie_aware", "plain"):
            raise IndexInputError(f"calibration recall must be 'tie_aware' or 'plain', got {self.recall!r}")
        lo, hi = self.query_tokens
        if self.queries < 0 or self.k < 1 or not 1 <= lo <= hi or self.noise < 0:
            raise IndexInputError(f"calibration needs queries >= 0, k >= 1, 1 <= query_tokens[0] <= query_tokens[1] "
                                  f"and noise >= 0; got queries={self.queries}, k={self.k}, "
                                  f"query_tokens={list(self.query_tokens)}, noise={self.noise}")

    def sample_kind(self, given: bool) -> str | None:
        """The sample a build measures: ``queries`` or ``pseudo``, or None (no calibration); raises
        :class:`IndexInputError` for ``source: queries`` without given queries.

        >>> CalibrationParams().sample_kind(False), CalibrationParams().sample_kind(True)
        ('pseudo', 'queries')
        >>> CalibrationParams(queries=0).sample_kind(False), CalibrationParams(source="none").sample_kind(True)
        (None, None)
        """
        if self.source == "none":
            return None
        if self.source == "queries" and not given:
            raise IndexInputError(
                "index.calibration.source is 'queries' but this build was given no query matrices: build through "
                "the index stage (`anchorprune index build` encodes the dataset's calibration split), pass "
                "calibration_queries=..., or set index.calibration.source to auto, pseudo or none")
        if given and self.source != "pseudo":
            return "queries"
        return "pseudo" if self.queries > 0 else None

    @classmethod
    def of(cls, params: dict[str, Any] | None) -> CalibrationParams:
        p = dict(params or {})
        if "query_tokens" in p:
            p["query_tokens"] = tuple(p["query_tokens"])
        return cls(**{k: v for k, v in p.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class QuerySample:
    """Held-out query matrices ``[m_i, d]`` for a calibration, and what they are (``about``: recorded in the
    manifest's ``sample``, e.g. which dataset split they come from). No ``queries``: none to give (``source``
    ``auto`` measures pseudo-queries and records ``about``, e.g. why)."""

    queries: Sequence[Any]
    about: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- recall
def _kth(exact: np.ndarray, k: int) -> float:
    k = min(k, exact.shape[0])
    return float(np.partition(exact, exact.shape[0] - k)[exact.shape[0] - k])


def exact_top(exact: np.ndarray, k: int) -> np.ndarray:
    """The exact top ``k`` page positions of ``exact [P]``: score descending, ties by position (as search ties
    by page id when ids sort like positions)."""
    order = np.lexsort((np.arange(exact.shape[0]), -exact))
    return order[:k]


def plain_recall(exact: np.ndarray, returned: Sequence[int], k: int) -> float:
    """``|returned ∩ exact top k| / k`` for the exact scores ``exact [P]``."""
    return len(set(int(r) for r in returned[:k]) & set(exact_top(exact, k).tolist())) / min(k, exact.shape[0])


def tie_aware_recall(exact: np.ndarray, returned: Sequence[int], k: int, rtol: float = TIE_RTOL) -> float:
    """The share of the ``k`` returned pages whose exact score reaches the ``k``-th exact score (within ``rtol``)."""
    kth = _kth(exact, k)
    floor = kth - rtol * max(abs(kth), 1e-12)
    return sum(1 for r in returned[:k] if exact[int(r)] >= floor) / min(k, exact.shape[0])


def tie_aware_recall_scores(returned_scores: Sequence[float], exact_kth: float, k: int,
                            rtol: float = TIE_RTOL) -> float:
    """Tie-aware recall from the scores a search returned and the ``k``-th exact score (benchmarks)."""
    floor = exact_kth - rtol * max(abs(exact_kth), 1e-12)
    return sum(1 for s in list(returned_scores)[:k] if s >= floor) / k


def lower_bound(recalls: np.ndarray, slots: int = 1, z: float = Z_95) -> float:
    """One-sided lower confidence bound of the mean of per-query recalls ``[n]`` (recall@``slots``): the lower
    of ``mean - z * sd / sqrt(n)`` (per-query recall as the unit) and the Wilson score bound of the mean as a
    proportion of ``n * slots`` returned slots.

    The normal bound alone reads 1.0 for any sample where every query got its full top ``k`` (sd 0), so 10
    perfect queries would certify 0.99. The Wilson bound caps what ``n`` queries can show: all perfect, it is
    ``1 / (1 + z^2 / (n k))``, 0.974 at 10 queries of recall@10 and 0.991 from 30 -- the sample size
    ``index.calibration.min_queries`` asks for. The per-query bound binds when the misses cluster in a few
    queries (slots are then not independent).

    >>> round(lower_bound(np.array([1.0, 1.0, 0.9, 1.0]), slots=10), 4)     # 4 queries: the slot cap binds
    0.8954
    >>> round(lower_bound(np.array([1.0, 1.0, 0.6, 1.0] * 25), slots=10), 4)  # misses clustered in queries:
    0.8714
    >>> round(lower_bound(np.ones(10), slots=10), 4), round(lower_bound(np.ones(30), slots=10), 4)
    (0.9737, 0.9911)
    """
    n = recalls.shape[0]
    if n == 0:
        return 0.0
    p = float(recalls.mean())
    m = n * slots
    wilson = (p + z * z / (2 * m) - z * math.sqrt(max(p * (1 - p), 0.0) / m + z * z / (4 * m * m))) / (1 + z * z / m)
    if n < 2:
        return min(p, wilson)
    return min(float(p - z * recalls.std(ddof=1) / math.sqrt(n)), wilson)


# ---------------------------------------------------------------- sample and ground truth
def pseudo_queries(vectors: RowReader, offsets: np.ndarray, params: CalibrationParams) -> list[np.ndarray]:
    """``params.queries`` pseudo-queries ``[m_i, d]`` float32 (see the module docstring), seeded."""
    rng = np.random.default_rng(params.seed)
    n_pages = offsets.shape[0] - 1
    lo, hi = params.query_tokens
    out = []
    for p in rng.integers(0, n_pages, params.queries):
        a, b = int(offsets[p]), int(offsets[p + 1])
        m = min(int(rng.integers(lo, hi + 1)), b - a)
        rows = np.sort(a + rng.choice(b - a, m, replace=False))
        t = np.asarray(vectors(rows), dtype=np.float32)                                  # [m, d]
        norm = np.linalg.norm(t, axis=1, keepdims=True)                                   # [m, 1]
        g = rng.standard_normal(t.shape).astype(np.float32) / np.float32(math.sqrt(t.shape[1]))
        noisy = t + params.noise * norm * g
        noisy *= norm / np.maximum(np.linalg.norm(noisy, axis=1, keepdims=True), 1e-12)
        out.append(noisy)
    return out


def exact_scores(queries: Sequence[np.ndarray], vectors: RowReader, offsets: np.ndarray) -> np.ndarray:
    """Exact MaxSim ``[Q, P]`` of every query over every page, reading the pages in chunks."""
    n_pages = offsets.shape[0] - 1
    qs = [torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)) for q in queries]
    out = np.empty((len(qs), n_pages), dtype=np.float32)
    a = 0
    while a < n_pages:
        b = int(np.searchsorted(offsets, offsets[a] + _EXACT_CHUNK_TOKENS, side="right")) - 1
        b = min(max(b, a + 1), n_pages)
        lo, hi = int(offsets[a]), int(offsets[b])
        chunk = torch.from_numpy(np.ascontiguousarray(vectors(np.arange(lo, hi)), dtype=np.float32))   # [t, d]
        out[:, a:b] = score_packed(qs, chunk, torch.from_numpy(offsets[a:b + 1] - lo)).numpy()
        a = b
    return out


# ---------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Setting:
    """One measured ``(nprobe, candidates)``: mean recalls, the lower bound and the cost proxy."""

    nprobe: int
    candidates: int
    recall: float
    recall_tie_aware: float
    recall_lower_bound: float
    cost: float


def grid(centroids: int, pages: int, k: int) -> tuple[list[int], list[int]]:
    """The ``nprobe`` and ``candidates`` values tried for a version of ``centroids`` lists and ``pages`` pages.

    >>> grid(16, 120, 10)
    ([1, 2, 4, 8, 16], [10, 20, 50, 100])
    """
    nprobes = [n for n in NPROBE_GRID if n < centroids] + [min(centroids, NPROBE_GRID[-1])]
    cands = [c for c in CANDIDATE_GRID if k <= c < pages]
    return sorted(set(nprobes)), cands


def measure(ivf: TokenIvf, vectors: RowReader, offsets: np.ndarray, queries: Sequence[np.ndarray],
            exact: np.ndarray, k: int, nprobes: Sequence[int], cands: Sequence[int],
            recall: str = "tie_aware") -> list[Setting]:
    """Recall (plain, tie-aware, lower bound of ``recall``'s kind) and cost of every grid setting."""
    n_pages = offsets.shape[0] - 1
    tokens_per_page = float(offsets[-1]) / n_pages
    sizes = np.diff(ivf.list_offsets)                                                     # [K]
    cents = torch.from_numpy(np.asarray(ivf.centroids, dtype=np.float32))
    out = []
    for nprobe in nprobes:
        plain = np.zeros((len(cands), len(queries)))
        tied = np.zeros((len(cands), len(queries)))
        probed = 0.0
        for j, q in enumerate(queries):
            qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
            lists = torch.topk(qt @ cents.T, min(nprobe, cents.shape[0]), dim=1).indices.numpy()   # [m, nprobe]
            probed += float(sizes[lists].sum()) + q.shape[0] * cents.shape[0]
            s = ivf.approximate_scores(q, vectors, n_pages, nprobe)                       # [P]
            top = exact_top(exact[j], k)
            kth = _kth(exact[j], k)
            floor = kth - TIE_RTOL * max(abs(kth), 1e-12)
            for i, c in enumerate(cands):
                cand = np.sort(np.argpartition(-s, c - 1)[:c])                           # as TokenIvf.candidates
                got = cand[exact_top(exact[j][cand], k)]                                  # exact rescoring
                plain[i, j] = np.isin(got, top).sum() / k
                tied[i, j] = (exact[j][got] >= floor).sum() / k
        log.info("calibration: nprobe %d measured on %d queries (recall@%d at %d candidates: %.4f)", nprobe,
                 len(queries), k, cands[-1], float(tied[-1].mean() if recall == "tie_aware" else plain[-1].mean()))
        for i, c in enumerate(cands):
            r = tied[i] if recall == "tie_aware" else plain[i]
            out.append(Setting(nprobe, c, round(float(plain[i].mean()), 4), round(float(tied[i].mean()), 4),
                               round(lower_bound(r, k), 4), round(probed / len(queries) + c * tokens_per_page, 1)))
    return out


def choose(settings: Sequence[Setting], target: float) -> Setting | None:
    """The cheapest setting whose lower bound reaches ``target`` (ties: fewer candidates), or None."""
    ok = [s for s in settings if s.recall_lower_bound >= target]
    return min(ok, key=lambda s: (s.cost, s.candidates, s.nprobe)) if ok else None


def calibrate(ivf: TokenIvf, vectors: RowReader, offsets: np.ndarray, params: CalibrationParams,
              queries: Sequence[np.ndarray] | None = None, about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calibrate token_ivf over one version (``offsets [P + 1]``, ``vectors`` reads its token rows).

    ``queries``: held-out query matrices (None: ``params.queries`` pseudo-queries); ``about``: what they are,
    added to the recorded sample. Returns the manifest record: the chosen ``nprobe`` and ``candidates``
    (``candidates = pages`` and ``met: false`` when no setting reaches the target: exact search), the measured
    recalls of the choice, the sample (``kind`` queries | pseudo, size, how it was made), the grid measured and
    the seconds spent.
    """
    recall = params.recall
    t0 = time.perf_counter()
    n_pages = offsets.shape[0] - 1
    given = queries is not None
    qs = [np.asarray(q, dtype=np.float32) for q in queries] if given else pseudo_queries(vectors, offsets, params)
    if not qs:
        raise IndexInputError("calibration needs at least one query: index.calibration.queries >= 1, or a "
                              "non-empty calibration_queries")
    exact = exact_scores(qs, vectors, offsets)                                           # [Q, P]
    k = min(params.k, n_pages)
    nprobes, cands = grid(int(ivf.centroids.shape[0]), n_pages, k)
    settings = measure(ivf, vectors, offsets, qs, exact, k, nprobes, cands, recall) if cands else []
    best = choose(settings, params.target_recall)
    sample = ({"kind": "queries", "queries": len(qs), "how": "held-out queries given to the build"} if given else
              {"kind": "pseudo", "queries": len(qs), "query_tokens": list(params.query_tokens), "noise": params.noise,
               "seed": params.seed,
               "how": "m uniform tokens of a seeded uniform page, each plus relative Gaussian noise; ground truth = "
                      "exact MaxSim over every page"})
    sample.update({k: v for k, v in (about or {}).items() if k not in ("kind", "queries")})
    record: dict[str, Any] = {
        "target_recall": params.target_recall, "k": k, "recall_kind": recall,
        "margin": f"one-sided 95% lower bound of the mean per-query recall (mean - {Z_95} sd / sqrt(n), capped by the "
                  f"Wilson bound over n * k slots) >= target",
        "cost": "token vectors read per query: m * centroids + probed list tokens + candidates * tokens/page",
        "source": params.source, "sample": sample, "grid": {"nprobe": nprobes, "candidates": cands},
    }
    if best is None:
        most = max(settings, key=lambda s: (s.recall_lower_bound, -s.cost), default=None)
        record.update({"met": False, "nprobe": int(ivf.params.nprobe), "candidates": n_pages, "exact": True,
                       "best_measured": None if most is None else asdict(most)})
    else:
        record.update({"met": True, "exact": False, **asdict(best)})
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["settings"] = [asdict(s) for s in settings]
    return record
