"""Structural Anchor Pruning (SPEC §2): keep the visual tokens with the highest in-degree.

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

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage

Heads = Literal["mean", "max"]

#: tolerance so that decimal ratios such as 0.29 * 100 count as 29, not 28.999999999999996
_FLOOR_EPS = 1e-9


def keep_count(n: int, gamma: float) -> int:
    """Tokens kept at retention fraction ``gamma``: ``max(1, min(n, floor(gamma * n)))``.

    >>> keep_count(1030, 0.1), keep_count(1, 0.01), keep_count(10, 1.0), keep_count(100, 0.29)
    (103, 1, 10, 29)
    """
    if n < 1:
        raise ValueError(f"a page needs at least one token to prune, got n={n}")
    if not (isinstance(gamma, int | float) and 0.0 < gamma <= 1.0):
        raise ValueError(f"gamma (the retention fraction kept/N) must be in (0, 1], got {gamma!r}")
    return max(1, min(n, math.floor(gamma * n + _FLOOR_EPS)))


def check_finite(name: str, what: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the page and the field when ``tensor`` holds NaN or inf.

    The check runs in numpy (single-threaded): torch's threaded reductions on page-sized tensors
    stalled for tens of milliseconds on an oversubscribed CPU.
    """
    x = tensor.detach().cpu()
    if x.dtype == torch.bfloat16:
        x = x.to(torch.float32)
    finite = np.isfinite(x.numpy())
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(f"page {name!r}: {what} contains {bad} NaN/inf value(s); re-encode the page "
                         "(a NaN usually means a bf16 overflow or a broken image)")


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest ``scores`` ``[N]``, ties to the lower index, in ascending order.

    >>> import torch
    >>> top_k_indices(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2)
    tensor([1, 2])
    """
    if scores.ndim != 1:
        raise ValueError(f"scores must be [N], got shape {tuple(scores.shape)}")
    if not 1 <= k <= scores.shape[0]:
        raise ValueError(f"k must be in [1, {scores.shape[0]}], got {k}")
    order = torch.sort(scores, descending=True, stable=True).indices  # stable: equal scores keep index order
    return torch.sort(order[:k]).values


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
        c = features.centrality_for(self.window)             # [|W|, N]
        check_finite(features.page_id, f"centrality (layers {list(self.window)})", c)
        check_finite(features.page_id, "embeddings", features.embeddings)
        kept = select(c, range(len(self.window)), gamma)
        return PrunedPage(features.page_id, features.content_hash, features.embeddings[kept], kept)

    def __repr__(self) -> str:
        return f"SapPruner(window={list(self.window)}, heads={self.heads!r})"
