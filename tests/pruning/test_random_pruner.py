"""Random selection baseline (docs/method.md §4.1): seeded, per-page, uniform, the k rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.features import PageFeatures
from anchorprune.pruning import build_pruner
from anchorprune.pruning.base import keep_count
from anchorprune.pruning.random import RandomPruner


def feats(n, page_id="p", d=4, seed=0):
    emb = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return PageFeatures(page_id, "h", emb, torch.zeros(1, n), torch.zeros(1, n), torch.arange(n), (0,), 1)


def test_seeded_reproducible_and_independent_of_order():
    a, b = feats(50, "a"), feats(50, "b")
    p = RandomPruner(seed=7)
    first = [p.prune(a, 0.1).kept.tolist(), p.prune(b, 0.1).kept.tolist()]
    second = [RandomPruner(7).prune(b, 0.1).kept.tolist(), RandomPruner(7).prune(a, 0.1).kept.tolist()]
    assert first == second[::-1]
    assert first[0] != first[1]                                    # pages differ
    assert RandomPruner(8).prune(a, 0.1).kept.tolist() != first[0]  # seeds differ
    assert build_pruner("random", seed=7).prune(a, 0.1).kept.tolist() == first[0]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 200), gamma=st.floats(1e-4, 1.0), seed=st.integers(0, 1000))
def test_k_rule_sorted_unique_and_vectors_match(n, gamma, seed):
    f = feats(n)
    out = RandomPruner(seed).prune(f, gamma)
    kept = out.kept.tolist()
    assert len(kept) == keep_count(n, gamma)
    assert kept == sorted(set(kept))
    assert kept[0] >= 0 and kept[-1] < n
    assert torch.equal(out.vectors, f.embeddings[out.kept])
    if gamma == 1.0:
        assert kept == list(range(n))


def test_roughly_uniform_over_many_seeds():
    f = feats(20)
    counts = torch.zeros(20)
    for seed in range(400):
        counts[RandomPruner(seed).prune(f, 0.25).kept] += 1
    # each token is kept with probability 5/20 -> 100 of 400 draws; binomial sd ~ 8.7
    assert counts.min() > 60 and counts.max() < 140


def test_non_finite_embeddings_raise_naming_the_page():
    f = feats(5, "bad-page")
    f.embeddings[2, 0] = float("nan")
    with pytest.raises(ValueError, match="page 'bad-page': embeddings"):
        RandomPruner(0).prune(f, 0.4)
