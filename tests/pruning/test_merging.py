"""Merging baselines (docs/method.md §4.3-4.4): exact tensors on hand-made pages, colpali-engine parity, properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage

from anchorprune.features import PageFeatures
from anchorprune.pruning import build_pruner
from anchorprune.pruning.base import keep_count
from anchorprune.pruning.merging import ClusterMergePruner, HierarchicalPoolPruner, pool_factor_for


def feats(emb, page_id="p"):
    n = emb.shape[0]
    return PageFeatures(page_id, "h", emb, torch.zeros(1, n), torch.zeros(1, n), torch.arange(n), (0,), 1)


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# two tight pairs: {0, 2} near the x axis, {1, 3} near the y axis
PAIRS = unit([1.0, 0.0], [0.0, 1.0], [0.98, 0.2], [0.2, 0.98])


def test_cluster_merge_hand_case_plain_means():
    out = ClusterMergePruner().prune(feats(PAIRS), 0.5)        # 2 clusters
    expected = torch.stack([(PAIRS[0] + PAIRS[2]) / 2, (PAIRS[1] + PAIRS[3]) / 2])
    assert out.kept is None
    assert torch.allclose(out.vectors, expected, atol=1e-6)
    assert (out.vectors.norm(dim=1) < 1.0).all()              # not renormalised
    single = ClusterMergePruner().prune(feats(PAIRS), 0.25)    # 1 cluster: the page mean
    assert torch.allclose(single.vectors, PAIRS.mean(dim=0, keepdim=True), atol=1e-6)
    every = ClusterMergePruner().prune(feats(PAIRS), 1.0)
    assert torch.equal(every.vectors, PAIRS)


def test_cluster_merge_uses_cosine_not_euclidean():
    # token 1 is token 0 scaled: cosine distance 0, euclidean distance large
    emb = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    out = build_pruner("cluster_merge").prune(feats(emb), 0.5)
    assert torch.allclose(out.vectors, torch.tensor([[3.0, 0.0], [0.05, 1.0]]), atol=1e-6)


def test_cluster_merge_exact_count_with_tied_distances():
    emb = unit(*([[0.6, 0.8]] * 6))
    out = ClusterMergePruner().prune(feats(emb), 0.5)
    assert out.vectors.shape == (3, 2)
    assert torch.allclose(out.vectors, emb[:3], atol=1e-6)


def test_hier_pool_hand_case_mean_then_normalise():
    out = HierarchicalPoolPruner().prune(feats(PAIRS), 0.5)    # pool_factor 2 -> 2 clusters
    expected = unit((PAIRS[0] + PAIRS[2]).tolist(), (PAIRS[1] + PAIRS[3]).tolist())
    assert torch.allclose(out.vectors, expected, atol=1e-6)
    assert torch.allclose(out.vectors.norm(dim=1), torch.ones(2), atol=1e-6)


def test_pool_factor_and_edge_sizes():
    assert [pool_factor_for(g) for g in (0.2, 0.1, 0.05, 1 / 4, 1 / 9, 1 / 25, 1 / 49, 0.9)] == [
        5, 10, 20, 4, 9, 25, 49, 1]
    unchanged = HierarchicalPoolPruner().prune(feats(PAIRS), 0.9)
    assert torch.equal(unchanged.vectors, PAIRS)
    one = HierarchicalPoolPruner().prune(feats(torch.tensor([[3.0, 4.0]])), 0.1)
    assert torch.allclose(one.vectors, torch.tensor([[0.6, 0.8]]))
    assert ClusterMergePruner().prune(feats(torch.tensor([[3.0, 4.0]])), 0.1).vectors.tolist() == [[3.0, 4.0]]


def colpali_engine_reference(emb: torch.Tensor, pool_factor: int) -> list[tuple[frozenset, torch.Tensor]]:
    """colpali-engine HierarchicalTokenPooler._pool_single_embedding, rewritten for the test."""
    distances = 1 - torch.mm(emb, emb.t()).numpy()
    with warnings.catch_warnings():   # scipy rightly suspects a distance matrix used as observations
        warnings.simplefilter("ignore")
        z = linkage(distances, metric="euclidean", method="ward")
    max_clusters = max(emb.shape[0] // pool_factor, 1)
    labels = fcluster(z, t=max_clusters, criterion="maxclust") - 1
    out = []
    for cid in range(max_clusters):
        idx = np.flatnonzero(labels == cid)
        if idx.size:
            out.append((frozenset(idx.tolist()),
                        torch.nn.functional.normalize(emb[torch.from_numpy(idx)].mean(dim=0), dim=-1)))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), gamma=st.sampled_from([0.5, 0.34, 0.2, 0.1, 0.05]))
def test_hier_pool_matches_colpali_engine_algorithm(seed, n, gamma):
    emb = torch.nn.functional.normalize(torch.randn(n, 8, generator=torch.Generator().manual_seed(seed)), dim=-1)
    ours = HierarchicalPoolPruner().prune(feats(emb), gamma).vectors
    ref = colpali_engine_reference(emb, pool_factor_for(gamma))
    assert ours.shape[0] == len(ref)
    ref_sorted = sorted(ref, key=lambda c: min(c[0]))
    assert torch.allclose(ours, torch.stack([v for _, v in ref_sorted]), atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), gamma=st.floats(0.02, 1.0))
def test_cluster_merge_budget_and_means_inside_the_hull(seed, n, gamma):
    emb = torch.nn.functional.normalize(torch.randn(n, 6, generator=torch.Generator().manual_seed(seed)), dim=-1)
    out = ClusterMergePruner().prune(feats(emb), gamma).vectors
    assert out.shape == (keep_count(n, gamma), 6)
    assert (out.norm(dim=1) <= 1.0 + 1e-5).all()              # means of unit vectors, not renormalised


@pytest.mark.parametrize("pruner", [ClusterMergePruner(), HierarchicalPoolPruner()])
def test_bad_pages_raise_naming_the_page(pruner):
    emb = PAIRS.clone()
    emb[1, 0] = float("nan")
    with pytest.raises(ValueError, match="page 'merge-bad': embeddings"):
        pruner.prune(feats(emb, "merge-bad"), 0.5)


def test_zero_vector_has_no_cosine():
    emb = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="page 'z': token 1 has a zero vector"):
        ClusterMergePruner().prune(feats(emb, "z"), 0.5)


def test_ward_observations_keep_the_row_distances():
    from scipy.spatial.distance import pdist

    from anchorprune.pruning.merging import ward_observations

    emb = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    rows = (1.0 - emb.to(torch.float64) @ emb.to(torch.float64).T).numpy()       # [30, 30]
    obs = ward_observations(emb)
    assert obs.shape == (30, 8)                                                     # d < N: d columns
    np.testing.assert_allclose(pdist(obs), pdist(rows), rtol=1e-9, atol=1e-9)
    small = ward_observations(emb[:5])                                              # d >= N: the rows
    np.testing.assert_allclose(small, rows[:5, :5], atol=1e-12)


def test_one_linkage_per_page_cut_at_every_gamma_equals_separate_runs():
    g = torch.Generator().manual_seed(3)
    pages = [feats(torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1), page_id=f"p{n}")
             for n in (25, 40, 33)]
    shared = HierarchicalPoolPruner()
    gammas = (0.5, 0.2, 0.1, 0.05)
    for gamma in gammas:
        for f in pages:
            fresh = HierarchicalPoolPruner(cache_pages=0).prune(f, gamma).vectors
            assert torch.equal(shared.prune(f, gamma).vectors, fresh)
    assert shared.linkages_computed == len(pages)                 # once per page, not once per (page, gamma)
    # a page whose vectors changed is not served from the cache
    changed = feats(pages[0].embeddings.flip(0), page_id=pages[0].page_id)
    shared.prune(changed, 0.1)
    assert shared.linkages_computed == len(pages) + 1


def test_linkage_cache_is_bounded():
    g = torch.Generator().manual_seed(4)
    pruner = HierarchicalPoolPruner(cache_pages=2)
    pages = [feats(torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=-1)) for _ in range(3)]
    for f in pages + pages[:1]:                                     # page 0 was evicted by page 2
        pruner.prune(f, 0.25)
    assert pruner.linkages_computed == 4 and len(pruner._linkages) == 2
