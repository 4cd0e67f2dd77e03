"""The promotion rule (docs/architecture.md, "Promotion rule"), as pure functions.

A config is **certified** when, over a paired bootstrap of the evaluation queries
(:func:`certify`), the lower bound of its nDCG@5 retention interval is at least
``min_retention`` and the lower bound of its retention difference to random at the
same γ is above 0. Among certified configs the champion is the one with the
**fewest stored vectors per page**; ties go to higher retention, then to the name.
The unpruned "full" index is the reference, never a candidate, and random itself
cannot beat random.

The current champion's config is re-evaluated with the candidates (same data,
same queries) and judged by the same gate: it stays if it passes and no certified
candidate ranks strictly better; it is replaced by the best certified candidate if
it fails; if it fails and nothing passes, the alias stays and the decision is
marked ``stale`` with the reason. With fewer than ``min_queries`` evaluation
queries nothing is certified and the alias stays.

Why bounds, not means: on ~50 queries, nDCG@5 differences below ~0.07 are noise;
a mean retention of 0.9025 says little about whether the config holds 0.90.

>>> import numpy as np
>>> full = np.array([1.0, 1.0, 0.5, 1.0] * 10)
>>> ci = certify(full * 0.97, full, full * 0.5, resamples=200, seed=0)
>>> round(ci.retention, 2), ci.retention_low > 0.96, ci.vs_random_low > 0.4
(0.97, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

#: default number of bootstrap resamples and the default confidence of the interval
RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Bootstrap figures of one candidate (retention units: pruned nDCG@5 / full nDCG@5)."""

    retention: float              # point estimate: mean pruned / mean full
    retention_low: float
    retention_high: float
    vs_random: float | None       # point estimate of (pruned - random) / full
    vs_random_low: float | None
    vs_random_high: float | None
    confidence: float
    resamples: int
    num_queries: int


def _macro_ratio(num: np.ndarray, den: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Per resample (rows): macro mean of ``num`` over groups / macro mean of ``den`` over groups.

    The same arithmetic as the evaluation's ``ndcg_retention`` (macro nDCG@5 / macro full nDCG@5).
    """
    n = np.mean([num[:, g].mean(axis=1) for g in groups], axis=0)
    d = np.mean([den[:, g].mean(axis=1) for g in groups], axis=0)
    return np.divide(n, d, out=np.zeros_like(n), where=d > 0)


def certify(
    pruned: Sequence[float],
    full: Sequence[float],
    random: Sequence[float] | None,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> Interval:
    """Paired percentile bootstrap over queries of retention and of the difference to random.

    ``pruned``, ``full`` and ``random`` are per-query nDCG@5 in the same query order
    (random averaged over its trials per query). Each resample draws queries with
    replacement, the same draw for all three (paired). Retention is the ratio of mean
    nDCG@5, pruned over full; the difference to random is (pruned - random) / full in
    the same units. The interval is two-sided at ``confidence`` (percentiles
    ``(1-c)/2`` and ``(1+c)/2``).

    ``groups`` (e.g. the dataset source of each query) makes the figures macro averages
    over groups (macro pruned / macro full, as the evaluation's retention), with queries
    resampled within their group.
    """
    p, f = np.asarray(pruned, dtype=np.float64), np.asarray(full, dtype=np.float64)
    r = None if random is None else np.asarray(random, dtype=np.float64)
    n = p.shape[0]
    if n == 0 or f.shape != p.shape or (r is not None and r.shape != p.shape):
        raise ValueError(f"certify needs per-query arrays of one non-zero length, got pruned {p.shape}, "
                         f"full {f.shape}, random {None if r is None else r.shape}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 100:
        raise ValueError(f"use at least 100 bootstrap resamples, got {resamples}")
    labels = np.asarray(list(groups) if groups is not None else ["_"] * n)
    if labels.shape[0] != n:
        raise ValueError(f"groups has {labels.shape[0]} labels for {n} queries")
    members = [np.flatnonzero(labels == g) for g in sorted(set(labels.tolist()))]

    rng = np.random.default_rng(seed)
    # stratified draw: each group's queries are resampled within the group (one group: plain bootstrap)
    idx = np.concatenate([m[rng.integers(0, m.size, size=(resamples, m.size))] for m in members], axis=1)
    offsets = np.cumsum([0] + [m.size for m in members])
    slots = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(members))]
    whole = [np.arange(n)[m] for m in members]

    point = float(_macro_ratio(p[None], f[None], whole)[0])
    ret = _macro_ratio(p[idx], f[idx], slots)
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    vs = vs_lo = vs_hi = None
    if r is not None:
        vs = float(_macro_ratio((p - r)[None], f[None], whole)[0])
        diff = _macro_ratio(p[idx] - r[idx], f[idx], slots)
        vs_lo, vs_hi = (float(x) for x in np.quantile(diff, [lo_q, hi_q]))
    ret_lo, ret_hi = (float(x) for x in np.quantile(ret, [lo_q, hi_q]))
    return Interval(point, ret_lo, ret_hi, vs, vs_lo, vs_hi, confidence, resamples, n)


@dataclass(frozen=True)
class Candidate:
    backbone: str
    method: str
    gamma: float
    window: str | None               # "a-b" for SAP, None for window-free methods
    retention: float                 # macro nDCG@5 retention vs full (point estimate)
    vectors_per_page: float          # mean stored vectors per page
    random_retention: float | None   # random's retention at the same gamma (None if not evaluated)
    run_id: str | None = None
    retention_low: float | None = None    # bootstrap interval of retention
    retention_high: float | None = None
    vs_random_low: float | None = None    # bootstrap interval of (retention - random's)
    vs_random_high: float | None = None
    confidence: float | None = None
    num_queries: int | None = None
    kappa: float | None = None            # eos_adaptive's κ from the evaluation that certified it

    @property
    def name(self) -> str:
        w = f"[{self.window}]" if self.window else ""
        return f"{self.method}@{self.gamma:g}{w}"

    @property
    def key(self) -> tuple[str, float, str | None]:
        return (self.method, round(self.gamma, 6), self.window)

    def sort_key(self) -> tuple[float, float, str]:
        """Smaller is better: fewer vectors, then higher retention, then name."""
        return (self.vectors_per_page, -self.retention, self.name)

    def with_interval(self, ci: Interval) -> Candidate:
        # the point estimate stays the evaluation's own figure; the bootstrap adds the interval
        return replace(self, retention_low=ci.retention_low,
                       retention_high=ci.retention_high, vs_random_low=ci.vs_random_low,
                       vs_random_high=ci.vs_random_high, confidence=ci.confidence, num_queries=ci.num_queries)

    def to_tags(self) -> dict[str, str]:
        """Compact registry tags: one short tag per set field (unset fields are left out)."""
        return {f"anchorprune.{k}": str(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Candidate:
        def get(key: str) -> str:
            return tags.get(f"anchorprune.{key}", "")

        def num(key: str, kind=float):
            v = get(key)
            return kind(v) if v else None

        return cls(
            backbone=get("backbone"), method=get("method"), gamma=float(get("gamma")), window=get("window") or None,
            retention=float(get("retention")), vectors_per_page=float(get("vectors_per_page")),
            random_retention=num("random_retention"), run_id=get("run_id") or None,
            retention_low=num("retention_low"), retention_high=num("retention_high"),
            vs_random_low=num("vs_random_low"), vs_random_high=num("vs_random_high"),
            confidence=num("confidence"), num_queries=num("num_queries", int), kappa=num("kappa"),
        )

    def describe(self) -> str:
        if self.retention_low is None:
            return f"{self.vectors_per_page:.1f} vectors/page, retention {self.retention:.4f} (not certified)"
        pct = f"{100 * (self.confidence or CONFIDENCE):g}%"
        out = (f"{self.vectors_per_page:.1f} vectors/page, retention {self.retention:.4f} "
               f"[{pct} CI {self.retention_low:.4f}-{self.retention_high:.4f}]")
        if self.vs_random_low is not None:
            out += f", vs random +[{self.vs_random_low:.4f}, {self.vs_random_high:.4f}]"
        return out


@dataclass
class Decision:
    champion: Candidate | None       # the config that holds the alias after this decision
    promoted: bool                   # whether the alias should move to ``champion``
    reason: str
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (candidate name, why)
    stale: bool = False              # the alias stays on a champion that fails the gate on current data
    certified: list[str] = field(default_factory=list)  # names of the candidates that pass


def gate(c: Candidate, min_retention: float, require_beats_random: bool) -> str | None:
    """Why ``c`` fails the certified gate, or ``None`` if it passes."""
    if c.method == "full":
        return "full is the reference, not a pruning config"
    if c.retention_low is None:
        return "no confidence interval (not certified): rerun evaluate"
    pct = f"{100 * (c.confidence or CONFIDENCE):g}%"
    if c.retention_low < min_retention:
        return (f"retention lower bound {c.retention_low:.4f} < {min_retention:.4f} "
                f"(mean {c.retention:.4f}, {pct} CI {c.retention_low:.4f}-{c.retention_high:.4f})")
    if require_beats_random:
        if c.method == "random":
            return "random cannot beat random"
        if c.vs_random_low is None:
            return f"no random baseline at gamma {c.gamma:g} to compare with"
        if not c.vs_random_low > 0:
            return (f"not certified better than random: lower bound of the difference {c.vs_random_low:+.4f} "
                    f"<= 0 ({pct} CI {c.vs_random_low:+.4f} to {c.vs_random_high:+.4f})")
    return None


def choose_champion(
    candidates: Sequence[Candidate],
    min_retention: float,
    require_beats_random: bool = True,
    current: Candidate | None = None,
    min_queries: int = 1,
) -> Decision:
    """Apply the rule; ``current`` is the config holding the alias now (if any).

    ``current`` is looked up among ``candidates`` by (method, γ, window) so that it is
    judged on the same evaluation; a champion missing from the evaluation is treated
    as failing the gate.
    """
    n = min((c.num_queries for c in candidates if c.num_queries is not None), default=None)
    if n is not None and n < min_queries:
        keep = f"'{current.name}' stays champion" if current else "there is no champion"
        return Decision(current, False, f"only {n} evaluation queries, fewer than promote.min_queries = "
                        f"{min_queries}: too few to certify anything; {keep}",
                        [(c.name, "too few queries to certify") for c in candidates])
    rejected: list[tuple[str, str]] = []
    passing: list[Candidate] = []
    for c in candidates:
        why = gate(c, min_retention, require_beats_random)
        if why is None:
            passing.append(c)
        else:
            rejected.append((c.name, why))
    certified = [c.name for c in passing]
    best = min(passing, key=Candidate.sort_key) if passing else None
    if current is None:
        if best is None:
            return Decision(None, False, "no candidate passes the gate; there is no champion", rejected)
        return Decision(best, True, f"'{best.name}' is the first champion: {best.describe()}", rejected,
                        certified=certified)

    fresh = next((c for c in candidates if c.key == current.key), None)
    if fresh is None:
        current_fails = "was not re-evaluated in this evaluation"
    else:
        current_fails = gate(fresh, min_retention, require_beats_random)
    if current_fails is not None:
        if best is None:
            return Decision(fresh or current, False,
                            f"STALE: current '{current.name}' fails the gate on current data ({current_fails}) and "
                            "no candidate passes; the alias stays, marked stale", rejected, stale=True)
        return Decision(best, True, f"'{best.name}' ({best.describe()}) replaces current '{current.name}', which "
                        f"fails the gate on current data ({current_fails})", rejected, certified=certified)
    assert fresh is not None and best is not None  # the current champion passes, so there is a best
    if best.key != fresh.key and best.sort_key() < fresh.sort_key():
        return Decision(best, True, f"'{best.name}' ({best.describe()}) beats current '{fresh.name}' "
                        f"({fresh.describe()}) on the same evaluation", rejected, certified=certified)
    if best.key == fresh.key:
        reason = f"current '{fresh.name}' ({fresh.describe()}) is still the best certified config; the alias stays"
    else:
        reason = (f"best candidate '{best.name}' ({best.describe()}) does not beat current '{fresh.name}' "
                  f"({fresh.describe()}); the alias stays")
    return Decision(fresh, False, reason, rejected, certified=certified)


def certified_candidates(evaluation, backbone: str, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                         seed: int = 0, groups: dict[str, str] | None = None) -> list[Candidate]:
    """Candidates with bootstrap intervals from an :class:`~anchorprune.evaluation.grid.EvaluationResult`.

    Every config is bootstrapped over the same query draws (one seed), paired with the
    full reference and with random at its γ. ``groups`` maps a query id to its source
    (macro average over sources); default one group.
    """
    qids = sorted(evaluation.full.per_query)
    if not qids:
        raise ValueError("the evaluation has no per-query results (an older format): rerun `anchorprune evaluate`")
    full = [evaluation.full.per_query[q] for q in qids]
    labels = [groups[q] for q in qids] if groups else None
    out = []
    for c in evaluation.configs:
        rnd = evaluation.random_for(c.gamma) if c.method != "random" else None
        missing = [q for q in qids if q not in c.per_query or (rnd is not None and q not in rnd.per_query)]
        if missing:
            raise ValueError(f"config {c.label}@{c.gamma:g} lacks per-query results for {len(missing)} queries "
                             f"(e.g. {missing[0]!r}): rerun `anchorprune evaluate`")
        ci = certify([c.per_query[q] for q in qids], full,
                     [rnd.per_query[q] for q in qids] if rnd is not None else None,
                     resamples=resamples, confidence=confidence, seed=seed, groups=labels)
        baseline = evaluation.random_for(c.gamma)   # random's own row too (it cannot beat itself: the gate says so)
        base = Candidate(backbone, c.method, c.gamma, c.window, c.ndcg_retention, c.vectors_per_page,
                         baseline.ndcg_retention if baseline is not None else None, c.run_id, kappa=c.kappa)
        out.append(base.with_interval(ci))
    if any(math.isnan(c.retention) for c in out):
        raise ValueError("full nDCG@5 is 0 on every query: retention is undefined; check the qrels")
    return out
