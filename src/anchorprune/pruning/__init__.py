"""Pruning methods over cached :class:`~anchorprune.features.PageFeatures` (docs/method.md §2, §4).

:func:`build_pruner` maps a method name of ``config.Method`` to a :class:`Pruner`.

Examples
--------
>>> build_pruner("sap", window=[11, 12, 13, 14])
SapPruner(window=[11, 12, 13, 14], heads='mean')
>>> build_pruner("random", seed=2)
RandomPruner(seed=2)
>>> build_pruner("eos_topk")
EosTopkPruner(layer=None)
>>> build_pruner("anchor_merge", window=[3, 4])
AnchorMergePruner(window=[3, 4], radius=None, grid_cols=None)
>>> build_pruner("anchor_kmeans", window=[3, 4])
AnchorKMeansPruner(window=[3, 4], iters=5, weighted=False, radius=None)
"""

from __future__ import annotations

from collections.abc import Sequence

from anchorprune.pruning.anchor_kmeans import AnchorKMeansPruner
from anchorprune.pruning.anchor_merge import AnchorMergePruner
from anchorprune.pruning.base import PrunedPage, Pruner, check_finite, keep_count, top_k_indices
from anchorprune.pruning.eos import EosAdaptivePruner, EosTopkPruner, calibrate_kappa, realised_gamma
from anchorprune.pruning.merging import ClusterMergePruner, HierarchicalPoolPruner
from anchorprune.pruning.random import RandomPruner
from anchorprune.pruning.sap import SapPruner, layer_centrality, select

METHODS = ("sap", "sap_max", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool", "anchor_merge",
           "anchor_kmeans")

__all__ = [
    "METHODS", "AnchorKMeansPruner", "AnchorMergePruner", "ClusterMergePruner", "EosAdaptivePruner", "EosTopkPruner",
    "HierarchicalPoolPruner", "PrunedPage", "Pruner", "RandomPruner", "SapPruner", "build_pruner", "calibrate_kappa",
    "check_finite", "keep_count", "layer_centrality", "realised_gamma", "select", "top_k_indices",
]


def build_pruner(
    method: str,
    *,
    window: Sequence[int] | None = None,
    seed: int = 0,
    kappa: float | None = None,
    eos_layer: int | None = None,
    radius: int | None = None,
    iters: int | None = None,
    weighted: bool | None = None,
) -> Pruner:
    """The pruner for ``method``.

    ``window`` is required by ``sap``, ``anchor_merge`` and ``anchor_kmeans`` (decoder-layer indices);
    ``radius`` is ``anchor_merge``'s and ``anchor_kmeans``'s optional position prior (token distance; default
    none); ``iters`` (Lloyd assignment steps) and ``weighted`` (centrality-weighted centres) are
    ``anchor_kmeans``'s (default: the measured defaults of :mod:`anchorprune.pruning.anchor_kmeans`); ``seed`` is used by
    ``random``; ``kappa`` is required by ``eos_adaptive`` (from
    :func:`calibrate_kappa`); ``eos_layer`` picks the EOS layer (default the last).
    Arguments a method does not use are ignored, so one call site can build any method.
    ``sap_max`` raises :class:`NotImplementedError`: the features cache stores SAP-Mean only.
    """
    if method == "sap":
        if not window:
            raise ValueError("method 'sap' needs window=[layers...] (see anchorprune.windows.resolve_window)")
        return SapPruner(window)
    if method == "sap_max":
        return SapPruner(window or [0], heads="max")   # raises NotImplementedError with the reason
    if method == "random":
        return RandomPruner(seed)
    if method == "eos_adaptive":
        if kappa is None:
            raise ValueError("method 'eos_adaptive' needs kappa=calibrate_kappa(calibration_features, gamma)")
        return EosAdaptivePruner(kappa, layer=eos_layer)
    if method == "eos_topk":
        return EosTopkPruner(layer=eos_layer)
    if method == "cluster_merge":
        return ClusterMergePruner()
    if method == "hier_pool":
        return HierarchicalPoolPruner()
    if method == "anchor_merge":
        if not window:
            raise ValueError("method 'anchor_merge' needs window=[layers...] (its anchors are SAP's)")
        return AnchorMergePruner(window, radius=radius)
    if method == "anchor_kmeans":
        if not window:
            raise ValueError("method 'anchor_kmeans' needs window=[layers...] (its seeds are SAP's anchors)")
        from anchorprune.pruning.anchor_kmeans import DEFAULT_ITERS, DEFAULT_WEIGHTED

        return AnchorKMeansPruner(window, iters=DEFAULT_ITERS if iters is None else iters,
                                  weighted=DEFAULT_WEIGHTED if weighted is None else weighted, radius=radius)
    raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
