"""Score retention and the SR-guided window (docs/method.md §3): aggregates, the per-layer curve, Algorithm 1, specs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.evaluation.retention import (
    score_retention,
    select_sr_window,
    sr_curve,
    sr_mean_of_ratios,
    sr_ratio_of_means,
)
from anchorprune.evaluation.scoring import maxsim
from anchorprune.features import PageFeatures
from anchorprune.windows import WindowError, resolve_window


def page(emb, centrality, page_id="p", layers=None, eos=None):
    n = emb.shape[0]
    layers = tuple(range(centrality.shape[0])) if layers is None else layers
    return PageFeatures(page_id, "h", emb, centrality, eos if eos is not None else torch.zeros_like(centrality),
                        torch.arange(n), layers, len(layers))


# ---------------------------------------------------------------- aggregates
def test_score_retention_per_pair():
    assert score_retention(0.5, 2.0) == 0.25
    assert score_retention(0.5, 0.0) is None
    assert score_retention(-0.1, -1.0) is None
    with pytest.raises(ValueError, match="finite"):
        score_retention(float("nan"), 1.0)


def test_aggregates_by_hand_and_exclusions_counted():
    pruned = [1.0, 3.0, 0.5, 0.2]
    full = [2.0, 4.0, 0.0, -1.0]
    rom = sr_ratio_of_means(pruned, full)
    mor = sr_mean_of_ratios(pruned, full)
    assert rom.value == pytest.approx(2.0 / 3.0)           # mean(1, 3) / mean(2, 4)
    assert mor.value == pytest.approx((0.5 + 0.75) / 2)
    assert (rom.pairs, rom.excluded) == (2, 2)
    assert (mor.pairs, mor.excluded) == (2, 2)
    none_left = sr_mean_of_ratios([1.0], [0.0])
    assert math.isnan(none_left.value) and none_left.excluded == 1 and none_left.pairs == 0


def test_aggregates_reject_bad_input():
    with pytest.raises(ValueError, match="2 pruned scores but 1 full"):
        sr_ratio_of_means([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="full score of pair 1 is inf"):
        sr_mean_of_ratios([1.0, 2.0], torch.tensor([1.0, float("inf")]))


# ---------------------------------------------------------------- per-layer curve
def _planted_pairs():
    # token 0 carries the query signal; layer 0 points at it, layer 1 at token 3, layer 2 at token 0 again
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.28, 0.96]])
    c = torch.tensor([[5.0, 1.0, 1.0, 1.0],
                      [1.0, 1.0, 1.0, 5.0],
                      [3.0, 0.0, 2.0, 0.0]])
    q = torch.tensor([[1.0, 0.0]])                      # full MaxSim = 1.0 (token 0)
    return [(q, page(emb, c, "a")), (-q, page(emb, c, "b"))]   # second pair: full score 0 -> excluded


def test_sr_curve_hand_case():
    pairs = _planted_pairs()
    curve = sr_curve(pairs, gamma=0.25, random_trials=5, seed=0)   # k = 1
    assert curve.layers == (0, 1, 2)
    assert curve.mean == pytest.approx([1.0, 0.28, 1.0])
    assert curve.std == [0.0, 0.0, 0.0]
    assert (curve.num_pairs, curve.excluded) == (1, 1)
    assert curve.per_pair.shape == (1, 3)
    # random reference: each draw keeps one of the 4 tokens -> SR in {1, 0.6, 0, 0.28}
    assert len(curve.random_trial_means) == 5
    assert all(v in (pytest.approx(1.0), pytest.approx(0.6), 0.0, pytest.approx(0.28))
               for v in curve.random_trial_means)
    assert curve.random_mean == [pytest.approx(sum(curve.random_trial_means) / 5)] * 3
    again = sr_curve(pairs, gamma=0.25, random_trials=5, seed=0)
    assert again.random_trial_means == curve.random_trial_means


def test_sr_curve_eos_scorer_and_errors():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eos = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    f = page(emb, torch.zeros(2, 2), "e", eos=eos)
    curve = sr_curve([(torch.tensor([[1.0, 0.0]]), f)], gamma=0.5, scorer="eos")
    assert curve.mean == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="all 1 pairs"):
        sr_curve([(torch.tensor([[-1.0, 0.0]]), f)], gamma=0.5)
    other = page(emb, torch.zeros(3, 2), "o")
    with pytest.raises(ValueError, match="page 'o' captured layers"):
        sr_curve([(torch.tensor([[1.0, 0.0]]), f), (torch.tensor([[1.0, 0.0]]), other)])
    bad = page(emb, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), "nan-page")
    with pytest.raises(ValueError, match="page 'nan-page': centrality"):
        sr_curve([(torch.tensor([[1.0, 0.0]]), bad)])
    with pytest.raises(ValueError, match="at least one"):
        sr_curve([])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), gamma=st.floats(0.02, 1.0), pairs=st.integers(1, 4))
def test_sr_curve_properties(seed, n, gamma, pairs):
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(pairs):
        emb = torch.nn.functional.normalize(torch.rand(n, 6, generator=g) + 0.1, dim=-1)   # positive: full > 0
        data.append((torch.rand(3, 6, generator=g), page(emb, torch.rand(4, n, generator=g), f"p{i}")))
    curve = sr_curve(data, gamma=gamma, random_trials=2, seed=seed)
    assert all(0.0 < v <= 1.0 + 1e-9 for v in curve.mean)
    assert all(0.0 < v <= 1.0 + 1e-9 for v in curve.random_mean)
    full_curve = sr_curve(data, gamma=1.0, random_trials=2)
    assert full_curve.mean == pytest.approx([1.0] * 4)
    assert full_curve.random_mean == pytest.approx([1.0] * 4)
    # the per-pair value equals a direct MaxSim ratio
    q, f = data[0]
    from anchorprune.pruning.sap import select

    kept = select(f.centrality, [2], gamma)
    direct = float(maxsim(q, [f.embeddings[kept]])[0] / maxsim(q, [f.embeddings])[0])
    assert float(curve.per_pair[0, 2]) == pytest.approx(direct, abs=1e-5)


# ---------------------------------------------------------------- Algorithm 1
@pytest.mark.parametrize(("num_layers", "drop_at", "width"), [(18, 12, 4), (28, 20, 6), (36, 30, 8)])
def test_window_widths_for_the_three_backbones(num_layers, drop_at, width):
    # rises to a plateau, then collapses from layer `drop_at` to the end
    sr = [0.5 + 0.4 * min(1.0, i / 6) for i in range(drop_at)] + [0.3] * (num_layers - drop_at)
    w = select_sr_window(sr, rho=0.2)
    assert len(w.layers) == width
    assert w.layers == list(range(drop_at - width, drop_at))
    assert (w.start, w.end) == (drop_at - width, drop_at)
    assert w.alpha == pytest.approx((drop_at - width) / num_layers)
    assert w.beta == pytest.approx(drop_at / num_layers)


def test_window_hand_case_with_median():
    sr = [0.2, 0.5, 0.8, 0.9, 0.85, 0.7, 0.4, 0.3, 0.35, 0.1]    # 10 layers, median 0.45
    w = select_sr_window(sr, rho=0.2)
    assert w.median == pytest.approx(0.45)
    # trailing run below 0.45: layers 6..9 -> l* = 6; w = 2
    assert w.layers == [4, 5]


def test_window_without_trailing_region_ends_at_the_last_layer():
    sr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    w = select_sr_window(sr, rho=0.2)
    assert w.layers == [8, 9]
    assert (w.end, w.beta) == (10, 1.0)


def test_window_clipped_at_layer_zero():
    # the median bounds the trailing run to about half the layers, so clipping needs a wide rho
    sr = [0.9, 0.8, 0.7, 0.1, 0.1, 0.1]                         # median 0.4 -> l* = 3
    w = select_sr_window(sr, rho=0.8)                           # w = ceil(4.8) = 5 > l*: clipped to [0, 3)
    assert w.layers == [0, 1, 2]
    assert (w.start, w.end, w.alpha, w.beta) == (0, 3, 0.0, 0.5)


def test_window_ties_at_the_median_are_not_low():
    sr = [0.9, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.15, 0.1, 0.1]    # median 0.1; SR[9] = 0.1 is not < 0.1
    assert select_sr_window(sr, rho=0.2).layers == [8, 9]


def test_window_width_guard_against_float_error():
    sr = [1.0] * 20 + [0.0] * 15                                # L = 35, 0.2 * 35 = 7.000000000000001
    assert len(select_sr_window(sr, rho=0.2).layers) == 7


def test_window_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        select_sr_window([])
    with pytest.raises(ValueError, match=r"layers \[1\] is not finite"):
        select_sr_window([0.5, float("nan"), 0.2])
    with pytest.raises(ValueError, match="rho"):
        select_sr_window([0.5, 0.4], rho=0.0)


# ---------------------------------------------------------------- window specs
def test_resolve_window_specs():
    assert resolve_window("v1", 18, kind="colpali") == [8, 9, 10, 11]
    assert resolve_window("v2", 28, kind="colqwen2") == list(range(18, 24))
    assert resolve_window("v1", 36, kind="jina-v4") == list(range(14, 22))
    assert resolve_window("v2", 18, kind="colpali-engine") == [11, 12, 13, 14]
    assert resolve_window("0-0", 1) == [0]
    assert resolve_window("sr", 4, sr_window=(1, 2)) == [1, 2]


@pytest.mark.parametrize(("spec", "kwargs", "message"), [
    ("v2", {"kind": "mock", "num_layers": 6}, "no published v1/v2 window for backbone kind 'mock'"),
    ("v1", {"kind": "minilm-text", "num_layers": 6}, "no published"),
    ("v1", {"kind": "colpali-engine", "num_layers": 36}, "no published"),
    ("v2", {"kind": "colpali", "num_layers": 4}, "assume 18 decoder layers"),
    ("sr", {"num_layers": 4}, "run `anchorprune calibrate` first"),
    ("3-9", {"num_layers": 6}, r"layers \[6, 7, 8, 9\] outside 0..5"),
    ("5-2", {"num_layers": 6}, "inclusive range"),
    ("middle", {"num_layers": 6}, "inclusive range"),
])
def test_resolve_window_errors(spec, kwargs, message):
    with pytest.raises(WindowError, match=message):
        resolve_window(spec, **kwargs)
