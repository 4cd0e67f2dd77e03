"""The Pruner contract, and the helpers every pruner uses (budget, finiteness check, stable top-k)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from anchorprune.features import PageFeatures


@dataclass(frozen=True)
class PrunedPage:
    """What an index stores for a page.

    ``kept`` holds the kept token indices (ascending) for selection methods, and
    ``None`` for merging methods, which create new vectors.
    """

    page_id: str
    content_hash: str
    vectors: torch.Tensor             # [k, d]
    kept: torch.Tensor | None         # [k] int64 or None


@runtime_checkable
class Pruner(Protocol):
    """A pure function of the features cache (seeded where random)."""

    name: str

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        ...


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
