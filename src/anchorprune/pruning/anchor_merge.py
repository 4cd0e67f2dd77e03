"""Anchor-guided merging: SAP picks the anchors, every other token merges into one.

Steps, for a page of ``N`` tokens and SAP window ``W``:

1. ``s[j]`` = SAP-Mean window score (:func:`anchorprune.pruning.sap.window_score`); the
   ``k = keep_count(N, gamma)`` highest are the anchors (ties to the lower index), as SAP keeps;
2. every token joins the anchor whose final vector is most similar (cosine; an anchor joins
   itself; ties to the lower anchor index) (:func:`assign_to_anchors`);
3. each anchor's group becomes the ``s``-weighted mean of its members' final vectors,
   L2-normalised (:func:`weighted_group_means`); a group whose weights are all 0 falls back
   to the plain mean.

Optional position prior (off by default): a token may only join anchors within ``radius``
of it (token distance on ``PageFeatures.positions``, or, with ``grid_cols``, the Chebyshev
distance on the 2-D patch grid ``(j // grid_cols, j % grid_cols)`` of token indices); a token
with no anchor in reach joins the most similar anchor overall.

Cost per page: ``O(N * k * d)`` (one ``[N, d] x [d, k]`` product), no pairwise ``N x N``
distances. Output rows follow the anchors in ascending token order; ``kept`` is ``None``
(merged vectors are new vectors, as for the other merging methods).

Examples
--------
>>> import torch
>>> e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])     # [N=4, d=2]
>>> assign_to_anchors(e, torch.tensor([0, 2]))                            # token 1 -> 0, 3 -> 2
tensor([0, 0, 1, 1])
>>> weighted_group_means(e, torch.tensor([0, 0, 1, 1]), torch.tensor([3.0, 1.0, 1.0, 0.0]), 2)
tensor([[0.9878, 0.1560],
        [0.0000, 1.0000]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage, keep_count, top_k_indices
from anchorprune.pruning.sap import checked_window_centrality, window_score


def assign_to_anchors(
    embeddings: torch.Tensor,                 # [N, d]
    anchors: torch.Tensor,                    # [k] int64 token indices, ascending
    allowed: torch.Tensor | None = None,      # [N, k] bool: token i may join anchor a
) -> torch.Tensor:
    """Group label ``[N]`` int64 in ``0..k-1`` (the rank of the chosen anchor in ``anchors``).

    Cosine similarity to every anchor, argmax (ties to the lower anchor); each anchor is put in its
    own group. Rows of ``allowed`` with no ``True`` fall back to all anchors.
    """
    x = torch.nn.functional.normalize(embeddings.to(torch.float32), dim=-1)      # [N, d]
    sim = x @ x[anchors].T                                                       # [N, k]
    if allowed is not None:
        reach = allowed | ~allowed.any(dim=1, keepdim=True)                     # [N, k]
        sim = sim.masked_fill(~reach, float("-inf"))
    labels = torch.argmax(sim, dim=1)                  # first maximum on ties = lower anchor index
    labels[anchors] = torch.arange(anchors.shape[0])
    return labels


def weighted_group_means(
    embeddings: torch.Tensor,                 # [N, d]
    labels: torch.Tensor,                     # [N] int64 in 0..k-1
    weights: torch.Tensor,                    # [N] >= 0 (negative weights are clamped to 0)
    k: int,
) -> torch.Tensor:
    """``[k, d]`` float32: per group ``sum w_j e_j / sum w_j``, L2-normalised (plain mean if ``sum w = 0``)."""
    emb = embeddings.to(torch.float32)
    w = weights.to(torch.float32).clamp_min(0.0)                                 # [N]
    wsum = torch.zeros(k).index_add_(0, labels, w)                               # [k]
    dead = wsum <= 0
    if dead.any():                                                               # all-zero weights: plain mean
        w = torch.where(dead[labels], torch.ones_like(w), w)
    sums = torch.zeros(k, emb.shape[1]).index_add_(0, labels, emb * w[:, None])  # [k, d]
    return torch.nn.functional.normalize(sums, p=2, dim=-1)


def position_mask(
    positions: torch.Tensor,                  # [N] int64 sequence positions
    anchors: torch.Tensor,                    # [k] token indices
    radius: int,
    grid_cols: int | None = None,
) -> torch.Tensor:
    """``[N, k]`` bool: anchor within ``radius`` of the token (token distance, or 2-D grid Chebyshev)."""
    if grid_cols is not None:
        idx = torch.arange(positions.shape[0])
        rows, cols = idx // grid_cols, idx % grid_cols                           # [N], [N]
        dist = torch.maximum((rows[:, None] - rows[anchors][None, :]).abs(),
                             (cols[:, None] - cols[anchors][None, :]).abs())      # [N, k]
    else:
        pos = positions.to(torch.int64)
        dist = (pos[:, None] - pos[anchors][None, :]).abs()                      # [N, k]
    return dist <= radius


def check_anchor_options(name: str, window: Sequence[int], radius: int | None, grid_cols: int | None) -> tuple[int, ...]:
    """The window as a tuple, or a ValueError naming the bad option (anchor_merge and anchor_kmeans)."""
    window = tuple(int(w) for w in window)
    if not window:
        raise ValueError(f"{name} needs a non-empty SAP window of decoder layers")
    if radius is not None and radius < 0:
        raise ValueError(f"radius must be >= 0 (or None for no position prior), got {radius}")
    if grid_cols is not None and grid_cols < 1:
        raise ValueError(f"grid_cols must be >= 1, got {grid_cols}")
    return window


def seed_anchors(features: PageFeatures, window: Sequence[int], gamma: float, radius: int | None,
                 grid_cols: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """A page's SAP anchors: ``(scores [N], anchors [k] ascending, allowed [N, k] or None)``, where ``allowed`` is
    the position prior's mask; None when ``k == N`` (the page is kept whole)."""
    c = checked_window_centrality(features, window)               # [|W|, N]
    s = window_score(c, range(len(window)))                       # [N]
    k = keep_count(features.num_tokens, gamma)
    if k == features.num_tokens:
        return None
    anchors = top_k_indices(s, k)                                  # [k] ascending
    allowed = None if radius is None else position_mask(features.positions, anchors, radius, grid_cols)
    return s, anchors, allowed


class AnchorMergePruner:
    """SAP anchors + cosine assignment + centrality-weighted, renormalised group means.

    >>> import torch
    >>> from anchorprune.features import PageFeatures
    >>> e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    >>> f = PageFeatures("p", "h", e, torch.tensor([[3.0, 1.0, 2.0, 1.0]]), torch.zeros(1, 4), torch.arange(4), (0,), 1)
    >>> AnchorMergePruner([0]).prune(f, 0.5).vectors      # anchors 0 and 2
    tensor([[0.9878, 0.1560],
            [0.2095, 0.9778]])
    """

    def __init__(self, window: Sequence[int], radius: int | None = None, grid_cols: int | None = None) -> None:
        self.window = check_anchor_options("anchor_merge", window, radius, grid_cols)
        self.radius = radius
        self.grid_cols = grid_cols
        self.name = "anchor_merge"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        seeded = seed_anchors(features, self.window, gamma, self.radius, self.grid_cols)
        if seeded is None:
            return PrunedPage(features.page_id, features.content_hash, features.embeddings, None)
        s, anchors, allowed = seeded                                   # [N], [k], [N, k] | None
        labels = assign_to_anchors(features.embeddings, anchors, allowed)                # [N]
        k = anchors.numel()
        vecs = weighted_group_means(features.embeddings, labels, s, k).to(features.embeddings.dtype)  # [k, d]
        return PrunedPage(features.page_id, features.content_hash, vecs, None)

    def __repr__(self) -> str:
        return f"AnchorMergePruner(window={list(self.window)}, radius={self.radius}, grid_cols={self.grid_cols})"
