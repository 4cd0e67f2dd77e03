"""EOS-attention baselines (docs/method.md §4.2, DocPruner-style).

``I[j]`` is the attention from the last valid token to visual token ``j`` at one
decoder layer (default the final layer ``num_layers - 1``), mean over heads;
it is cached as ``PageFeatures.eos_attention``.

- **Adaptive** (:class:`EosAdaptivePruner`): keep ``z[j] > kappa`` with
  ``z = (I - mean(I)) / (std(I) + 1e-8)`` (unbiased std); if nothing passes keep
  the argmax. The kept fraction varies per page; ``kappa`` comes from
  :func:`calibrate_kappa` for a target ``gamma`` and :func:`realised_gamma`
  reports the mean fraction actually kept. The ``gamma`` passed to ``prune`` is
  not used: the budget is set through ``kappa``.
- **Fixed-k** (:class:`EosTopkPruner`): top ``keep_count(N, gamma)`` of ``I``.

Examples
--------
>>> import torch
>>> eos = torch.tensor([0.1, 0.1, 0.1, 0.7])
>>> zscores(eos)
tensor([-0.5000, -0.5000, -0.5000,  1.5000])
>>> adaptive_select(eos, kappa=1.0)
tensor([3])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage, check_finite, keep_count, top_k_indices

log = logging.getLogger(__name__)

SIGMA_EPS = 1e-8


def eos_row(features: PageFeatures, layer: int | None = None) -> torch.Tensor:
    """``[N]`` float32 EOS attention at ``layer`` (default the last decoder layer), checked finite."""
    layer = features.num_layers - 1 if layer is None else int(layer)
    row = features.eos_for(layer).to(torch.float32)
    check_finite(features.page_id, f"eos_attention (layer {layer})", row)
    return row


def zscores(eos: torch.Tensor) -> torch.Tensor:
    """``(I - mean) / (unbiased std + 1e-8)``; a single token gets z = 0."""
    eos = eos.to(torch.float32)
    if eos.numel() < 2:
        return torch.zeros_like(eos)
    return (eos - eos.mean()) / (eos.std(unbiased=True) + SIGMA_EPS)


def adaptive_select(eos: torch.Tensor, kappa: float) -> torch.Tensor:
    """Indices with ``z > kappa`` (ascending); the argmax (lowest index on ties) when none passes."""
    kept = torch.nonzero(zscores(eos) > kappa).flatten()
    if kept.numel() == 0:
        kept = top_k_indices(eos, 1)
    return kept


def calibrate_kappa(features_list: Sequence[PageFeatures], gamma: float, layer: int | None = None) -> float:
    """``kappa = quantile(pooled z-scores, 1 - gamma)`` over calibration pages (label-free).

    Each page's ``I`` is z-scored on its own, the z-scores of all pages are pooled,
    and the ``1 - gamma`` quantile (linear interpolation) is returned, so that about
    a ``gamma`` fraction of the pooled tokens lies above it. Single-token pages carry
    no spread and are skipped.

    >>> import torch
    >>> from anchorprune.features import PageFeatures
    >>> f = PageFeatures("p", "h", torch.eye(4), torch.zeros(1, 4), torch.tensor([[0.1, 0.1, 0.1, 0.7]]),
    ...                  torch.arange(4), (0,), 1)
    >>> round(calibrate_kappa([f], 0.5), 4)     # median of z = [-0.5, -0.5, -0.5, 1.5]
    -0.5
    """
    keep_count(1, gamma)  # validates gamma
    pooled = [zscores(eos_row(f, layer)) for f in features_list if f.num_tokens >= 2]
    if not pooled:
        raise ValueError("calibrate_kappa needs at least one page with two or more visual tokens")
    z = torch.cat(pooled).to(torch.float64).numpy()
    return float(np.quantile(z, 1.0 - gamma))


def realised_gamma(features_list: Sequence[PageFeatures], kappa: float, layer: int | None = None) -> float:
    """Mean over pages of the fraction adaptive EOS keeps at ``kappa`` (report it beside the target gamma)."""
    if not features_list:
        raise ValueError("realised_gamma needs at least one page")
    fractions = [adaptive_select(eos_row(f, layer), kappa).numel() / f.num_tokens for f in features_list]
    return float(np.mean(fractions))


class EosAdaptivePruner:
    """Keep tokens whose EOS attention z-score exceeds ``kappa`` (per-page budget varies)."""

    def __init__(self, kappa: float, layer: int | None = None) -> None:
        if kappa is None or not np.isfinite(kappa):
            raise ValueError(f"eos_adaptive needs a finite kappa, got {kappa!r}: "
                             "use calibrate_kappa(calibration_features, gamma)")
        self.kappa = float(kappa)
        self.layer = layer
        self.name = "eos_adaptive"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        keep_count(max(1, features.num_tokens), gamma)  # same gamma validation as every pruner
        check_finite(features.page_id, "embeddings", features.embeddings)
        kept = adaptive_select(eos_row(features, self.layer), self.kappa)
        return PrunedPage(features.page_id, features.content_hash, features.embeddings[kept], kept)

    def __repr__(self) -> str:
        return f"EosAdaptivePruner(kappa={self.kappa:.4f}, layer={self.layer})"


class EosTopkPruner:
    """Top ``keep_count(N, gamma)`` tokens by EOS attention (equal budget with SAP)."""

    def __init__(self, layer: int | None = None) -> None:
        self.layer = layer
        self.name = "eos_topk"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        check_finite(features.page_id, "embeddings", features.embeddings)
        eos = eos_row(features, self.layer)
        kept = top_k_indices(eos, keep_count(eos.shape[0], gamma))
        return PrunedPage(features.page_id, features.content_hash, features.embeddings[kept], kept)

    def __repr__(self) -> str:
        return f"EosTopkPruner(layer={self.layer})"
