"""The Pruner contract: turn one page's features into the vectors that get stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
