"""Anchor-seeded k-means: hand-computed Lloyd steps, iters=1 == anchor_merge, gamma = 1, empty groups."""

from __future__ import annotations

import pytest
import torch
from anchor_pages import feats

from anchorprune.pruning import METHODS, AnchorKMeansPruner, AnchorMergePruner, Pruner, build_pruner
from anchorprune.pruning.anchor_kmeans import lloyd_labels
from anchorprune.pruning.anchor_merge import position_mask


def unit_deg(deg: float) -> list[float]:
    r = torch.deg2rad(torch.tensor(deg))
    return [float(torch.cos(r)), float(torch.sin(r))]


# 5 unit tokens at 0, 60, 20, 170 and 175 degrees; the scores make tokens 0 and 1 the anchors (k = 2 at 2/5)
MOVE = torch.tensor([unit_deg(0), unit_deg(60), unit_deg(20), unit_deg(170), unit_deg(175)])
MOVE_S = torch.tensor([5.0, 4.0, 1.0, 2.0, 3.0])


def test_lloyd_step_moves_a_token_between_groups():
    # step 1 (anchor_merge's): 20 -> a0 (20 < 40 deg); 170 -> a1 (110 < 170); 175 -> a1 (115 < 175): [0, 1, 0, 1, 1]
    # plain centres: c0 = mean(0, 20) at 10 deg; c1 = mean(60, 170, 175) = (-1.48100, 1.12684) at 142.7 deg
    # step 2: the anchor a1 (60 deg) is 50 deg from c0 and 82.7 from c1 -> moves to group 0: [0, 0, 0, 1, 1]
    # step 3: c0 = mean(0, 60, 20), c1 = mean(170, 175) at 172.5 deg; nothing moves -> stops after 3 steps
    anchors = torch.tensor([0, 1])
    one, _, steps1 = lloyd_labels(MOVE, anchors, torch.ones(5), iters=1)
    assert one.tolist() == [0, 1, 0, 1, 1] and steps1 == 1
    labels, centres, steps = lloyd_labels(MOVE, anchors, torch.ones(5), iters=10)
    assert labels.tolist() == [0, 0, 0, 1, 1] and steps == 3
    assert torch.allclose(centres[1], torch.tensor(unit_deg(172.5)), atol=1e-6)
    two, _, steps2 = lloyd_labels(MOVE, anchors, torch.ones(5), iters=2)      # the cap: 2 assignment steps
    assert two.tolist() == [0, 0, 0, 1, 1] and steps2 == 2

    # final vectors: s-weighted means of the final groups, L2-normalised (anchor_merge keeps a1 with 170/175)
    out = AnchorKMeansPruner([0], iters=2, weighted=False).prune(feats(MOVE, MOVE_S), 2 / 5).vectors
    g0, g1 = 5 * MOVE[0] + 4 * MOVE[1] + 1 * MOVE[2], 2 * MOVE[3] + 3 * MOVE[4]
    assert torch.allclose(out, torch.stack([g0 / g0.norm(), g1 / g1.norm()]), atol=1e-6)
    merged = AnchorMergePruner([0]).prune(feats(MOVE, MOVE_S), 2 / 5).vectors
    h0, h1 = 5 * MOVE[0] + 1 * MOVE[2], 4 * MOVE[1] + 2 * MOVE[3] + 3 * MOVE[4]
    assert torch.allclose(merged, torch.stack([h0 / h0.norm(), h1 / h1.norm()]), atol=1e-6)


def test_weighted_centres_hold_a_heavy_anchor():
    # scores [5, 20, 1, 1, 1]: anchors 0 and 1 again. Weighted c1 = 20 * (60 deg) + (170) + (175) stays near
    # 60 deg, so a1 keeps its group (plain centres move it, as above): converged at step 2 = anchor_merge.
    s = torch.tensor([5.0, 20.0, 1.0, 1.0, 1.0])
    c0 = torch.nn.functional.normalize(5 * MOVE[0] + MOVE[2], dim=0)
    c1 = torch.nn.functional.normalize(20 * MOVE[1] + MOVE[3] + MOVE[4], dim=0)
    assert float(MOVE[1] @ c1) > float(MOVE[1] @ c0)
    weighted, _, steps = lloyd_labels(MOVE, torch.tensor([0, 1]), s, iters=10)
    assert weighted.tolist() == [0, 1, 0, 1, 1] and steps == 2
    plain, _, _ = lloyd_labels(MOVE, torch.tensor([0, 1]), torch.ones(5), iters=10)
    assert plain.tolist() == [0, 0, 0, 1, 1]
    page = feats(MOVE, s)
    assert torch.equal(AnchorKMeansPruner([0], iters=10, weighted=True).prune(page, 0.4).vectors,
                       AnchorMergePruner([0]).prune(page, 0.4).vectors)


def test_converged_at_step_one_equals_anchor_merge():
    g = torch.Generator().manual_seed(3)
    # two tight, well-separated clusters: step 2 reassigns nothing
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    emb = torch.cat([base[0] + 0.05 * torch.randn(6, 3, generator=g), base[1] + 0.05 * torch.randn(6, 3, generator=g)])
    cent = torch.rand(2, 12, generator=g)
    cent[0, 0], cent[0, 6] = 10.0, 9.0                       # anchors: one per cluster
    page = feats(emb, cent)
    x = torch.nn.functional.normalize(emb, dim=-1)
    _, _, steps = lloyd_labels(x, torch.tensor([0, 6]), torch.ones(12), iters=10)
    assert steps == 2                                        # one Lloyd step, no change, stop
    ref = AnchorMergePruner([0, 1]).prune(page, 2 / 12).vectors
    for iters in (1, 2, 5, 10):
        for weighted in (True, False):
            out = AnchorKMeansPruner([0, 1], iters=iters, weighted=weighted).prune(page, 2 / 12).vectors
            assert torch.equal(out, ref)


def test_iters_one_is_anchor_merge_on_random_pages():
    g = torch.Generator().manual_seed(0)
    for n, gamma in ((40, 0.2), (57, 0.1), (9, 0.5)):
        emb = torch.randn(n, 8, generator=g)
        cent = torch.rand(2, n, generator=g)
        for radius in (None, 3):
            a = AnchorMergePruner([0, 1], radius=radius).prune(feats(emb, cent), gamma).vectors
            b = AnchorKMeansPruner([0, 1], iters=1, radius=radius).prune(feats(emb, cent), gamma).vectors
            assert torch.equal(a, b)


def test_gamma_one_returns_the_page():
    emb = torch.tensor([unit_deg(0), unit_deg(60), unit_deg(20)])
    out = AnchorKMeansPruner([0], iters=5).prune(feats(emb, [3.0, 2.0, 1.0]), 1.0)
    assert torch.equal(out.vectors, emb) and out.kept is None


def test_empty_group_keeps_its_centre_and_the_page_keeps_k_vectors():
    # anchors 0, 1, 2 (k = 3 of 4); tokens 0 and 1 are the same vector [1, 0], token 3 = [0.1, 1] -> a2
    # step 1 pins each anchor to its own group: [0, 1, 2, 2]; centres c0 = c1 = [1, 0], c2 = mean([0, 1], t3)
    # step 2: token 1 ties between c0 and c1 -> the lower group 0; group 1 is empty: [0, 0, 2, 2]
    # step 3: group 1 keeps its centre [1, 0]; token 1 ties again -> 0; no change -> stop
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])
    x = torch.nn.functional.normalize(emb, dim=-1)
    labels, centres, steps = lloyd_labels(x, torch.tensor([0, 1, 2]), s, iters=10)
    assert labels.tolist() == [0, 0, 2, 2] and steps == 3
    assert torch.equal(centres[1], torch.tensor([1.0, 0.0]))
    out = AnchorKMeansPruner([0], iters=10).prune(feats(emb, s), 0.75).vectors
    g2 = 2 * emb[2] + 1 * emb[3]                                   # [0.1, 3]
    assert out.shape == (3, 2)                                     # k rows: the empty group returns its centre
    assert torch.allclose(out, torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), g2 / g2.norm()]),
                          atol=1e-6)


def test_position_prior_limits_reach_in_every_step():
    # the MOVE page at positions [0, 10, 1, 11, 12]: a0 at 0, a1 at 10. With radius 2 the anchor a1 may not
    # join group 0 (10 tokens away), so the plain-centre Lloyd step that moved it without the prior cannot
    anchors = torch.tensor([0, 1])
    pos = torch.tensor([0, 10, 1, 11, 12])
    allowed = position_mask(pos, anchors, 2)                       # [N, k]
    assert allowed.tolist() == [[True, False], [False, True], [True, False], [False, True], [False, True]]
    free, _, _ = lloyd_labels(MOVE, anchors, torch.ones(5), iters=5)
    near, _, _ = lloyd_labels(MOVE, anchors, torch.ones(5), iters=5, allowed=allowed)
    assert free.tolist() == [0, 0, 0, 1, 1]
    assert near.tolist() == [0, 1, 0, 1, 1]
    out = AnchorKMeansPruner([0], iters=5, weighted=False, radius=2).prune(feats(MOVE, MOVE_S, positions=pos), 0.4)
    ref = AnchorMergePruner([0], radius=2).prune(feats(MOVE, MOVE_S, positions=pos), 0.4)
    assert torch.equal(out.vectors, ref.vectors)


def test_registered_and_a_pruner():
    assert "anchor_kmeans" in METHODS
    p = build_pruner("anchor_kmeans", window=[1, 2])
    assert isinstance(p, Pruner) and p.name == "anchor_kmeans"
    assert build_pruner("anchor_kmeans", window=[1], iters=7, weighted=False).iters == 7
    with pytest.raises(ValueError, match="window"):
        build_pruner("anchor_kmeans")
    with pytest.raises(ValueError, match="iters .* got 0"):
        AnchorKMeansPruner([0], iters=0)
    with pytest.raises(ValueError, match="got 11"):
        AnchorKMeansPruner([0], iters=11)
    with pytest.raises(ValueError, match="radius"):
        AnchorKMeansPruner([0], radius=-1)


def test_deterministic_and_bad_pages_raise_naming_the_page():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(30, 4, generator=g)
    cent = torch.rand(1, 30, generator=g)
    a = AnchorKMeansPruner([0], iters=5).prune(feats(emb, cent), 0.2).vectors
    b = AnchorKMeansPruner([0], iters=5).prune(feats(emb, cent), 0.2).vectors
    assert torch.equal(a, b) and a.shape == (6, 4)
    emb[1, 0] = float("nan")
    with pytest.raises(ValueError, match="'bad'"):
        AnchorKMeansPruner([0]).prune(feats(emb, cent, page_id="bad"), 0.5)


def test_grid_config_accepts_it_as_a_windowed_method():
    from anchorprune.config import EvaluateConfig
    from anchorprune.evaluation.grid import WINDOWED
    from anchorprune.serving.viewer import MERGING

    assert EvaluateConfig(methods=("sap", "anchor_kmeans")).methods == ("sap", "anchor_kmeans")
    assert "anchor_kmeans" in WINDOWED and "anchor_kmeans" in MERGING


def test_grid_evaluates_it_per_window_like_anchor_merge():
    from anchorprune.evaluation.grid import evaluate_grid, grid_jobs
    from anchorprune.features.encoding import EncodedCorpus

    assert grid_jobs(["anchor_kmeans"], [0.4], {"sr": [0]}) == [("anchor_kmeans", 0.4, "sr", (0,))]
    corpus = EncodedCorpus("hand", 1, {"a": feats(MOVE, MOVE_S, page_id="a"), "b": feats(MOVE[[3, 4, 2, 0, 1]], MOVE_S,
                                                                                         page_id="b")},
                           {"q": MOVE[[1]].clone()})
    res = evaluate_grid(corpus, {"q": {"a": 1}}, ["q"], ["anchor_kmeans", "anchor_merge"], [0.4], {"sr": [0]},
                        random_trials=1, progress=False)
    by = {c.method: c for c in res.configs}
    assert by["anchor_kmeans"].vectors_per_page == by["anchor_merge"].vectors_per_page == 2
    # page a: anchor_merge keeps the 60-degree anchor's own group; the plain Lloyd step merges it into group 0
    vecs = AnchorKMeansPruner([0]).prune(feats(MOVE, MOVE_S), 0.4).vectors
    merged = AnchorMergePruner([0]).prune(feats(MOVE, MOVE_S), 0.4).vectors
    # one gold pair (q, a) and a full score of 1 (q is token 1 itself): SR = the best pruned similarity
    assert by["anchor_kmeans"].sr_mean_of_ratios == pytest.approx(float((MOVE[1] @ vecs.T).max()), abs=1e-5)
    assert by["anchor_merge"].sr_mean_of_ratios == pytest.approx(float((MOVE[1] @ merged.T).max()), abs=1e-5)
    assert by["anchor_kmeans"].window == by["anchor_merge"].window == "0-0"
