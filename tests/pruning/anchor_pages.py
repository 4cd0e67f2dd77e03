"""Shared by the anchor_merge and anchor_kmeans tests (imported by name; not a conftest): a hand-made page."""

from __future__ import annotations

import torch

from anchorprune.features import PageFeatures


def feats(emb, cent, page_id="p", positions=None):
    """A page with embeddings ``emb [N, d]`` and centrality rows ``cent`` (one per captured layer)."""
    n = emb.shape[0]
    cent = torch.as_tensor(cent, dtype=torch.float32).reshape(-1, n)
    pos = torch.arange(n) if positions is None else torch.as_tensor(positions)
    return PageFeatures(page_id, "h", emb, cent, torch.zeros_like(cent), pos, tuple(range(cent.shape[0])),
                        cent.shape[0])
