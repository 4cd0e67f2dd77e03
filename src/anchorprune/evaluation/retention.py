"""Score retention (SR, "OSR" in SAP v1) and the SR-guided window (docs/method.md §3).

For a (query, gold page) pair and a kept subset,
``R = MaxSim(Q, E[kept]) / MaxSim(Q, E)``. A pair whose full score is <= 0 is
**excluded and counted**, never mapped to 0 or 1.

- :func:`score_retention`: one pair (``None`` when excluded).
- :func:`sr_ratio_of_means` / :func:`sr_mean_of_ratios`: the two aggregates.
- :func:`sr_curve`: per-layer SR with ``W = {l}`` for every captured layer, mean
  and std over pairs, plus the random reference (seeded trials).
- :func:`select_sr_window`: Algorithm 1 of SAP v2.
- :func:`resolve_window`: ``"sr"``, ``"v1"``, ``"v2"`` or ``"a-b"`` to layer indices.

Examples
--------
>>> sr_mean_of_ratios([0.9, 0.5, 0.3], [1.0, 1.0, -0.2])
Retention(value=0.7, pairs=2, excluded=1)
>>> round(sr_ratio_of_means([0.9, 0.5], [1.0, 2.0]).value, 6)
0.466667
>>> w = select_sr_window([0.9] * 10 + [0.5] * 8, rho=0.2)     # 18 layers, drop after layer 9
>>> w.layers, w.alpha, w.beta
([6, 7, 8, 9], 0.3333333333333333, 0.5555555555555556)
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import check_finite, keep_count, top_k_indices
from anchorprune.pruning.random import page_generator, random_select

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ per pair and aggregates
def score_retention(pruned_score: float, full_score: float) -> float | None:
    """``pruned / full`` for one pair, or ``None`` when the full score is <= 0 (excluded).

    >>> score_retention(0.8, 1.6), score_retention(0.1, 0.0)
    (0.5, None)
    """
    for name, v in (("pruned score", pruned_score), ("full score", full_score)):
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} is {v}; score retention needs finite MaxSim scores")
    return float(pruned_score) / float(full_score) if full_score > 0 else None


@dataclass(frozen=True)
class Retention:
    """An SR aggregate: ``value`` over ``pairs`` usable pairs; ``excluded`` pairs had full score <= 0.

    ``value`` is NaN when every pair was excluded.
    """

    value: float
    pairs: int
    excluded: int


def _pairs(pruned: Sequence[float] | torch.Tensor, full: Sequence[float] | torch.Tensor):
    p = torch.as_tensor(pruned, dtype=torch.float64).flatten()
    f = torch.as_tensor(full, dtype=torch.float64).flatten()
    if p.shape != f.shape:
        raise ValueError(f"{p.numel()} pruned scores but {f.numel()} full scores: give one of each per pair")
    for name, t in (("pruned", p), ("full", f)):
        if not torch.isfinite(t).all():
            i = int(torch.nonzero(~torch.isfinite(t))[0, 0])
            raise ValueError(f"{name} score of pair {i} is {float(t[i])}; score retention needs finite scores")
    keep = f > 0
    excluded = int((~keep).sum())
    if excluded:
        log.info("score retention: %d of %d pairs excluded (full score <= 0)", excluded, f.numel())
    return p[keep], f[keep], excluded


def sr_ratio_of_means(pruned: Sequence[float] | torch.Tensor, full: Sequence[float] | torch.Tensor) -> Retention:
    """``mean(pruned) / mean(full)`` over pairs with full score > 0 (the fixed-ratio benchmark's SR)."""
    p, f, excluded = _pairs(pruned, full)
    if f.numel() == 0:
        return Retention(float("nan"), 0, excluded)
    return Retention(float(p.mean() / f.mean()), int(f.numel()), excluded)


def sr_mean_of_ratios(pruned: Sequence[float] | torch.Tensor, full: Sequence[float] | torch.Tensor) -> Retention:
    """``mean(pruned / full)`` over pairs with full score > 0 (the layer analysis's SR)."""
    p, f, excluded = _pairs(pruned, full)
    if f.numel() == 0:
        return Retention(float("nan"), 0, excluded)
    return Retention(float((p / f).mean()), int(f.numel()), excluded)


# ------------------------------------------------------------------ per-layer curve
@dataclass(frozen=True)
class SRCurve:
    """Per-layer score retention (mean of ratios over pairs) at one ``gamma``.

    ``mean[i]``/``std[i]`` belong to decoder layer ``layers[i]`` (std over pairs,
    unbiased, 0 for one pair). The random reference does not depend on the layer:
    ``random_mean``/``random_std`` repeat one value per layer (a flat line); the
    value is the mean over pairs of each pair's mean over ``random_trials`` seeded
    draws, the std is over pairs of that per-pair mean, and ``random_trial_means``
    holds the mean over pairs of each trial.
    """

    layers: tuple[int, ...]
    gamma: float
    mean: list[float]
    std: list[float]
    random_mean: list[float]
    random_std: list[float]
    random_trial_means: list[float]
    num_pairs: int                       # pairs used (full score > 0)
    excluded: int                        # pairs with full score <= 0
    per_pair: torch.Tensor = field(repr=False)   # [num_pairs, len(layers)] ratios


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def sr_curve(
    pairs: Sequence[tuple[torch.Tensor, PageFeatures]],   # (query [m, d], gold page features)
    gamma: float = 0.05,
    random_trials: int = 5,
    seed: int = 0,
    scorer: Literal["sap", "eos"] = "sap",
    progress: bool = False,
) -> SRCurve:
    """SR per captured layer with ``W = {l}`` (SAP-Mean, or EOS attention at layer ``l``).

    Every page must have captured the same layers. Pairs whose full score is <= 0
    are excluded from every layer and from the random line, and counted.
    """
    if not pairs:
        raise ValueError("sr_curve needs at least one (query, gold page features) pair")
    if random_trials < 1:
        raise ValueError(f"random_trials must be >= 1, got {random_trials}")
    if scorer not in ("sap", "eos"):
        raise ValueError(f"scorer must be 'sap' or 'eos', got {scorer!r}")
    layers = pairs[0][1].layers
    rows: list[list[float]] = []
    rand_rows: list[list[float]] = []
    excluded = 0
    for n, (query, feats) in enumerate(tqdm(pairs, desc="SR curve", disable=not progress)):
        if feats.layers != layers:
            raise ValueError(f"page {feats.page_id!r} captured layers {list(feats.layers)}, the first pair's page "
                             f"captured {list(layers)}: encode every calibration page with the same capture")
        check_finite(feats.page_id, "embeddings", feats.embeddings)
        check_finite(feats.page_id, "centrality" if scorer == "sap" else "eos_attention",
                     feats.centrality if scorer == "sap" else feats.eos_attention)
        if query.ndim != 2 or query.shape[1] != feats.embeddings.shape[1]:
            raise ValueError(f"pair {n}: query shape {tuple(query.shape)} does not match page "
                             f"{feats.page_id!r} dimension {feats.embeddings.shape[1]}")
        check_finite(f"query of pair {n} (gold page {feats.page_id})", "query vectors", query)
        sim = query.to(torch.float32) @ feats.embeddings.to(torch.float32).T   # [m, N]
        full = float(sim.max(dim=1).values.sum())
        if full <= 0:
            excluded += 1
            continue
        k = keep_count(feats.num_tokens, gamma)
        stats = feats.centrality if scorer == "sap" else feats.eos_attention     # [len(layers), N]
        row = []
        for r in range(len(layers)):
            kept = top_k_indices(stats[r].to(torch.float32), k)
            row.append(float(sim[:, kept].max(dim=1).values.sum()) / full)
        rows.append(row)
        rand_rows.append([
            float(sim[:, random_select(feats.num_tokens, gamma, page_generator(seed + t, feats.page_id))]
                  .max(dim=1).values.sum()) / full
            for t in range(random_trials)
        ])
    if excluded:
        log.warning("SR curve: %d of %d pairs excluded (full score <= 0)", excluded, len(pairs))
    if not rows:
        raise ValueError(f"all {len(pairs)} pairs have a full MaxSim score <= 0; SR is undefined for them")
    per_pair = torch.tensor(rows, dtype=torch.float64)            # [P, L]
    rand = torch.tensor(rand_rows, dtype=torch.float64)           # [P, trials]
    mean = [float(x) for x in per_pair.mean(dim=0)]
    std = [_std(per_pair[:, i].tolist()) for i in range(len(layers))]
    rand_pair = rand.mean(dim=1)
    r_mean, r_std = float(rand_pair.mean()), _std(rand_pair.tolist())
    return SRCurve(
        layers=tuple(layers), gamma=gamma, mean=mean, std=std,
        random_mean=[r_mean] * len(layers), random_std=[r_std] * len(layers),
        random_trial_means=[float(x) for x in rand.mean(dim=0)],
        num_pairs=len(rows), excluded=excluded, per_pair=per_pair,
    )


# ------------------------------------------------------------------ window selection
@dataclass(frozen=True)
class SRWindow:
    """An SR-guided window: layers ``start .. end - 1`` (``end`` = l*, exclusive).

    ``alpha = start / L`` and ``beta = end / L`` (relative depths of the window's
    edges); ``median`` is the median SR used as the threshold.
    """

    layers: list[int]
    start: int
    end: int
    alpha: float
    beta: float
    median: float
    num_layers: int


def select_sr_window(sr_by_layer: Sequence[float], rho: float = 0.2) -> SRWindow:
    """SAP v2 Algorithm 1: the ``ceil(rho * L)`` layers just before the trailing low-SR run.

    1. ``m = median(SR)``; 2. ``l*`` = first layer of the longest trailing run with
    ``SR < m`` (``L`` if ``SR[L-1] >= m``); 3. window ``[max(0, l* - w), l*)`` with
    ``w = ceil(rho * L)`` (computed with a 1e-9 guard so 0.2 * 35 gives 7, not 8).
    """
    sr = [float(x) for x in sr_by_layer]
    if not sr:
        raise ValueError("sr_by_layer is empty: compute the SR curve first (sr_curve)")
    bad = [i for i, x in enumerate(sr) if not math.isfinite(x)]
    if bad:
        raise ValueError(f"SR of layers {bad} is not finite; recompute the curve")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    num_layers = len(sr)
    m = statistics.median(sr)
    l_star = num_layers
    while l_star > 0 and sr[l_star - 1] < m:
        l_star -= 1
    width = max(1, math.ceil(rho * num_layers - 1e-9))
    start = max(0, l_star - width)
    if start == l_star:   # only if every layer were below the median, which the median forbids
        raise ValueError("the SR curve leaves no layer before its trailing low region")
    return SRWindow(list(range(start, l_star)), start, l_star, start / num_layers, l_star / num_layers,
                    m, num_layers)
