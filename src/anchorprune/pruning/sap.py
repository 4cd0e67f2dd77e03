"""Structural Anchor Pruning (docs/method.md §2): keep the visual tokens with the highest in-degree.

Steps, for a window ``W`` of decoder layers:

1. ``c[l, h, j] = sum_{i in V} A[V_i, V_j]`` — in-degree of visual token ``j`` from
   visual sources only (:func:`layer_centrality`);
2. mean over heads (SAP-Mean) or max over heads (SAP-Max, an option);
3. ``s[j] = mean_{l in W} c[l, j]`` (:func:`window_score`);
4. keep ``k = max(1, min(N, floor(gamma * N)))`` tokens with the highest ``s``
   (:func:`keep_count`, :func:`select`), ties to the lower index, ascending order;
5. store the final-layer vectors at the kept positions (:class:`SapPruner`).

SAP-Max needs the per-head maps; :class:`~anchorprune.features.PageFeatures` stores
the SAP-Mean reduction only, so SAP-Max is available through
:func:`layer_centrality` (``heads="max"``) on raw attention, not as a pruner over
cached features.

Examples
--------
>>> import torch
>>> c = torch.tensor([[0.1, 0.9, 0.5, 0.9],      # layer 0
...                   [0.3, 0.1, 0.7, 0.5]])     # layer 1
>>> window_score(c, [0, 1])
tensor([0.2000, 0.5000, 0.6000, 0.7000])
>>> select(c, [0, 1], 0.5)                       # k = 2: tokens 3 and 2, returned ascending
tensor([2, 3])
>>> select(c, [0], 0.5)                          # tie 0.9 / 0.9 -> both; k=1 would keep index 1
tensor([1, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage, check_finite, keep_count, top_k_indices

__all__ = ["SapPruner", "checked_window_centrality", "layer_centrality", "select", "window_score"]

Heads = Literal["mean", "max"]

def layer_centrality(
    attn: torch.Tensor,                       # [H, S, S] post-softmax, row = source, column = target
    visual_positions: torch.Tensor | Sequence[int],   # [N] sequence positions of the visual tokens
    heads: Heads = "mean",
    page_id: str = "<page>",
) -> torch.Tensor:
    """In-degree of each visual token from visual sources at one layer: ``[N]`` float32.

    ``c[h, j] = sum_i A[h, V_i, V_j]`` (self included, text sources ignored, rows not
    renormalised), then the mean (SAP-Mean) or max (SAP-Max) over heads.

    >>> import torch
    >>> a = torch.tensor([[[0.5, 0.5, 0.0],
    ...                    [0.2, 0.3, 0.5],
    ...                    [0.1, 0.6, 0.3]]])        # one head, S = 3, text token at 0
    >>> layer_centrality(a, [1, 2])                  # columns 1, 2 summed over rows 1, 2
    tensor([0.9000, 0.8000])
    """
    if attn.ndim != 3 or attn.shape[1] != attn.shape[2]:
        raise ValueError(f"attn must be [H, S, S], got shape {tuple(attn.shape)}")
    vis = torch.as_tensor(visual_positions, dtype=torch.int64)
    if vis.ndim != 1 or vis.numel() == 0:
        raise ValueError(f"page {page_id!r}: visual_positions must be a non-empty [N] list of positions")
    if int(vis.min()) < 0 or int(vis.max()) >= attn.shape[1]:
        raise ValueError(f"page {page_id!r}: visual positions out of range for a sequence of {attn.shape[1]}")
    check_finite(page_id, "attention", attn)
    block = attn[:, vis][:, :, vis].to(torch.float32)    # [H, N_src, N_tgt]
    per_head = block.sum(dim=1)                            # [H, N]
    if heads == "mean":
        return per_head.mean(dim=0)
    if heads == "max":
        return per_head.amax(dim=0)
    raise ValueError(f"heads must be 'mean' or 'max', got {heads!r}")


def window_score(centrality: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``s[j] = mean_{l in window} centrality[l, j]`` in float32; ``window`` indexes rows of ``centrality``."""
    if centrality.ndim != 2:
        raise ValueError(f"centrality must be [L, N], got shape {tuple(centrality.shape)}")
    rows = [int(w) for w in window]
    if not rows:
        raise ValueError("the window is empty: give at least one layer")
    bad = [w for w in rows if not 0 <= w < centrality.shape[0]]
    if bad:
        raise ValueError(f"window layers {bad} out of range for {centrality.shape[0]} centrality rows")
    return centrality[rows].to(torch.float32).mean(dim=0)


def select(centrality: torch.Tensor, window: Sequence[int], gamma: float) -> torch.Tensor:
    """Kept token indices ``[k]`` (int64, ascending) for ``centrality [L, N]`` over ``window`` rows."""
    s = window_score(centrality, window)
    check_finite("<page>", "centrality", s)
    return top_k_indices(s, keep_count(s.shape[0], gamma))


class SapPruner:
    """SAP over cached features: window = decoder-layer indices, scores = SAP-Mean centrality.

    >>> import torch
    >>> from anchorprune.features import PageFeatures
    >>> f = PageFeatures("p", "h", torch.eye(4), torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.0, 0.0, 1.0, 0.0]]),
    ...                  torch.zeros(2, 4), torch.arange(4), (5, 6), 8)
    >>> SapPruner([5]).prune(f, 0.5).kept, SapPruner([5, 6]).prune(f, 0.25).kept
    (tensor([1, 2]), tensor([2]))
    """

    def __init__(self, window: Sequence[int], heads: Heads = "mean") -> None:
        if heads == "max":
            raise NotImplementedError(
                "SAP-Max needs per-head attention maps, but PageFeatures stores the SAP-Mean reduction only; "
                "compute it from raw attention with layer_centrality(attn, positions, heads='max')"
            )
        if heads != "mean":
            raise ValueError(f"heads must be 'mean' or 'max', got {heads!r}")
        self.window = tuple(int(w) for w in window)
        if not self.window:
            raise ValueError("SAP needs a non-empty window of decoder layers (e.g. resolve_window('sr', ...))")
        self.heads = heads
        self.name = "sap"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        c = checked_window_centrality(features, self.window)  # [|W|, N]
        kept = select(c, range(len(self.window)), gamma)
        return PrunedPage(features.page_id, features.content_hash, features.embeddings[kept], kept)

    def __repr__(self) -> str:
        return f"SapPruner(window={list(self.window)}, heads={self.heads!r})"


def checked_window_centrality(features: PageFeatures, window: Sequence[int]) -> torch.Tensor:
    """The page's centrality rows for ``window`` (``[|W|, N]``), after checking them and the embeddings are finite."""
    c = features.centrality_for(window)                   # [|W|, N]
    check_finite(features.page_id, f"centrality (layers {list(window)})", c)
    check_finite(features.page_id, "embeddings", features.embeddings)
    return c
