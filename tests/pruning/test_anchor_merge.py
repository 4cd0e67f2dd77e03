"""Anchor-guided merging: hand-computed pages, order invariance, gamma = 1, position prior."""

from __future__ import annotations

import pytest
import torch
from anchor_pages import feats

from anchorprune.pruning import METHODS, AnchorMergePruner, Pruner, build_pruner
from anchorprune.pruning.anchor_merge import assign_to_anchors, position_mask, weighted_group_means

# 6 tokens in 2-D: three around the x axis, three around the y axis
EMB = torch.tensor([[1.0, 0.0],     # 0  anchor (score 5)
                    [0.0, 1.0],     # 1  anchor (score 4)
                    [0.8, 0.6],     # 2  -> anchor 0 (cos 0.8 vs 0.6)
                    [0.6, 0.8],     # 3  -> anchor 1 (cos 0.6 vs 0.8)
                    [3.0, 0.0],     # 4  -> anchor 0 (cos 1.0; its length counts in the mean)
                    [-0.1, 1.0]])   # 5  -> anchor 1
SCORES = [5.0, 4.0, 1.0, 2.0, 1.0, 0.0]


def test_hand_case_members_and_weighted_means():
    out = AnchorMergePruner([0]).prune(feats(EMB, SCORES), 2 / 6)           # k = 2: anchors 0 and 1
    assert out.kept is None and out.vectors.shape == (2, 2)
    g0 = 5 * EMB[0] + 1 * EMB[2] + 1 * EMB[4]          # [8.8, 0.6]
    g1 = 4 * EMB[1] + 2 * EMB[3] + 0 * EMB[5]          # [1.2, 5.6]
    expected = torch.stack([g0 / g0.norm(), g1 / g1.norm()])
    assert torch.allclose(out.vectors, expected, atol=1e-6)
    assert torch.allclose(out.vectors, torch.tensor([[0.997683, 0.068024], [0.209529, 0.977802]]), atol=1e-5)


def test_assignment_is_cosine_not_dot_product():
    # token 2 has a larger dot product with anchor 1 (length 5) but a larger cosine with anchor 0
    emb = torch.tensor([[1.0, 0.0], [0.0, 5.0], [0.9, 0.8]])
    assert assign_to_anchors(emb, torch.tensor([0, 1])).tolist() == [0, 1, 0]


def test_tie_goes_to_the_lower_anchor_and_anchor_joins_itself():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])              # all identical
    assert assign_to_anchors(emb, torch.tensor([1, 2])).tolist() == [0, 0, 1]


def test_window_is_mean_of_layer_rows():
    # layer 0 prefers token 2, layer 1 token 0; the window mean s = [2, 0, 1.5] picks token 0
    cent = [[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    one = AnchorMergePruner([0]).prune(feats(emb, cent), 1 / 3).vectors      # anchor 2, weights [0, 0, 3]
    both = AnchorMergePruner([0, 1]).prune(feats(emb, cent), 1 / 3).vectors  # anchor 0: 2*[1,0] + 1.5*[0,1]
    assert torch.allclose(one, torch.tensor([[0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(both, torch.tensor([[0.8, 0.6]]), atol=1e-6)


def test_zero_weight_group_falls_back_to_plain_mean():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    out = weighted_group_means(emb, torch.tensor([0, 1, 1]), torch.tensor([1.0, 0.0, 0.0]), 2)
    g1 = emb[1] + emb[2]
    assert torch.allclose(out, torch.stack([emb[0], g1 / g1.norm()]), atol=1e-6)


def test_gamma_one_returns_the_page():
    page = feats(EMB, SCORES)
    out = AnchorMergePruner([0]).prune(page, 1.0)
    assert torch.equal(out.vectors, EMB)


def test_invariant_to_token_order():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=-1)
    cent = torch.rand(2, 40, generator=g)          # distinct scores: no tie in the anchor choice
    perm = torch.randperm(40, generator=g)
    a = AnchorMergePruner([0, 1]).prune(feats(emb, cent), 0.2).vectors
    b = AnchorMergePruner([0, 1]).prune(feats(emb[perm], cent[:, perm]), 0.2).vectors
    assert a.shape == b.shape == (8, 8)
    # same set of vectors; rows follow the anchors' token order, which the permutation changes
    sa = sorted(map(tuple, a.round(decimals=5).tolist()))
    sb = sorted(map(tuple, b.round(decimals=5).tolist()))
    assert sa == sb


def test_position_prior_restricts_reach():
    # anchors 0 and 2; token 3 is most similar to anchor 0 but 3 positions away: radius 1 sends it to anchor 2
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.9, 0.1]])
    cent = [5.0, 1.0, 4.0, 1.0]
    anchors = torch.tensor([0, 2])
    assert assign_to_anchors(emb, anchors).tolist() == [0, 1, 1, 0]
    assert assign_to_anchors(emb, anchors, position_mask(torch.arange(4), anchors, 1)).tolist() == [0, 1, 1, 1]
    free = build_pruner("anchor_merge", window=[0]).prune(feats(emb, cent), 0.5).vectors
    near = build_pruner("anchor_merge", window=[0], radius=1).prune(feats(emb, cent), 0.5).vectors
    g0, g1 = torch.tensor([5.9, 0.1]), torch.tensor([0.9, 5.1])
    assert torch.allclose(free, torch.stack([g0 / g0.norm(), torch.tensor([0.0, 1.0])]), atol=1e-6)
    assert torch.allclose(near, torch.stack([torch.tensor([1.0, 0.0]), g1 / g1.norm()]), atol=1e-6)
    # no anchor in reach: the token falls back to the most similar anchor overall
    far = position_mask(torch.tensor([0, 10, 20, 50]), anchors, 1)
    assert assign_to_anchors(emb, anchors, far).tolist() == [0, 1, 1, 0]


def test_grid_mask_is_chebyshev_on_patch_grid():
    # 3 x 3 grid, anchor at the centre (index 4) and the corner (index 0), radius 1
    m = position_mask(torch.arange(9), torch.tensor([0, 4]), 1, grid_cols=3)
    assert m[:, 0].tolist() == [True, True, False, True, True, False, False, False, False]
    assert m[:, 1].all()


def test_registered_and_a_pruner():
    assert "anchor_merge" in METHODS
    p = build_pruner("anchor_merge", window=[1, 2])
    assert isinstance(p, Pruner) and p.name == "anchor_merge"
    with pytest.raises(ValueError, match="window"):
        build_pruner("anchor_merge")
    with pytest.raises(ValueError, match="radius"):
        AnchorMergePruner([0], radius=-1)


def test_bad_pages_raise_naming_the_page():
    emb = EMB.clone()
    emb[1, 0] = float("nan")
    with pytest.raises(ValueError, match="'bad'"):
        AnchorMergePruner([0]).prune(feats(emb, SCORES, page_id="bad"), 0.5)
