"""EOS-attention baselines (docs/method.md §4.2): z-score rule, argmax fallback, κ calibration, realised γ, fixed k."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.features import PageFeatures
from anchorprune.pruning import build_pruner
from anchorprune.pruning.base import keep_count
from anchorprune.pruning.eos import (
    EosAdaptivePruner,
    EosTopkPruner,
    adaptive_select,
    calibrate_kappa,
    realised_gamma,
    zscores,
)


def feats(eos_rows, page_id="p", layers=None, num_layers=None):
    eos = torch.as_tensor(eos_rows, dtype=torch.float32)
    if eos.ndim == 1:
        eos = eos[None]
    n = eos.shape[1]
    layers = tuple(range(eos.shape[0])) if layers is None else layers
    return PageFeatures(page_id, "h", torch.eye(n), torch.zeros_like(eos), eos, torch.arange(n), layers,
                        num_layers or len(layers))


def test_zscores_and_adaptive_rule_by_hand():
    eos = torch.tensor([1.0, 2.0, 3.0, 10.0])
    # mean 4, unbiased std sqrt(((9 + 4 + 1 + 36) / 3)) = sqrt(50/3)
    sd = (50 / 3) ** 0.5
    assert zscores(eos).tolist() == pytest.approx([(x - 4) / (sd + 1e-8) for x in (1, 2, 3, 10)], abs=1e-6)
    assert adaptive_select(eos, 1.0).tolist() == [3]           # z(10) = 1.47
    assert adaptive_select(eos, -0.3).tolist() == [2, 3]       # z(2) = -0.49, z(3) = -0.245
    assert adaptive_select(eos, 2.0).tolist() == [3]           # nothing passes -> argmax
    assert adaptive_select(torch.tensor([0.5, 0.5]), 0.0).tolist() == [0]   # flat page: argmax, lowest index
    assert adaptive_select(torch.tensor([0.3]), 0.0).tolist() == [0]        # one token


def test_default_layer_is_the_last_decoder_layer():
    f = feats([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.9]], layers=(2, 7), num_layers=8)
    assert EosTopkPruner().prune(f, 0.25).kept.tolist() == [3]
    assert EosTopkPruner(layer=2).prune(f, 0.25).kept.tolist() == [0]
    assert build_pruner("eos_adaptive", kappa=1.0).prune(f, 0.25).kept.tolist() == [3]
    assert build_pruner("eos_adaptive", kappa=1.0, eos_layer=2).prune(f, 0.25).kept.tolist() == [0]
    g = feats([[0.1, 0.9]], layers=(0,), num_layers=8)      # last layer not captured
    with pytest.raises(KeyError, match=r"layers \[7\] were not captured"):
        EosTopkPruner().prune(g, 0.5)


def test_topk_ties_and_k_rule():
    f = feats([0.2, 0.5, 0.5, 0.1, 0.5])
    assert EosTopkPruner().prune(f, 0.4).kept.tolist() == [1, 2]
    assert EosTopkPruner().prune(f, 0.01).kept.tolist() == [1]
    out = EosTopkPruner().prune(f, 1.0)
    assert out.kept.tolist() == [0, 1, 2, 3, 4] and torch.equal(out.vectors, torch.eye(5))


def test_calibrate_kappa_pools_z_scores_by_hand():
    a = feats([0.0, 0.0, 0.0, 1.0], "a")        # z = [-0.5, -0.5, -0.5, 1.5]
    b = feats([0.0, 1.0], "b")                  # z = [-0.7071, 0.7071]
    single = feats([5.0], "single")             # skipped: no spread
    kappa = calibrate_kappa([a, b, single], 1 / 3)
    # pooled sorted: -0.707, -0.5, -0.5, -0.5, 0.707, 1.5 ; quantile 2/3 -> position 3.333 -> -0.5 + 0.333 * 1.207
    expected = -0.5 + (1 / 3) * (2 ** -0.5 + 0.5)
    assert kappa == pytest.approx(expected, abs=1e-5)
    assert realised_gamma([a, b], kappa) == pytest.approx((1 / 4 + 1 / 2) / 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.sampled_from([0.05, 0.1, 0.2, 0.5]))
def test_calibrated_kappa_hits_the_target_on_pooled_tokens(seed, gamma):
    g = torch.Generator().manual_seed(seed)
    pages = [feats(torch.rand(200, generator=g) ** 3, f"p{i}") for i in range(10)]
    kappa = calibrate_kappa(pages, gamma)
    pooled = torch.cat([zscores(p.eos_attention[0]) for p in pages])
    assert float((pooled > kappa).float().mean()) == pytest.approx(gamma, abs=0.01)
    # equal-size pages: the realised mean fraction equals the pooled fraction
    assert realised_gamma(pages, kappa) == pytest.approx(gamma, abs=0.01)


def test_adaptive_requires_kappa_and_reports_errors():
    with pytest.raises(ValueError, match="needs kappa"):
        build_pruner("eos_adaptive")
    with pytest.raises(ValueError, match="finite kappa"):
        EosAdaptivePruner(float("nan"))
    with pytest.raises(ValueError, match="at least one page"):
        calibrate_kappa([feats([1.0])], 0.1)
    bad = feats([0.1, float("inf"), 0.3], "eos-bad")
    with pytest.raises(ValueError, match="page 'eos-bad': eos_attention"):
        EosTopkPruner().prune(bad, 0.5)
    with pytest.raises(ValueError, match="page 'eos-bad': eos_attention"):
        calibrate_kappa([bad], 0.5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), gamma=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_topk_budget_and_adaptive_never_empty(n, gamma, seed):
    eos = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    f = feats(eos)
    assert len(EosTopkPruner().prune(f, gamma).kept) == keep_count(n, gamma)
    kept = EosAdaptivePruner(kappa=3.0).prune(f, gamma).kept
    assert len(kept) >= 1 and kept.tolist() == sorted(set(kept.tolist()))
