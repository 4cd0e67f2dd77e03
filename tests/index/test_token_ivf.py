"""The token_ivf first stage: inverted lists over k-means of the stored token vectors (index/token_ivf.py)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from anchorprune.index.base import CorruptVersionError, IndexInputError
from anchorprune.index.local import LocalIndex
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams, auto_centroids, kmeans
from anchorprune.pruning.base import PrunedPage


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_pages(n_pages: int = 40, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token vectors ``[T, d]`` of ``n_pages`` pages of 3-9 vectors and their offsets ``[P + 1]``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 10, n_pages)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return unit(rng.standard_normal((int(offsets[-1]), dim))), offsets


def exact_maxsim(q: np.ndarray, vecs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sims = vecs @ q.T                                                           # [T, m]
    return np.array([sims[a:b].max(axis=0).sum() for a, b in zip(offsets[:-1], offsets[1:], strict=True)])


def test_every_token_is_in_exactly_one_list_its_nearest_centroid():
    vecs, offsets = random_pages()
    ivf = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams(centroids=8, seed=1))
    assert sorted(ivf.order.tolist()) == list(range(len(vecs)))                 # a permutation of the rows
    nearest = (vecs @ ivf.centroids.T).argmax(axis=1)                             # [T]
    for c in range(8):
        rows = ivf.order[ivf.list_offsets[c]:ivf.list_offsets[c + 1]]
        assert (nearest[rows] == c).all()
        assert (np.diff(rows) > 0).all()                                          # file order within a list
    page_of = np.searchsorted(offsets, np.arange(len(vecs)), side="right") - 1
    assert (ivf.token_page == page_of[ivf.order]).all()
    assert np.allclose(np.linalg.norm(ivf.centroids, axis=1), 1.0, atol=1e-5)


def test_kmeans_is_seeded_and_moves_centroids_to_the_cluster_means():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 8)))
    pts = unit(np.repeat(centres, 50, axis=0) + 0.05 * rng.standard_normal((150, 8)))
    a, b = kmeans(pts, 3, iters=10, seed=5), kmeans(pts, 3, iters=10, seed=5)
    assert np.array_equal(a, b)
    # each true centre has a centroid within a small angle (the clusters are well separated)
    assert (centres @ a.T).max(axis=1).min() > 0.99


def test_probing_every_list_gives_exact_maxsim():
    vecs, offsets = random_pages()
    ivf = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams(centroids=8))
    q = unit(np.random.default_rng(3).standard_normal((4, 16)))
    approx = ivf.approximate_scores(q, lambda rows: vecs[rows], len(offsets) - 1, nprobe=8)
    assert np.allclose(approx, exact_maxsim(q, vecs, offsets), atol=1e-5)


def test_unprobed_pages_get_the_smallest_similarity_seen_for_that_query_token():
    # 2-d: list 0 around +x, list 1 around -x; page 0 has only +x tokens, page 1 only -x tokens
    vecs = unit(np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.2], [-1.0, -0.3]]))
    ivf = TokenIvf(unit(np.array([[1.0, 0.0], [-1.0, 0.0]])), np.array([0, 2, 4]), np.arange(4, dtype=np.int32),
                   np.array([0, 0, 1, 1], dtype=np.int32), TokenIvfParams(centroids=2))
    q = unit(np.array([[1.0, 0.05]]))                                              # probes list 0 only
    approx = ivf.approximate_scores(q, lambda rows: vecs[rows], 2, nprobe=1)
    sims = vecs[:2] @ q[0]
    assert approx[0] == pytest.approx(sims.max()) and approx[1] == pytest.approx(sims.min())


def test_candidates_find_the_page_that_owns_the_query_tokens():
    vecs, offsets = random_pages(n_pages=200, seed=4)
    ivf = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams(centroids=32))
    for p in (0, 57, 199):
        q = vecs[offsets[p]:offsets[p] + 3]                                      # three of page p's own vectors
        cand = ivf.candidates(q, lambda rows: vecs[rows], 200, n=5, nprobe=2)
        assert p in cand.tolist() and len(cand) == 5 and (np.diff(cand) > 0).all()


def test_auto_centroids_and_bad_params_are_named():
    assert auto_centroids(100) == 16 and auto_centroids(10**9) == 1 << 14
    with pytest.raises(IndexInputError, match="centroids"):
        TokenIvfParams(centroids=0)
    with pytest.raises(IndexInputError, match="nprobe"):
        TokenIvfParams(nprobe=0)
    vecs, offsets = random_pages(n_pages=2)
    with pytest.raises(IndexInputError, match="centroids=64 is more than"):
        TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams(centroids=64))


# ---------------------------------------------------------------- the local index


def pruned_pages(n: int = 120, dim: int = 16, seed: int = 0) -> list[PrunedPage]:
    g = torch.Generator().manual_seed(seed)
    return [PrunedPage(f"p{i:03d}", f"h{i}", torch.nn.functional.normalize(torch.randn(int(4 + i % 5), dim,
                                                                                          generator=g), dim=1), None)
            for i in range(n)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bits"])
def test_local_token_ivf_with_every_list_probed_returns_the_exact_top_k(tmp_path, dtype):
    pages = pruned_pages()
    idx = LocalIndex(tmp_path, "ix", dtype=dtype, first_stage="token_ivf",
                     first_stage_params={"centroids": 8, "nprobe": 8}, candidates=10)
    v = idx.build(iter(pages), {"config_hash": "c"})
    idx.swap(v)
    fs = v.manifest["first_stage"]
    assert fs["name"] == "token_ivf" and fs["params"]["centroids"] == 8
    assert {"ivf_centroids.npy", "ivf_lists.npy", "ivf_order.npy", "ivf_pages.npy"} <= set(v.manifest["files"])
    exact = LocalIndex(tmp_path, "ix", first_stage="none")
    g = torch.Generator().manual_seed(9)
    for i in range(0, 120, 17):
        q = pages[i].vectors[:2] + 0.2 * torch.randn(2, 16, generator=g)
        hits, report = idx.search_report([q], k=5)
        assert (report.first_stage, report.candidates) == ("token_ivf", 10)
        want = exact.search(q, k=5)
        assert [h.page_id for h in hits[0]] == [h.page_id for h in want]
        assert [h.score for h in hits[0]] == pytest.approx([h.score for h in want], abs=1e-5)


def test_local_token_ivf_nprobe_is_a_search_setting(tmp_path, monkeypatch):
    pages = pruned_pages()
    LocalIndex(tmp_path, "ix", first_stage="token_ivf", first_stage_params={"centroids": 16}).build(
        pages, {"config_hash": "c"})
    seen = []
    real = TokenIvf.approximate_scores

    def spy(self, q, vectors, n_pages, nprobe):
        seen.append(nprobe)
        return real(self, q, vectors, n_pages, nprobe)

    monkeypatch.setattr(TokenIvf, "approximate_scores", spy)
    idx = LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10)
    idx.swap(1)
    idx.search(pages[0].vectors, k=3)                                               # the build's default: 8
    LocalIndex(tmp_path, "ix", first_stage="token_ivf", first_stage_params={"nprobe": 3}, candidates=10).search(
        pages[0].vectors, k=3)
    assert seen == [8, 3]


def test_a_version_without_lists_falls_back_to_the_mean_with_a_warning(tmp_path, caplog):
    pages = pruned_pages()
    v = LocalIndex(tmp_path, "ix").build(pages, {"config_hash": "c"})
    idx = LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10)
    idx.swap(v)
    with caplog.at_level(logging.WARNING):
        _, report = idx.search_report([pages[3].vectors], k=3)
    assert report.first_stage == "mean" and "built without token_ivf token vectors; using mean" in caplog.text


def test_damaged_inverted_lists_are_refused_on_open(tmp_path):
    pages = pruned_pages()
    idx = LocalIndex(tmp_path, "ix", first_stage="token_ivf", first_stage_params={"centroids": 8}, candidates=10)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    f = tmp_path / "ix" / "v1" / "ivf_pages.npy"
    arr = np.load(f)
    arr[:5] = 10_000                                                                # pages that do not exist
    np.save(f, arr)
    with pytest.raises(CorruptVersionError, match="ivf_pages.npy"):
        LocalIndex(tmp_path, "ix", first_stage="token_ivf", candidates=10).search(pages[0].vectors, k=3)


def test_incremental_rebuild_retrains_the_lists_over_every_page(tmp_path):
    pages = pruned_pages()
    idx = LocalIndex(tmp_path, "ix", first_stage="token_ivf", first_stage_params={"centroids": 8}, candidates=10)
    idx.swap(idx.build(pages[:100], {"config_hash": "c"}))
    v2 = idx.build(pages[100:], {"config_hash": "c"}, reuse=[p.page_id for p in pages[:100]])
    idx.swap(v2)
    pos = json.loads((tmp_path / "ix" / "v2" / "pages.json").read_text())["page_ids"]
    order = np.load(tmp_path / "ix" / "v2" / "ivf_order.npy")
    assert sorted(order.tolist()) == list(range(v2.vectors)) and len(pos) == 120
    hits = idx.search(pages[110].vectors, k=1)
    assert hits[0].page_id == "p110"
