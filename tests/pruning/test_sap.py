"""SAP (docs/method.md §2): in-degree on paper, the k rule, selection rules, properties, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.evaluation.scoring import maxsim
from anchorprune.features import PageFeatures
from anchorprune.pruning import build_pruner
from anchorprune.pruning.base import keep_count
from anchorprune.pruning.sap import SapPruner, layer_centrality, select, window_score


def feats(emb, centrality, layers, num_layers, page_id="p1", eos=None):
    n = emb.shape[0]
    return PageFeatures(page_id, "hash", emb, centrality, eos if eos is not None else torch.zeros(len(layers), n),
                        torch.arange(n) + 1, tuple(layers), num_layers)


# ---------------------------------------------------------------- layer_centrality on paper
def test_four_token_page_by_hand():
    # sequence: [bos, v0, v1, v2, v3, eos]  -> visual positions 1..4; two heads
    h0 = torch.zeros(6, 6)
    h1 = torch.zeros(6, 6)
    # head 0: every visual row sends 0.5 to v0 and 0.5 to itself (v0's row: 1.0 to v0)
    for i in range(1, 5):
        h0[i, 1] += 0.5
        h0[i, i] += 0.5
    # head 1: v rows split between bos (text, ignored) and v3
    for i in range(1, 5):
        h1[i, 0] = 0.6
        h1[i, 4] = 0.4
    # text rows point at visual tokens but are not sources
    h0[0, 2] = h1[5, 3] = 1.0
    attn = torch.stack([h0, h1])
    # head 0 in-degree: v0 = 0.5*4 + 0.5 (own row) = 2.5, v1 = v2 = v3 = 0.5
    # head 1 in-degree: v0 = v1 = v2 = 0, v3 = 0.4 * 4 = 1.6
    mean = layer_centrality(attn, [1, 2, 3, 4])
    assert mean.tolist() == pytest.approx([1.25, 0.25, 0.25, 1.05])
    assert layer_centrality(attn, [1, 2, 3, 4], heads="max").tolist() == pytest.approx([2.5, 0.5, 0.5, 1.6])
    assert mean.dtype == torch.float32


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), heads=st.integers(1, 3), seq=st.integers(2, 9), data=st.data())
def test_layer_centrality_equals_naive_loop(seed, heads, seq, data):
    vis = sorted(data.draw(st.sets(st.integers(0, seq - 1), min_size=1)))
    g = torch.Generator().manual_seed(seed)
    attn = torch.softmax(torch.randn(heads, seq, seq, generator=g), dim=-1)
    naive = [[sum(float(attn[h, i, j]) for i in vis) for j in vis] for h in range(heads)]
    got_mean = layer_centrality(attn, vis)
    got_max = layer_centrality(attn, vis, heads="max")
    for n, _ in enumerate(vis):
        assert float(got_mean[n]) == pytest.approx(sum(naive[h][n] for h in range(heads)) / heads, abs=1e-6)
        assert float(got_max[n]) == pytest.approx(max(naive[h][n] for h in range(heads)), abs=1e-6)


def test_layer_centrality_rejects_bad_input():
    attn = torch.full((1, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match="out of range"):
        layer_centrality(attn, [1, 3])
    with pytest.raises(ValueError, match=r"\[H, S, S\]"):
        layer_centrality(torch.ones(3, 3), [0])
    with pytest.raises(ValueError, match="heads must be"):
        layer_centrality(attn, [0], heads="sum")
    attn[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="page 'pg-7': attention contains 1 NaN"):
        layer_centrality(attn, [0, 1], page_id="pg-7")


# ---------------------------------------------------------------- k rule
@pytest.mark.parametrize(("n", "gamma", "k"), [
    (1, 0.05, 1), (1, 1.0, 1), (19, 0.05, 1), (20, 0.05, 1), (40, 0.05, 2), (1030, 0.1, 103),
    (1030, 0.05, 51), (10, 1.0, 10), (3, 1e-9, 1), (100, 0.29, 29), (7, 0.999, 6),
])
def test_keep_count_edges(n, gamma, k):
    assert keep_count(n, gamma) == k


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.01, float("nan"), "0.1"])
def test_keep_count_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        keep_count(10, gamma)
    with pytest.raises(ValueError, match="at least one token"):
        keep_count(0, 0.5)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5000), gamma=st.floats(1e-6, 1.0))
def test_keep_count_property(n, gamma):
    k = keep_count(n, gamma)
    assert 1 <= k <= n
    if gamma * n >= 1:
        assert k in (math.floor(gamma * n), math.floor(gamma * n + 1e-9))


# ---------------------------------------------------------------- select
def test_select_hand_case_window_mean_ties_and_order():
    c = torch.tensor([[4.0, 1.0, 3.0, 1.0, 0.0],
                      [0.0, 3.0, 1.0, 1.0, 2.0]])
    # window mean: [2, 2, 2, 1, 1] -> ties among 0, 1, 2 go to lower indices
    assert window_score(c, [0, 1]).tolist() == [2.0, 2.0, 2.0, 1.0, 1.0]
    assert select(c, [0, 1], 0.4).tolist() == [0, 1]
    assert select(c, [1], 0.4).tolist() == [1, 4]       # returned ascending, not by score
    assert select(c, [0], 0.2).tolist() == [0]
    assert select(c, [0, 1], 1.0).tolist() == [0, 1, 2, 3, 4]
    assert select(c, [0, 1], 1.0).dtype == torch.int64


def test_select_accumulates_in_float32():
    c = torch.tensor([[1.0, 1.0009765625], [1.0, 1.0]], dtype=torch.float16)
    assert select(c, [0, 1], 0.5).tolist() == [1]


def test_select_rejects_bad_windows():
    c = torch.ones(2, 3)
    with pytest.raises(ValueError, match="out of range"):
        select(c, [2], 0.5)
    with pytest.raises(ValueError, match="empty"):
        select(c, [], 0.5)


def _distinct(seed: int, layers: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(layers * n, generator=g).reshape(layers, n).to(torch.float32) / (layers * n)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), gamma=st.floats(0.01, 1.0), layers=st.integers(1, 4))
def test_permuting_tokens_permutes_the_selection(seed, n, gamma, layers):
    c = _distinct(seed, layers, n)
    # a single-layer mean of distinct values stays distinct; use the first row as the window
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    kept = select(c, [0], gamma)
    kept_perm = select(c[:, perm], [0], gamma)
    assert sorted(perm[kept_perm].tolist()) == kept.tolist()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), m=st.integers(1, 5), gamma=st.floats(0.01, 1.0))
def test_sap_subset_retains_at_most_everything_and_gamma_one_keeps_all(seed, n, m, gamma):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    f = feats(emb, torch.rand(3, n, generator=g), (0, 1, 2), 3)
    q = torch.randn(m, 8, generator=g)
    full = float(maxsim(q, [emb])[0])
    pruned = SapPruner([0, 2]).prune(f, gamma)
    assert pruned.vectors.shape == (keep_count(n, gamma), 8)
    assert torch.equal(pruned.vectors, emb[pruned.kept])
    assert float(maxsim(q, [pruned.vectors])[0]) <= full + 1e-6
    everything = SapPruner([1]).prune(f, 1.0)
    assert everything.kept.tolist() == list(range(n))
    assert float(maxsim(q, [everything.vectors])[0]) == pytest.approx(full, abs=1e-6)


# ---------------------------------------------------------------- SapPruner over PageFeatures
def test_sap_pruner_uses_decoder_layer_ids_not_row_numbers():
    emb = torch.eye(4)
    c = torch.tensor([[0.0, 0.0, 0.0, 9.0],     # decoder layer 10
                      [9.0, 0.0, 0.0, 0.0]])    # decoder layer 11
    f = feats(emb, c, (10, 11), 18)
    out = SapPruner([11]).prune(f, 0.25)
    assert out.kept.tolist() == [0]
    assert out.page_id == "p1" and out.content_hash == "hash"
    assert build_pruner("sap", window=[10]).prune(f, 0.25).kept.tolist() == [3]
    with pytest.raises(KeyError, match=r"layers \[12\] were not captured"):
        SapPruner([12]).prune(f, 0.25)


def test_sap_max_and_bad_windows_are_explained():
    with pytest.raises(NotImplementedError, match="stores the SAP-Mean reduction only"):
        build_pruner("sap_max", window=[1])
    with pytest.raises(ValueError, match="needs window"):
        build_pruner("sap")
    with pytest.raises(ValueError, match="unknown pruning method 'sapp'"):
        build_pruner("sapp")


@pytest.mark.parametrize("field", ["embeddings", "centrality"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise_naming_the_page(field, bad):
    emb = torch.eye(3)
    c = torch.ones(2, 3)
    (emb if field == "embeddings" else c)[1, 1] = bad
    f = feats(emb, c, (0, 1), 2, page_id="doc-42#3")
    with pytest.raises(ValueError, match=rf"page 'doc-42#3': {field}.*NaN/inf"):
        SapPruner([0, 1]).prune(f, 0.5)


@settings(max_examples=50, deadline=None)
@given(
    method=st.sampled_from(["sap", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool"]),
    field=st.sampled_from(["embeddings", "centrality", "eos_attention"]),
    bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    n=st.integers(2, 12),
    data=st.data(),
)
def test_non_finite_anywhere_raises_for_every_pruner(method, field, bad, n, data):
    g = torch.Generator().manual_seed(n)
    emb = torch.nn.functional.normalize(torch.rand(n, 4, generator=g) + 0.1, dim=-1)
    cent, eos = torch.rand(2, n, generator=g), torch.rand(2, n, generator=g)
    target = {"embeddings": emb, "centrality": cent, "eos_attention": eos}[field]
    i = data.draw(st.integers(0, target.shape[0] - 1))
    j = data.draw(st.integers(0, target.shape[1] - 1))
    target[i, j] = bad
    f = feats(emb, cent, (0, 1), 2, page_id="pg-nan", eos=eos)
    pruner = build_pruner(method, window=[0, 1], kappa=0.5)
    reads = {"sap": {"embeddings", "centrality"}, "random": {"embeddings"}, "cluster_merge": {"embeddings"},
             "hier_pool": {"embeddings"}, "eos_adaptive": {"embeddings", "eos_attention"},
             "eos_topk": {"embeddings", "eos_attention"}}[method]
    if field in reads and not (field == "eos_attention" and i != 1):   # EOS reads the last layer only
        with pytest.raises(ValueError, match=r"page 'pg-nan'.*NaN/inf"):
            pruner.prune(f, 0.5)
    else:
        out = pruner.prune(f, 0.5)                                       # fields a method never reads
        assert torch.isfinite(out.vectors).all()
