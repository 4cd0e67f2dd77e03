"""Shared helpers for the index tests (imported by name; not a conftest): synthetic pages, planted queries."""

from __future__ import annotations

import torch

from anchorprune.pruning.base import PrunedPage


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def make_pages(n: int = 12, dim: int = 16, per_page: int = 6, seed: int = 0, prefix: str = "p",
               version: str = "a") -> list[PrunedPage]:
    """``n`` pages of ``per_page .. per_page + 3`` random unit vectors (different lengths on purpose)."""
    g = torch.Generator().manual_seed(seed)
    pages = []
    for i in range(n):
        k = per_page + (i % 4)
        pages.append(PrunedPage(f"{prefix}{i:03d}", f"hash-{prefix}{i}-{version}",
                                unit(torch.randn(k, dim, generator=g)), None))
    return pages


def planted_query(page: PrunedPage, m: int = 3, noise: float = 0.05, seed: int = 1) -> torch.Tensor:
    """A query ``[m, d]`` made of ``page``'s first vectors plus a little noise: that page should win."""
    g = torch.Generator().manual_seed(seed)
    v = page.vectors[:m]
    return unit(v + noise * torch.randn(v.shape, generator=g))


def brute_maxsim(q: torch.Tensor, vecs: torch.Tensor) -> float:
    return float((q.float() @ vecs.float().T).max(dim=1).values.sum())
