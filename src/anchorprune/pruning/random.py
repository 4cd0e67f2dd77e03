"""Random selection (docs/method.md §4.1): a uniform ``k`` of ``N`` tokens, seeded and reproducible per page.

The generator for a page is seeded from ``(seed, page_id)``, so the choice does
not depend on the order pages are pruned in, and differs between pages.

Examples
--------
>>> import torch
>>> from anchorprune.features import PageFeatures
>>> f = PageFeatures("p", "h", torch.randn(10, 4), torch.zeros(1, 10), torch.zeros(1, 10), torch.arange(10), (0,), 1)
>>> a, b = RandomPruner(seed=3).prune(f, 0.3), RandomPruner(seed=3).prune(f, 0.3)
>>> a.kept.tolist() == b.kept.tolist(), len(a.kept), bool((a.kept.diff() > 0).all())
(True, 3, True)
"""

from __future__ import annotations

import hashlib

import torch

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage, check_finite, keep_count


def page_generator(seed: int, page_id: str) -> torch.Generator:
    """A CPU generator seeded from ``(seed, page_id)`` (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{int(seed)}:{page_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def random_select(n: int, gamma: float, generator: torch.Generator) -> torch.Tensor:
    """``keep_count(n, gamma)`` distinct indices drawn uniformly, ascending ``[k]`` int64."""
    k = keep_count(n, gamma)
    return torch.sort(torch.randperm(n, generator=generator)[:k]).values


class RandomPruner:
    """Uniform random ``k`` of ``N`` (the flat reference line of every SR curve)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.name = "random"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        check_finite(features.page_id, "embeddings", features.embeddings)
        kept = random_select(features.num_tokens, gamma, page_generator(self.seed, features.page_id))
        return PrunedPage(features.page_id, features.content_hash, features.embeddings[kept], kept)

    def __repr__(self) -> str:
        return f"RandomPruner(seed={self.seed})"
