import pytest

from anchorprune.promotion import Candidate, choose_champion, gate


def cand(method="sap", gamma=0.1, retention=0.95, vectors=10.0, random=0.7, window="2-3"):
    return Candidate("bb", method, gamma, window, retention, vectors, random)


def test_fewest_vectors_that_pass_wins():
    cs = [cand(gamma=0.2, vectors=20), cand(gamma=0.1, vectors=10), cand(gamma=0.05, vectors=5, retention=0.8)]
    d = choose_champion(cs, 0.9)
    assert d.promoted and d.champion.gamma == 0.1
    assert ("sap@0.05[2-3]", "retention 0.8000 < 0.9000") in d.rejected


def test_tie_on_vectors_goes_to_higher_retention():
    cs = [cand(method="eos_topk", window=None, retention=0.93), cand(retention=0.97)]
    assert choose_champion(cs, 0.9).champion.method == "sap"


def test_must_beat_random_at_same_gamma():
    c = cand(retention=0.95, random=0.96)
    assert "does not beat random" in gate(c, 0.9, True)
    assert gate(c, 0.9, False) is None
    assert gate(cand(method="random"), 0.9, True) == "random cannot beat random"
    assert "full is the reference" in gate(cand(method="full", gamma=1.0), 0.9, True)


def test_better_challenger_moves_alias_worse_keeps_it():
    current = cand(gamma=0.1, vectors=10)
    better = cand(gamma=0.05, vectors=5, retention=0.91)
    worse = cand(gamma=0.2, vectors=20)
    d = choose_champion([better], 0.9, current=current)
    assert d.promoted and d.champion == better and "beats current" in d.reason
    d = choose_champion([worse], 0.9, current=current)
    assert not d.promoted and d.champion == current and "the alias stays" in d.reason


def test_no_candidate_passes_leaves_no_champion():
    d = choose_champion([cand(retention=0.5)], 0.9)
    assert d.champion is None and not d.promoted and "there is no champion" in d.reason


def test_tags_round_trip():
    c = cand()
    assert Candidate.from_tags(c.to_tags()) == c


@pytest.mark.parametrize("window", [None, "4-5"])
def test_name(window):
    assert cand(window=window).name == ("sap@0.1" if window is None else "sap@0.1[4-5]")
