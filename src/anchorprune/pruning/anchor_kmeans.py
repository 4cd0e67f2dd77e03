"""Anchor-seeded k-means: SAP anchors seed a few Lloyd iterations on cosine, then centrality-weighted means.

Steps, for a page of ``N`` tokens, SAP window ``W`` and ``iters`` assignment steps:

1. ``s[j]`` = SAP-Mean window score; the ``k = keep_count(N, gamma)`` highest are the anchors (ties to
   the lower index), as SAP and :mod:`anchorprune.pruning.anchor_merge` keep;
2. assignment 1 is anchor_merge's (:func:`~anchorprune.pruning.anchor_merge.assign_to_anchors`: every token
   joins the anchor of highest cosine, each anchor its own group), so ``iters=1`` *is* ``anchor_merge``;
3. Lloyd steps 2..``iters``: each group's centre becomes the L2-normalised mean of its members'
   L2-normalised vectors (``s``-weighted with ``weighted=True``, plain otherwise; an empty group keeps its
   centre), then every token joins the centre of highest cosine (ties to the lower group index; anchors
   are no longer pinned). Stops early when no token changes group (the remaining steps would repeat it);
4. each final group becomes the ``s``-weighted mean of its members' final vectors, L2-normalised
   (:func:`~anchorprune.pruning.anchor_merge.weighted_group_means`, as anchor_merge); a group left
   empty by step 3 returns its last centre, so a page always has exactly ``k`` vectors.

Optional position prior (``radius``): a token may only join groups whose *anchor* is within ``radius``
tokens (as anchor_merge's prior; the reach is fixed by the seeds, not by the moving centres).

Cost per page: ``O(iters * N * k * d)`` (one ``[N, d] x [d, k]`` product and one scatter-add per
step), no ``N x N`` distances. Output rows follow the anchors in ascending token order; ``kept`` is
``None`` (merged vectors are new vectors).

Examples
--------
>>> import torch
>>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])      # [N=4, d=2]
>>> labels, centres, steps = lloyd_labels(x, torch.tensor([0, 1]), torch.ones(4), iters=5)
>>> labels.tolist(), steps                      # step 1 = anchor_merge's; step 2 changes nothing: stop
([0, 1, 1, 0], 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.anchor_merge import (
    assign_to_anchors,
    check_anchor_options,
    seed_anchors,
    weighted_group_means,
)
from anchorprune.pruning.base import PrunedPage

# Defaults picked by SR on calibration queries only (benchmarks/anchor_kmeans_sweep.py; docs/quality.md): the
# best mean SR over γ 0.2/0.1/0.05 within 0.002, fewest iterations. Debian calibration (300 queries): 5 plain;
# demo (22 queries): 3 plain, with 5 plain the best.
DEFAULT_ITERS = 5
DEFAULT_WEIGHTED = False     # plain (unweighted) centres during the Lloyd steps; final means stay s-weighted
MAX_ITERS = 10


def lloyd_labels(
    x: torch.Tensor,                          # [N, d] L2-normalised vectors
    anchors: torch.Tensor,                    # [k] int64 token indices, ascending
    weights: torch.Tensor,                    # [N] >= 0: centre weights (all ones: plain means)
    iters: int,
    allowed: torch.Tensor | None = None,      # [N, k] bool: token i may join group a
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(labels [N] int64 in 0..k-1, centres [k, d], assignment steps run)`` of anchor-seeded Lloyd k-means.

    Step 1 is :func:`assign_to_anchors`; every further step recomputes the centres (weighted mean of the
    members, L2-normalised; an empty group keeps its centre) and reassigns on cosine (first maximum: ties to
    the lower group). Stops after ``iters`` steps, or earlier once a step changes no label.
    """
    k = anchors.shape[0]
    centres = x[anchors]                                                         # [k, d]
    labels = assign_to_anchors(x, anchors, allowed)                              # [N]
    reach = None if allowed is None else allowed | ~allowed.any(dim=1, keepdim=True)   # [N, k]
    steps = 1
    while steps < iters:
        means = weighted_group_means(x, labels, weights, k)                      # [k, d]; empty group: zero row
        alive = torch.zeros(k, dtype=torch.bool).index_fill_(0, labels, True)    # [k]
        centres = torch.where(alive[:, None], means, centres)
        sim = x @ centres.T                                                      # [N, k]
        if reach is not None:
            sim = sim.masked_fill(~reach, float("-inf"))
        new = torch.argmax(sim, dim=1)                                           # first maximum on ties
        steps += 1
        if torch.equal(new, labels):
            break
        labels = new
    return labels, centres, steps


class AnchorKMeansPruner:
    """SAP anchors seed ``iters`` cosine Lloyd steps; centrality-weighted, renormalised final group means.

    >>> import torch
    >>> from anchorprune.features import PageFeatures
    >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    >>> f = PageFeatures("p", "h", e, torch.tensor([[3.0, 2.0, 1.0, 1.0]]), torch.zeros(1, 4), torch.arange(4), (0,), 1)
    >>> AnchorKMeansPruner([0], iters=1).prune(f, 0.5).vectors      # anchors 0 and 1
    tensor([[0.9878, 0.1560],
            [0.2095, 0.9778]])
    """

    def __init__(self, window: Sequence[int], iters: int = DEFAULT_ITERS, weighted: bool = DEFAULT_WEIGHTED,
                 radius: int | None = None, grid_cols: int | None = None) -> None:
        self.window = check_anchor_options("anchor_kmeans", window, radius, grid_cols)
        if isinstance(iters, bool) or not isinstance(iters, int) or not 1 <= iters <= MAX_ITERS:
            raise ValueError(f"anchor_kmeans iters must be an int in 1..{MAX_ITERS}, got {iters!r}")
        self.iters = iters
        self.weighted = bool(weighted)
        self.radius = radius
        self.grid_cols = grid_cols
        self.name = "anchor_kmeans"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        seeded = seed_anchors(features, self.window, gamma, self.radius, self.grid_cols)
        if seeded is None:
            return PrunedPage(features.page_id, features.content_hash, features.embeddings, None)
        s, anchors, allowed = seeded                                   # [N], [k], [N, k] | None
        n, k = features.num_tokens, anchors.numel()
        x = torch.nn.functional.normalize(features.embeddings.to(torch.float32), dim=-1)   # [N, d]
        w = s if self.weighted else torch.ones(n)                      # [N]
        labels, centres, _ = lloyd_labels(x, anchors, w, self.iters, allowed)             # [N], [k, d]
        vecs = weighted_group_means(features.embeddings, labels, s, k)                    # [k, d]
        alive = torch.zeros(k, dtype=torch.bool).index_fill_(0, labels, True)             # [k]
        vecs = torch.where(alive[:, None], vecs, centres).to(features.embeddings.dtype)
        return PrunedPage(features.page_id, features.content_hash, vecs, None)

    def __repr__(self) -> str:
        return (f"AnchorKMeansPruner(window={list(self.window)}, iters={self.iters}, weighted={self.weighted}, "
                f"radius={self.radius})")
