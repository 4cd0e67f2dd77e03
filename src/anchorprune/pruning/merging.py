"""Merging baselines (docs/method.md §4.3-4.4): they create new vectors instead of selecting tokens.

- **Cluster-Merge** (:class:`ClusterMergePruner`, a training-free stand-in for
  Light-ColPali): ``max(1, floor(N * gamma))`` clusters by agglomerative clustering
  with average linkage on the distance ``1 - cosine``; each cluster becomes the
  plain mean of its members (not renormalised). The tree is cut so that exactly
  that many clusters come out (``scipy.cluster.hierarchy.cut_tree``).
- **Hierarchical pooling** (:class:`HierarchicalPoolPruner`, colpali-engine's
  ``HierarchicalTokenPooler``): ``pool_factor = round(1 / gamma)``; Ward linkage,
  ``fcluster(..., t=max(N // pool_factor, 1), criterion="maxclust")`` (which may give
  fewer clusters on tied merge heights), each cluster's mean then L2-normalised.
  As in colpali-engine, Ward runs on the rows of the ``1 - similarity`` matrix
  (each token described by its distances to all tokens), and ``pool_factor = 1``
  returns the page unchanged. The linkage is computed once per page (scipy ``pdist`` on
  ``d``-dimensional points with the same distances as those rows, :func:`ward_observations`)
  and cached by the pruner, so every ``gamma`` cuts the same tree.

Output vectors are ordered by the lowest token index in each cluster.

Examples
--------
>>> import torch
>>> e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
>>> merge_clusters(e, torch.tensor([0, 0, 1, 2]))
tensor([[ 0.9000,  0.3000],
        [ 0.0000,  1.0000],
        [-1.0000,  0.0000]])
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch
from scipy.cluster.hierarchy import cut_tree, fcluster, linkage
from scipy.spatial.distance import pdist

from anchorprune.features import PageFeatures
from anchorprune.pruning.base import PrunedPage, check_finite, keep_count


def merge_clusters(embeddings: torch.Tensor, labels: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """Mean of each cluster ``[C, d]``, clusters ordered by their lowest member index."""
    labels = labels.to(torch.int64)
    order = []
    seen = set()
    for lab in labels.tolist():
        if lab not in seen:
            seen.add(lab)
            order.append(lab)
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(order)] = torch.arange(len(order))
    dense = remap[labels]                                            # [N] cluster rank
    emb = embeddings.to(torch.float32)
    sums = torch.zeros(len(order), emb.shape[1], dtype=torch.float32).index_add_(0, dense, emb)
    counts = torch.bincount(dense, minlength=len(order)).to(torch.float32)
    means = sums / counts[:, None]
    if normalise:
        means = torch.nn.functional.normalize(means, p=2, dim=-1)
    return means


def _check_nonzero(features: PageFeatures) -> None:
    norms = features.embeddings.to(torch.float32).norm(dim=1)
    if (norms == 0).any():
        j = int(torch.nonzero(norms == 0)[0, 0])
        raise ValueError(f"page {features.page_id!r}: token {j} has a zero vector; cosine distance is undefined")


def cluster_merge_labels(embeddings: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Average-linkage labels ``[N]`` on ``1 - cosine`` with exactly ``n_clusters`` clusters."""
    n = embeddings.shape[0]
    if n_clusters >= n:
        return torch.arange(n)
    if n_clusters == 1:
        return torch.zeros(n, dtype=torch.int64)
    x = embeddings.to(torch.float64).numpy()
    dist = np.clip(pdist(x, metric="cosine"), 0.0, None)             # 1 - cos, condensed
    z = linkage(dist, method="average")
    return torch.from_numpy(cut_tree(z, n_clusters=n_clusters).ravel().astype(np.int64))


def ward_observations(embeddings: torch.Tensor) -> np.ndarray:
    """Points whose Euclidean distances equal those between the rows of ``1 - E E^T``: ``[N, min(N, d)]`` float64.

    colpali-engine runs Ward on the rows ``r_i = 1 - E e_i`` (``[N, N]``). Since
    ``r_i - r_j = -E (e_i - e_j)``, ``|r_i - r_j|^2 = (e_i - e_j)^T C (e_i - e_j)`` with ``C = E^T E``
    (``[d, d]``); with ``C = V diag(lam) V^T``, the points ``y_i = diag(sqrt(lam)) V^T e_i`` have the
    same pairwise distances in ``d`` dimensions instead of ``N``. When ``d >= N`` the rows are used as they are.
    """
    x = embeddings.to(torch.float64)                                    # [N, d]
    n, d = x.shape
    if d >= n:
        return (1.0 - x @ x.T).numpy()                                  # [N, N] the rows themselves
    lam, vec = torch.linalg.eigh(x.T @ x)                               # [d], [d, d]
    return (x @ vec * lam.clamp_min(0.0).sqrt()).numpy()               # [N, d]


def ward_linkage(embeddings: torch.Tensor) -> np.ndarray:
    """Ward linkage ``[N - 1, 4]`` over the rows of ``1 - E E^T`` (Euclidean distances from ``pdist``)."""
    return linkage(pdist(ward_observations(embeddings), metric="euclidean"), method="ward")


def ward_pool_labels(embeddings: torch.Tensor, max_clusters: int, z: np.ndarray | None = None) -> torch.Tensor:
    """colpali-engine's labels: Ward on rows of ``1 - E E^T``, ``fcluster(maxclust)``.

    ``z`` is the page's :func:`ward_linkage` when already computed (cut it at any number of clusters).
    """
    z = ward_linkage(embeddings) if z is None else z
    return torch.from_numpy(fcluster(z, t=max_clusters, criterion="maxclust").astype(np.int64) - 1)


class ClusterMergePruner:
    """Average-linkage cluster means (un-renormalised), ``max(1, floor(N * gamma))`` of them."""

    def __init__(self) -> None:
        self.name = "cluster_merge"

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        check_finite(features.page_id, "embeddings", features.embeddings)
        _check_nonzero(features)
        k = keep_count(features.num_tokens, gamma)
        labels = cluster_merge_labels(features.embeddings, k)
        vecs = merge_clusters(features.embeddings, labels).to(features.embeddings.dtype)
        return PrunedPage(features.page_id, features.content_hash, vecs, None)

    def __repr__(self) -> str:
        return "ClusterMergePruner()"


def pool_factor_for(gamma: float) -> int:
    """``round(1 / gamma)`` (Python rounding), at least 1.

    >>> pool_factor_for(0.1), pool_factor_for(0.05), pool_factor_for(1 / 9), pool_factor_for(0.9)
    (10, 20, 9, 1)
    """
    keep_count(1, gamma)  # validates gamma
    return max(1, round(1.0 / gamma))


class HierarchicalPoolPruner:
    """colpali-engine's hierarchical token pooling at ``pool_factor = round(1 / gamma)``.

    The Ward linkage of a page does not depend on ``gamma``: it is computed once per page and
    kept (up to ``cache_pages`` pages, least recently used dropped first, keyed by a hash of the
    page's vectors), so pruning the same pages at several ``gamma`` cuts one tree per page.
    ``cache_pages=0`` disables the cache.
    """

    def __init__(self, cache_pages: int = 4096) -> None:
        if cache_pages < 0:
            raise ValueError(f"cache_pages must be >= 0, got {cache_pages}")
        self.name = "hier_pool"
        self.cache_pages = int(cache_pages)
        self._linkages: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.linkages_computed = 0     # how many linkages this pruner has computed (cache misses)

    def linkage_for(self, embeddings: torch.Tensor) -> np.ndarray:
        """The page's Ward linkage, from the cache when this pruner has seen the same vectors."""
        if self.cache_pages == 0:
            self.linkages_computed += 1
            return ward_linkage(embeddings)
        x = embeddings.detach().cpu().contiguous()
        key = (tuple(x.shape), str(x.dtype), hashlib.blake2b(x.view(torch.uint8).numpy(), digest_size=16).digest())
        z = self._linkages.get(key)
        if z is None:
            z = ward_linkage(embeddings)
            self.linkages_computed += 1
            self._linkages[key] = z
            if len(self._linkages) > self.cache_pages:
                self._linkages.popitem(last=False)
        else:
            self._linkages.move_to_end(key)
        return z

    def prune(self, features: PageFeatures, gamma: float) -> PrunedPage:
        check_finite(features.page_id, "embeddings", features.embeddings)
        pool_factor = pool_factor_for(gamma)
        n = features.num_tokens
        if pool_factor == 1 or n == 1:
            vecs = features.embeddings if pool_factor == 1 else torch.nn.functional.normalize(
                features.embeddings.to(torch.float32), dim=-1).to(features.embeddings.dtype)
            return PrunedPage(features.page_id, features.content_hash, vecs, None)
        labels = ward_pool_labels(features.embeddings, max(n // pool_factor, 1), self.linkage_for(features.embeddings))
        vecs = merge_clusters(features.embeddings, labels, normalise=True).to(features.embeddings.dtype)
        return PrunedPage(features.page_id, features.content_hash, vecs, None)

    def __repr__(self) -> str:
        return "HierarchicalPoolPruner()"
