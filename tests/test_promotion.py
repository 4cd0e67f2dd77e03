import numpy as np
import pytest

from anchorprune.promotion.rule import Candidate, certify, choose_champion, gate


def cand(method="sap", gamma=0.1, retention=0.95, vectors=10.0, random=0.7, window="2-3", low=None, vs_low=0.1,
         n=50):
    low = retention - 0.02 if low is None else low
    return Candidate("bb", method, gamma, window, retention, vectors, random, retention_low=low,
                     retention_high=retention + 0.02, vs_random_low=vs_low, vs_random_high=vs_low + 0.1,
                     confidence=0.95, num_queries=n)


# ------------------------------------------------------------------ the bootstrap
def test_identical_or_scaled_runs_have_degenerate_intervals():
    full = np.array([1.0, 0.5, 0.0, 1.0, 0.63] * 8)
    ci = certify(full, full, full * 0.5, resamples=300, seed=1)
    assert (ci.retention, ci.retention_low, ci.retention_high) == pytest.approx((1.0, 1.0, 1.0))
    assert (ci.vs_random, ci.vs_random_low, ci.vs_random_high) == pytest.approx((0.5, 0.5, 0.5))
    assert ci.num_queries == 40 and ci.confidence == 0.95


def test_seeded_and_paired():
    rng = np.random.default_rng(3)
    full = rng.uniform(0.3, 1.0, 60)
    pruned = full * rng.uniform(0.8, 1.0, 60)
    a = certify(pruned, full, None, resamples=500, seed=7)
    assert a == certify(pruned, full, None, resamples=500, seed=7)
    assert a.retention_low < a.retention < a.retention_high and a.vs_random is None
    # paired: a pruned run equal to random on every query differs by exactly 0, whatever the spread
    same = certify(pruned, full, pruned, resamples=500, seed=7)
    assert same.vs_random_low == same.vs_random_high == 0.0


def test_a_mean_above_the_bar_on_few_noisy_queries_is_not_certified():
    # the demo case: mean retention ~0.90 on ~50 queries where some queries lose the gold page
    full = np.ones(53)
    pruned = np.ones(53)
    pruned[:10] = 0.5                       # 10 queries fall to rank 3: mean 0.906
    ci = certify(pruned, full, np.full(53, 0.4), resamples=2000, seed=0)
    assert ci.retention > 0.90 and ci.retention_low < 0.90
    c = cand(retention=ci.retention, low=ci.retention_low, vs_low=ci.vs_random_low)
    assert "retention lower bound" in gate(c, 0.90, True)
    assert gate(c, 0.80, True) is None      # the same figures certify a lower bar


def test_groups_give_a_macro_average():
    full = np.ones(6)
    pruned = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    ci = certify(pruned, full, None, groups=["a", "a", "a", "b", "b", "b", ][:6], resamples=200)
    assert ci.retention == pytest.approx(0.75)
    ci = certify(pruned[:4], full[:4], None, groups=["a", "a", "a", "b"], resamples=200)
    assert ci.retention == pytest.approx((1.0 + 0.5) / 2)          # macro, not 3.5 / 4
    assert ci.retention_low == pytest.approx(0.75)                 # each group resampled within itself


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="per-query arrays"):
        certify([1.0], [1.0, 1.0], None)
    with pytest.raises(ValueError, match="confidence"):
        certify([1.0], [1.0], None, confidence=1.0)


# ------------------------------------------------------------------ the rule
def test_fewest_vectors_that_pass_wins():
    cs = [cand(gamma=0.2, vectors=20), cand(gamma=0.1, vectors=10), cand(gamma=0.05, vectors=5, retention=0.8)]
    d = choose_champion(cs, 0.9)
    assert d.promoted and d.champion.gamma == 0.1
    assert any(n == "sap@0.05[2-3]" and "lower bound 0.7800 < 0.9000" in w for n, w in d.rejected)


def test_tie_on_vectors_goes_to_higher_retention():
    cs = [cand(method="eos_topk", window=None, retention=0.93), cand(retention=0.97)]
    assert choose_champion(cs, 0.9).champion.method == "sap"


def test_must_be_certified_better_than_random():
    assert "not certified better than random" in gate(cand(vs_low=0.0), 0.9, True)
    assert gate(cand(vs_low=-0.05), 0.9, False) is None
    assert gate(cand(method="random"), 0.9, True) == "random cannot beat random"
    assert "full is the reference" in gate(cand(method="full", gamma=1.0), 0.9, True)
    uncertified = Candidate("bb", "sap", 0.1, "2-3", 0.99, 1.0, 0.5)
    assert "not certified" in gate(uncertified, 0.9, True)


def test_better_challenger_moves_alias_worse_keeps_it():
    current = cand(gamma=0.1, vectors=10)
    better = cand(gamma=0.05, vectors=5, retention=0.95)
    worse = cand(gamma=0.2, vectors=20)
    d = choose_champion([better, current], 0.9, current=current)
    assert d.promoted and d.champion == better and "beats current" in d.reason
    d = choose_champion([worse, current], 0.9, current=current)
    assert not d.promoted and d.champion == current and "the alias stays" in d.reason


def test_current_is_judged_on_the_fresh_figures():
    old = cand(gamma=0.05, vectors=5, retention=0.97)            # what the registry says (an older evaluation)
    fresh = cand(gamma=0.05, vectors=5, retention=0.85)          # the same config on the current data
    challenger = cand(gamma=0.1, vectors=10, retention=0.95)
    d = choose_champion([fresh, challenger], 0.9, current=old)
    assert d.promoted and d.champion == challenger and "fails the gate on current data" in d.reason
    # the old champion's better-looking tags would have blocked the challenger
    assert old.sort_key() < challenger.sort_key()


def test_failing_champion_without_replacement_is_kept_stale():
    current = cand(gamma=0.05, vectors=5)
    d = choose_champion([cand(gamma=0.05, vectors=5, retention=0.8), cand(retention=0.7)], 0.9, current=current)
    assert not d.promoted and d.stale and d.champion.key == current.key and "STALE" in d.reason


def test_champion_missing_from_the_evaluation_is_replaced():
    current = cand(method="eos_topk", window=None, gamma=0.05, vectors=5)
    d = choose_champion([cand()], 0.9, current=current)
    assert d.promoted and "was not re-evaluated" in d.reason


def test_too_few_queries_certifies_nothing():
    current = cand(gamma=0.2, vectors=20)
    d = choose_champion([cand(n=8), cand(gamma=0.2, vectors=20, n=8)], 0.9, current=current, min_queries=20)
    assert not d.promoted and d.champion == current and "too few to certify" in d.reason
    d = choose_champion([cand(n=8)], 0.9, min_queries=20)
    assert d.champion is None and "there is no champion" in d.reason


def test_no_candidate_passes_leaves_no_champion():
    d = choose_champion([cand(retention=0.5)], 0.9)
    assert d.champion is None and not d.promoted and "there is no champion" in d.reason


def test_tags_round_trip_and_are_compact():
    c = cand()
    assert Candidate.from_tags(c.to_tags()) == c
    assert all(len(v) < 40 for v in c.to_tags().values())
    bare = Candidate("bb", "eos_topk", 0.1, None, 0.95, 3.0, None)
    assert Candidate.from_tags(bare.to_tags()) == bare and "anchorprune.window" not in bare.to_tags()


@pytest.mark.parametrize("window", [None, "4-5"])
def test_name(window):
    assert cand(window=window).name == ("sap@0.1" if window is None else "sap@0.1[4-5]")
