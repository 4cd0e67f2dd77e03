"""First stages: MUVERA FDE against a loop-by-loop reading of the paper, its MaxSim approximation, and
search through the local index with each first stage (candidates are always rescored exactly)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from anchorprune.index.base import IndexInputError
from anchorprune.index.first_stage import (
    MeanFirstStage,
    MuveraFirstStage,
    make_first_stage,
    top_candidates,
)
from anchorprune.limits import ES_MAX_DIMS


# ---------------------------------------------------------------- a direct reading of arXiv 2405.19504
def reference_fde(fs: MuveraFirstStage, vecs: np.ndarray, document: bool) -> np.ndarray:
    """FDE written as loops over repetitions, buckets and vectors, with fs's random matrices."""
    vecs = vecs.astype(np.float64)
    blocks = []
    for r in range(fs.reps):
        def bucket(x, r=r):
            return sum(1 << i for i in range(fs.k_sim) if float(x @ fs.gauss[r][:, i]) > 0)

        def psi(x, r=r):
            if fs.proj is None:
                return x
            return (fs.proj[r].T.astype(np.float64) @ x) / np.sqrt(fs.d_proj)

        members = {b: [x for x in vecs if bucket(x) == b] for b in range(fs.buckets)}
        for b in range(fs.buckets):
            if members[b]:
                s = sum(psi(x) for x in members[b])
                blocks.append(s / len(members[b]) if document else s)
            elif document and fs.fill_empty:
                ham = [bin(bucket(x) ^ b).count("1") for x in vecs]
                blocks.append(psi(vecs[ham.index(min(ham))]))      # first vector at the least distance
            else:
                blocks.append(np.zeros(fs.block))
    out = np.concatenate(blocks)
    if fs.final is not None:
        out = fs.final.T.astype(np.float64) @ out / np.sqrt(fs.final_dim)
    return out


def maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


CONFIGS = [
    dict(k_sim=0, d_proj=None, reps=1),
    dict(k_sim=2, d_proj=None, reps=1),
    dict(k_sim=3, d_proj=4, reps=2),
    dict(k_sim=4, d_proj=3, reps=3, final_dim=20),
    dict(k_sim=3, d_proj=None, reps=2, fill_empty=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_fde_matches_the_loop_definition(cfg):
    rng = np.random.default_rng(3)
    fs = MuveraFirstStage.create(dim=6, seed=11, **cfg)
    for n in (1, 2, 7, 40):           # few vectors leave buckets empty; many fill them
        x = rng.standard_normal((n, 6)).astype(np.float32)
        np.testing.assert_allclose(fs.encode_document(x), reference_fde(fs, x, document=True), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fs.encode_query(x), reference_fde(fs, x, document=False), rtol=1e-4, atol=1e-5)
        assert fs.encode_document(x).shape == (fs.dims,)


def _axis_stage(k_sim: int, fill_empty: bool = True) -> MuveraFirstStage:
    """One repetition, no projection, hyperplane i = the i-th axis: bucket bit i = [x_i > 0]."""
    gauss = np.eye(2, k_sim, dtype=np.float32)[None]                 # [1, d=2, k_sim]
    return MuveraFirstStage(2, k_sim, None, 1, None, 0, fill_empty, gauss, None, None)


def test_partition_sums_for_queries_and_averages_for_documents():
    fs = _axis_stage(k_sim=1)                                         # bucket 1: x > 0, bucket 0: x <= 0
    x = np.array([[1.0, 0.0], [2.0, 1.0], [-1.0, 0.5]], np.float32)
    assert fs.codes(x)[:, 0].tolist() == [1, 1, 0]
    assert fs.encode_document(x).tolist() == [-1.0, 0.5, 1.5, 0.5]   # bucket 0 | mean of bucket 1
    assert fs.encode_query(x).tolist() == [-1.0, 0.5, 3.0, 1.0]      # bucket 0 | sum of bucket 1


def test_empty_document_buckets_take_the_nearest_vector_by_hamming_distance():
    fs = _axis_stage(k_sim=2)                 # bucket = [x > 0] + 2 [y > 0]
    x = np.array([[1.0, 1.0], [2.0, 3.0], [1.0, -1.0]], np.float32)  # buckets 3, 3, 1
    assert fs.codes(x)[:, 0].tolist() == [3, 3, 1]
    doc = fs.encode_document(x).reshape(4, 2)
    assert doc[0].tolist() == [1.0, -1.0]      # bucket 0 (00): vector 2 (01) is 1 bit away, the others 2
    assert doc[1].tolist() == [1.0, -1.0]      # its own vector
    assert doc[2].tolist() == [1.0, 1.0]       # bucket 2 (10): vectors 0 and 1 (11) are 1 bit away: the first
    assert doc[3].tolist() == [1.5, 2.0]       # mean of vectors 0 and 1
    assert fs.encode_query(x).reshape(4, 2)[[0, 2]].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # queries: no filling
    unfilled = _axis_stage(k_sim=2, fill_empty=False).encode_document(x).reshape(4, 2)
    assert unfilled[[0, 2]].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_repetitions_are_concatenated_in_order():
    fs = MuveraFirstStage.create(dim=5, k_sim=3, d_proj=4, reps=3, seed=2)
    x = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32)
    parts = [MuveraFirstStage(5, 3, 4, 1, None, 2, True, fs.gauss[r:r + 1], fs.proj[r:r + 1], None)
             for r in range(3)]
    np.testing.assert_array_equal(fs.encode_document(x), np.concatenate([p.encode_document(x) for p in parts]))
    np.testing.assert_array_equal(fs.encode_query(x), np.concatenate([p.encode_query(x) for p in parts]))


def test_seeded_deterministic_and_restorable():
    x = np.random.default_rng(0).standard_normal((9, 16)).astype(np.float32)
    a = MuveraFirstStage.create(16, k_sim=3, d_proj=8, reps=4, final_dim=64, seed=5)
    b = MuveraFirstStage.create(16, k_sim=3, d_proj=8, reps=4, final_dim=64, seed=5)
    c = MuveraFirstStage.create(16, k_sim=3, d_proj=8, reps=4, final_dim=64, seed=6)
    restored = MuveraFirstStage.from_state(a.params(), a.state)
    np.testing.assert_array_equal(a.encode_document(x), b.encode_document(x))
    np.testing.assert_array_equal(a.encode_document(x), restored.encode_document(x))
    assert not np.array_equal(a.encode_document(x), c.encode_document(x))
    assert restored.params() == a.params()


def test_defaults_fit_the_elasticsearch_dense_vector_limit():
    fs = make_first_stage("muvera", 128)
    assert fs.dims <= ES_MAX_DIMS
    assert make_first_stage("muvera", 384).dims == fs.dims           # independent of d with a projection
    assert isinstance(make_first_stage("mean", 128), MeanFirstStage)
    with pytest.raises(IndexInputError, match="not one of"):
        make_first_stage("hnsw", 128)
    with pytest.raises(IndexInputError, match="expects"):
        fs.encode_query(np.zeros((2, 64), np.float32))


def _fde_error(k_sim: int, d_proj: int | None, reps: int, trials: int = 30, d: int = 32) -> tuple[float, float]:
    """Mean |FDE(q) . FDE(p) / reps - MaxSim(q, p)| and mean MaxSim over random pages of 16 unit vectors
    and queries of 4 tokens, each a page vector plus Gaussian noise (cosine ~0.87 to it)."""
    rng = np.random.default_rng(0)
    fs = MuveraFirstStage.create(d, k_sim=k_sim, d_proj=d_proj, reps=reps, seed=1)
    errs, exact = [], []
    for _ in range(trials):
        p = unit_rows(rng, 16, d)                                           # [16, d]
        q = p[rng.choice(16, 4, replace=False)] + 0.1 * rng.standard_normal((4, d)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)                       # [4, d]
        exact.append(maxsim(q, p))
        errs.append(abs(fs.encode_query(q) @ fs.encode_document(p) / reps - exact[-1]))
    return float(np.mean(errs)), float(np.mean(exact))


def test_fde_inner_product_approaches_maxsim_as_dimension_grows():
    # (k_sim, d_proj, reps) in growing FDE dimension: 2 * 4 = 8, 4,096, 65,536, 262,144
    runs = [_fde_error(*c) for c in [(1, 4, 1), (4, None, 8), (8, None, 8), (10, None, 8)]]
    errors = [e for e, _ in runs]
    scale = runs[0][1]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.6 * scale                                   # 8 dims: a poor estimate
    assert errors[-1] < 0.3 * scale                                  # 262k dims: within 30% of MaxSim


def test_fde_ranking_agrees_with_maxsim_better_than_the_mean():
    """Clustered pages: the FDE's top 10 holds the MaxSim top page more often than the mean's."""
    rng = np.random.default_rng(4)
    d = 16
    centres = unit_rows(rng, 64, d)
    pages = []
    for _ in range(200):
        c = centres[rng.choice(64, 6, replace=False)]
        v = np.repeat(c, 4, axis=0) + 0.3 * rng.standard_normal((24, d)).astype(np.float32)
        pages.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    queries = [centres[rng.choice(64, 3, replace=False)] + 0.2 * rng.standard_normal((3, d)).astype(np.float32)
               for _ in range(40)]
    best = [int(np.argmax([maxsim(q, p) for p in pages])) for q in queries]
    hits = {}
    for fs in (MuveraFirstStage.create(d, k_sim=4, d_proj=None, reps=8, seed=0), MeanFirstStage(d)):
        codes = np.stack([fs.encode_document(p) for p in pages])       # [P, D]
        hits[fs.name] = sum(b in top_candidates(codes, fs.encode_query(q), 10) for q, b in zip(queries, best, strict=True))
    assert hits["muvera"] > hits["mean"], hits


def test_top_candidates_is_the_top_n_by_dot_product():
    rng = np.random.default_rng(0)
    codes, q = rng.standard_normal((50, 8)), rng.standard_normal(8)
    got = top_candidates(codes, q, 7)
    assert got.tolist() == sorted(np.argsort(-(codes @ q))[:7].tolist())
    assert top_candidates(codes, q, 80).tolist() == list(range(50))



# ---------------------------------------------------------------- through the local index
@pytest.fixture
def pages():
    from index_helpers import make_pages

    return make_pages(n=60, dim=16, per_page=5, seed=3)


def _first_stage_top(stage, pages, q, n: int, params=None) -> set[str]:
    fs = make_first_stage(stage, 16, params)
    codes = np.stack([fs.encode_document(p.vectors.numpy()) for p in pages])     # [P, D]
    return {pages[i].page_id for i in top_candidates(codes, fs.encode_query(q.numpy()), n)}


PARAMS = {"k_sim": 3, "d_proj": 8, "reps": 4, "seed": 7}


@pytest.mark.parametrize("stage", ["none", "mean", "muvera"])
def test_local_search_rescores_first_stage_candidates_exactly(tmp_path, pages, stage):
    from index_helpers import brute_maxsim, planted_query

    from anchorprune.index import LocalIndex

    idx = LocalIndex(tmp_path, "fs", dtype="float32", candidates=8, first_stage=stage, first_stage_params=PARAMS)
    idx.swap(idx.build(pages, {"config_hash": "c"}))
    by_id = {p.page_id: p for p in pages}
    queries = [planted_query(pages[i], m=3, noise=0.3, seed=i) for i in (0, 17, 42)]
    results, report = idx.search_report(queries, k=5)
    assert (report.first_stage, report.candidates, report.pages) == (stage, 60 if stage == "none" else 8, 60)
    assert idx.current().manifest["first_stage"]["name"] == stage
    for q, hits in zip(queries, results, strict=True):
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:                                    # every score is the exact MaxSim of that page
            assert h.score == pytest.approx(brute_maxsim(q, by_id[h.page_id].vectors), abs=1e-5)
        if stage == "none":                               # the exact top 5 of all pages
            exact = sorted(pages, key=lambda p: -brute_maxsim(q, p.vectors))[:5]
            assert [h.page_id for h in hits] == [p.page_id for p in exact]
        else:                                             # the exact top 5 of the first stage's 8 candidates
            cand = _first_stage_top(stage, pages, q, 8, PARAMS)
            assert {h.page_id for h in hits} <= cand
            best = sorted(cand, key=lambda c: -brute_maxsim(q, by_id[c].vectors))[:5]
            assert [h.page_id for h in hits] == best


def test_muvera_version_records_params_reopens_and_reuses(tmp_path, pages):
    from anchorprune.index import LocalIndex

    idx = LocalIndex(tmp_path, "fs", dtype="float16", candidates=6, first_stage="muvera", first_stage_params=PARAMS)
    v1 = idx.build(pages, {"config_hash": "c"})
    idx.swap(v1)
    m = v1.manifest
    assert m["first_stage"]["params"] == {**PARAMS, "dim": 16, "final_dim": None, "fill_empty": True, "dims": 256}
    assert {"first_stage.bin", "first_stage.npz"} <= set(m["files"])
    assert (tmp_path / "fs" / "v1" / "first_stage.bin").stat().st_size == 60 * 256 * 2      # [P, D] float16
    q = pages[5].vectors[:3]
    assert idx._open(v1.number).fde is None               # build + verify never load the FDE matrix
    before = idx.search(q, k=3)
    assert idx._open(v1.number).fde.shape == (60, 256)    # the first muvera search does
    reopened = LocalIndex(tmp_path, "fs", candidates=6, first_stage="muvera", first_stage_params={"seed": 99})
    assert reopened.search(q, k=3) == before              # the stored matrices answer, not the new params
    # an incremental build copies 40 pages: their FDEs equal a fresh build's
    v2 = idx.build(pages[40:], {"config_hash": "c"}, reuse=[p.page_id for p in pages[:40]])
    fresh = LocalIndex(tmp_path, "fresh", dtype="float16", first_stage="muvera", first_stage_params=PARAMS)
    v3 = fresh.build(pages[40:] + pages[:40], {"config_hash": "c"})
    a = np.fromfile(tmp_path / "fs" / f"v{v2.number}" / "first_stage.bin", np.float16)
    b = np.fromfile(tmp_path / "fresh" / f"v{v3.number}" / "first_stage.bin", np.float16)
    np.testing.assert_array_equal(a, b)


def test_muvera_asked_of_a_version_without_fdes_falls_back_to_the_mean(tmp_path, pages, caplog):
    from anchorprune.index import LocalIndex

    LocalIndex(tmp_path, "fs", dtype="float32").swap(LocalIndex(tmp_path, "fs", dtype="float32")
                                                     .build(pages, {"config_hash": "c"}))
    idx = LocalIndex(tmp_path, "fs", candidates=8, first_stage="muvera")
    q = pages[3].vectors[:2]
    hits, report = idx.search_report([q], k=4)
    assert report.first_stage == "mean" and "built without MUVERA FDEs; using mean" in caplog.text
    assert hits[0] == LocalIndex(tmp_path, "fs", candidates=8, first_stage="mean").search(q, k=4)


def test_config_selects_the_first_stage(tmp_path):
    from anchorprune.config import IndexConfig
    from anchorprune.index import open_index

    assert open_index(IndexConfig(two_stage=True), tmp_path).first_stage == "mean"
    assert open_index(IndexConfig(first_stage=None), tmp_path).first_stage == "none"
    assert open_index(IndexConfig(), tmp_path).first_stage == "auto"
    idx = open_index(IndexConfig(first_stage="muvera", muvera={"k_sim": 3, "reps": 2}), tmp_path)
    assert idx.first_stage == "muvera" and idx.first_stage_params["k_sim"] == 3
    with pytest.raises(ValueError, match="first_stage"):
        IndexConfig(first_stage="hnsw")
