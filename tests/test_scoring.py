"""MaxSim scoring: hand cases, a naive double loop on random ragged inputs, chunking, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anchorprune.evaluation.scoring import ScoringError, maxsim, maxsim_matrix, pack, score_packed


def naive(query: torch.Tensor, page: torch.Tensor) -> float:
    total = 0.0
    for qi in query.tolist():
        best = -float("inf")
        for dj in page.tolist():
            best = max(best, sum(a * b for a, b in zip(qi, dj, strict=True)))
        total += best
    return total


def test_hand_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pages = [torch.tensor([[0.6, 0.8], [1.0, 0.0]]), torch.tensor([[0.0, -1.0]])]
    # page 0: max(0.6, 1.0) + max(0.8, 0.0) = 1.8 ; page 1: 0 + (-1) = -1
    assert maxsim(q, pages).tolist() == pytest.approx([1.8, -1.0])


def test_padding_can_never_win_a_max():
    # all similarities negative: a zero padding row would wrongly give 0
    q = torch.tensor([[1.0, 0.0]])
    pages = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[-0.5, 0.0], [-0.25, 0.0], [-2.0, 0.0]])]
    assert maxsim(q, pages).tolist() == pytest.approx([-1.0, -0.25])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    qlens=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    plens=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    chunk=st.one_of(st.none(), st.integers(1, 20)),
)
def test_matches_naive_double_loop(seed, qlens, plens, chunk):
    g = torch.Generator().manual_seed(seed)
    d = 5
    queries = [torch.randn(m, d, generator=g) for m in qlens]
    pages = [torch.randn(n, d, generator=g) for n in plens]
    vecs, offsets = pack(pages)
    got = score_packed(queries, vecs, offsets, chunk_tokens=chunk)
    assert got.shape == (len(queries), len(pages))
    for i, q in enumerate(queries):
        for j, p in enumerate(pages):
            assert got[i, j].item() == pytest.approx(naive(q, p), abs=1e-5)


def test_chunk_sizes_agree_and_float16_vectors_accepted():
    g = torch.Generator().manual_seed(3)
    pages = [torch.randn(n, 16, generator=g) for n in (7, 1, 30, 12, 5)]
    queries = [torch.randn(m, 16, generator=g) for m in (3, 8)]
    vecs, offsets = pack(pages)
    ref = score_packed(queries, vecs, offsets)
    for chunk in (1, 7, 8, 31, 10_000):
        assert torch.allclose(score_packed(queries, vecs, offsets, chunk_tokens=chunk), ref, atol=1e-5)
    half = score_packed(queries, vecs.half(), offsets)
    assert half.dtype == torch.float32
    assert torch.allclose(half, maxsim_matrix(queries, [p.half().float() for p in pages]), atol=1e-5)


def test_maxsim_matrix_equals_rows_of_maxsim():
    g = torch.Generator().manual_seed(1)
    pages = [torch.randn(n, 4, generator=g) for n in (2, 3)]
    queries = [torch.randn(m, 4, generator=g) for m in (1, 4, 2)]
    mat = maxsim_matrix(queries, pages)
    for i, q in enumerate(queries):
        assert torch.allclose(mat[i], maxsim(q, pages))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_page_raises_naming_the_page(bad):
    pages = [torch.ones(2, 3), torch.ones(4, 3), torch.ones(1, 3)]
    pages[1][2, 1] = bad
    vecs, offsets = pack(pages)
    with pytest.raises(ScoringError, match=r"page 1 \('p-b'\).*NaN or inf"):
        score_packed([torch.ones(1, 3)], vecs, offsets, chunk_tokens=2, page_ids=["p-a", "p-b", "p-c"])
    with pytest.raises(ScoringError, match="page 1 contains NaN or inf"):
        maxsim(torch.ones(1, 3), pages)


def test_non_finite_query_raises():
    q = torch.ones(2, 3)
    q[0, 0] = float("nan")
    with pytest.raises(ScoringError, match="query 0"):
        maxsim(q, [torch.ones(1, 3)])


def test_empty_page_and_bad_shapes_raise():
    with pytest.raises(ScoringError, match="page 1 has no vectors"):
        pack([torch.ones(2, 3), torch.ones(0, 3)])
    with pytest.raises(ScoringError, match="empty pages"):
        score_packed([torch.ones(1, 3)], torch.ones(2, 3), torch.tensor([0, 2, 2]))
    with pytest.raises(ScoringError, match="dimension 4"):
        pack([torch.ones(2, 3), torch.ones(1, 4)])
    with pytest.raises(ScoringError, match="end at the number of vectors"):
        score_packed([torch.ones(1, 3)], torch.ones(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ScoringError, match=r"query 0 has shape"):
        score_packed([torch.ones(1, 5)], torch.ones(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ScoringError, match="no queries"):
        score_packed([], torch.ones(2, 3), torch.tensor([0, 2]))


def test_aligned_unpadded_and_strided_paths_match_naive():
    g = torch.Generator().manual_seed(5)
    pages = [torch.randn(n, 3, generator=g) for n in (16, 32, 5)]
    queries = [torch.randn(2, 3, generator=g)]
    vecs, offsets = pack(pages)
    strided = vecs.T.contiguous().T                       # same values, non-contiguous
    for v, chunk in ((vecs, 48), (vecs, 16), (strided, 48), (vecs, None)):
        got = score_packed(queries, v, offsets, chunk_tokens=chunk)
        for j, p in enumerate(pages):
            assert got[0, j].item() == pytest.approx(naive(queries[0], p), abs=1e-5)


# ---- bf16 scoring ----

def _ragged(seed: int, pages: int = 30, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.functional.normalize(torch.randn(int(n), dim, generator=g), dim=-1)
          for n in torch.randint(1, 40, (pages,), generator=g)]
    qs = [torch.nn.functional.normalize(torch.randn(int(m), dim, generator=g), dim=-1)
          for m in torch.randint(1, 8, (5,), generator=g)]
    return qs, ps


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_compute_matches_fp32_within_bf16_rounding(seed):
    qs, ps = _ragged(seed)
    vecs, off = pack(ps)
    exact = score_packed(qs, vecs, off)
    for stored in (vecs, vecs.to(torch.bfloat16)):
        approx = score_packed(qs, stored, off, compute="bfloat16", chunk_tokens=50)
        # each similarity is rounded three times to bf16 (q, d, q.d: rel. error <= 2^-8 each) and |q.d| <= 1
        tol = torch.tensor([q.shape[0] * 3 * 2.0 ** -8 for q in qs])[:, None]
        assert ((approx - exact).abs() <= tol).all()
        assert not torch.equal(approx, exact)           # the bf16 path really ran
    # bf16-stored vectors scored in float32 equal float32 scoring of the rounded vectors, exactly
    rounded = vecs.to(torch.bfloat16)
    assert torch.equal(score_packed(qs, rounded, off, compute="float32"), score_packed(qs, rounded.float(), off))


def test_auto_falls_back_to_fp32_where_bf16_is_not_accelerated(monkeypatch):
    import anchorprune.evaluation.bf16 as bf16
    import anchorprune.evaluation.scoring as scoring

    qs, ps = _ragged(2)
    vecs, off = pack(ps)
    stored = vecs.to(torch.bfloat16)
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: False)
    assert scoring.resolve_compute(torch.bfloat16, "auto") == "float32"
    assert torch.equal(score_packed(qs, stored, off, compute="auto"), score_packed(qs, stored.float(), off))
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: True)
    assert scoring.resolve_compute(torch.bfloat16, "auto") == "bfloat16"
    assert scoring.resolve_compute(torch.float32, "auto") == "float32"      # only bf16-stored vectors
    assert torch.equal(score_packed(qs, stored, off, compute="auto"), score_packed(qs, stored, off, compute="bfloat16"))
    with pytest.raises(ScoringError, match="compute"):
        score_packed(qs, stored, off, compute="int8")


def test_bf16_detection_follows_torch_probes(monkeypatch):
    import anchorprune.evaluation.bf16 as bf16

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert bf16.bf16_accelerated() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert bf16.bf16_accelerated() is True

    def broken():
        raise RuntimeError("no cpuinfo")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert bf16.bf16_accelerated() is False


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), -float("nan")])
def test_bf16_nan_page_is_named(bad):
    """bf16 chunks are screened on their magnitude bits first: every non-finite value, of either sign, is found."""
    qs, ps = _ragged(3, pages=4)
    ps[2] = ps[2].clone()
    ps[2][-1, -1] = bad
    vecs, off = pack(ps)
    with pytest.raises(ScoringError, match="page 2 .*NaN or inf"):
        score_packed(qs, vecs.to(torch.bfloat16), off, compute="bfloat16")
    with pytest.raises(ScoringError, match="page 2 .*NaN or inf"):
        score_packed(qs, vecs.to(torch.bfloat16), off, compute="float32")


@pytest.mark.parametrize("accelerated", [False, True])
def test_local_index_stores_and_scores_bfloat16(tmp_path, monkeypatch, accelerated):
    import anchorprune.evaluation.bf16 as bf16
    from anchorprune.index.local import LocalIndex
    from anchorprune.pruning.base import PrunedPage

    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: accelerated)
    qs, ps = _ragged(4, pages=6)
    idx = LocalIndex(tmp_path, "bf", dtype="bfloat16")
    v = idx.build([PrunedPage(f"p{i}", f"h{i}", p, None) for i, p in enumerate(ps)], {"config_hash": "c"})
    idx.swap(v)
    ids, scores = idx.exact_scores(qs)
    vecs, off = pack(ps)
    rounded = vecs.to(torch.bfloat16)
    expected = score_packed(qs, rounded, off, compute="float32")     # evaluation stays exact float32
    assert ids == [f"p{i}" for i in range(6)]
    assert torch.equal(scores, expected)
    assert idx.search(ps[3][:1], k=1)[0].page_id == "p3"
    hits, report = idx.search_report(qs, k=2)
    assert report.scoring.compute == ("bfloat16" if accelerated else "float32")
    assert report.scoring.bf16_accelerated is accelerated and report.scoring.storage == "bfloat16"
    assert report.scoring.rescored is accelerated
    # either way the hits are the exact float32 top-2 of the stored (bf16-rounded) vectors, with their scores
    for h, row in zip(hits, expected, strict=True):
        best = torch.topk(row, 2)
        assert [x.page_id for x in h] == [f"p{int(i)}" for i in best.indices]
        assert [x.score for x in h] == pytest.approx(best.values.tolist(), rel=1e-6)   # float32 (matmul shape ulps)


# ---- bf16 scan + exact float32 rescoring of a shortlist ----

def _near_tie_pages():
    """Pages whose float32 MaxSim order flips when their vectors are rounded to bf16.

    Query tokens e0, e1. Page "a" = (0.5019, 0.5019): float32 1.0038, bf16 0.5 + 0.5 = 1.0.
    Page "b" = (0.5021, 0.5000): float32 1.0021, bf16 0.50390625 + 0.5 = 1.0039. Page "c" is far behind.
    """
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    pages = [torch.tensor([[0.5019, 0.0, 0.0, 0.0], [0.0, 0.5019, 0.0, 0.0]]),     # a
             torch.tensor([[0.5021, 0.0, 0.0, 0.0], [0.0, 0.5000, 0.0, 0.0]]),     # b
             torch.tensor([[0.1, 0.1, 0.0, 0.0]])]                                 # c
    return q, pages


def test_near_tie_flips_under_plain_bf16_and_the_shortlist_restores_fp32_order(monkeypatch):
    import anchorprune.evaluation.bf16 as bf16
    import anchorprune.evaluation.scoring as scoring

    q, pages = _near_tie_pages()
    vecs, off = pack(pages)
    exact = score_packed([q], vecs, off)[0]
    plain = score_packed([q], vecs.to(torch.bfloat16), off, compute="bfloat16")[0]
    assert int(exact.argmax()) == 0 and int(plain.argmax()) == 1          # plain bf16 flips the near-tie
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: True)
    scores, path = scoring.score_shortlist([q], vecs.to(torch.bfloat16), off, k=1, margin=1, rescore_vecs=vecs)
    assert int(scores[0].argmax()) == 0
    assert scores[0, :2].tolist() == pytest.approx(exact[:2].tolist(), abs=1e-6)   # float32 values, not bf16 ones
    assert scores[0, 2] == float("-inf")                                  # outside the shortlist of 2
    assert (path.compute, path.rescored, path.shortlist, path.rescore_source) == \
        ("bfloat16", True, 2, "float32 copy")
    # without a margin the shortlist is the (wrong) bf16 top-1: the margin is what makes it exact
    narrow, _ = scoring.score_shortlist([q], vecs.to(torch.bfloat16), off, k=1, margin=0, rescore_vecs=vecs)
    assert int(narrow[0].argmax()) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortlist_top_k_equals_fp32_top_k_on_many_near_ties(seed):
    from anchorprune.evaluation.scoring import score_shortlist

    g = torch.Generator().manual_seed(seed)
    dim, k = 32, 10
    base = torch.nn.functional.normalize(torch.randn(40, 12, dim, generator=g), dim=-1)
    # 200 pages: 5 jittered copies of 40 pages -> scores packed within ~1e-3: bf16 reorders them
    pages = [(b + 1e-3 * torch.randn(b.shape, generator=g)) for b in base for _ in range(5)]
    qs = [torch.nn.functional.normalize(torch.randn(8, dim, generator=g), dim=-1) for _ in range(12)]
    vecs, off = pack(pages)
    stored = vecs.to(torch.bfloat16)
    exact = score_packed(qs, vecs, off)
    plain = score_packed(qs, stored, off, compute="bfloat16")
    top_exact = torch.topk(exact, k, dim=1).indices
    assert not torch.equal(torch.topk(plain, k, dim=1).indices, top_exact)   # plain bf16 disagrees somewhere
    scores, path = score_shortlist(qs, stored, off, k, compute="bfloat16", rescore_vecs=vecs)
    assert path.shortlist == k + 50
    assert (torch.isfinite(scores).sum(dim=1) == k + 50).all()              # each query: its own shortlist only
    got = torch.topk(scores, k, dim=1)
    assert torch.equal(got.indices, top_exact)
    assert torch.allclose(got.values, torch.topk(exact, k, dim=1).values, rtol=1e-6, atol=0)
    # a bf16-only store: exact with respect to the stored vectors (float32 scoring of the rounded rows)
    exact_stored = score_packed(qs, stored, off, compute="float32")
    only16, path16 = score_shortlist(qs, stored, off, k, compute="bfloat16")
    assert path16.rescore_source == "stored vectors"
    assert torch.equal(torch.topk(only16, k, dim=1).indices, torch.topk(exact_stored, k, dim=1).indices)


def test_shortlist_falls_back_to_fp32_over_every_page(monkeypatch):
    import anchorprune.evaluation.bf16 as bf16
    import anchorprune.evaluation.scoring as scoring

    qs, ps = _ragged(5)
    vecs, off = pack(ps)
    stored = vecs.to(torch.bfloat16)
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: False)
    scores, path = scoring.score_shortlist(qs, stored, off, k=3)          # compute="auto"
    assert torch.equal(scores, score_packed(qs, stored.float(), off))     # every page, exact, no -inf
    assert (path.requested, path.compute, path.bf16_accelerated, path.rescored) == ("auto", "float32", False, False)
    assert "float32 fallback" in path.describe()
    # float32 storage never takes the bf16 scan, accelerated or not
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: True)
    _, path32 = scoring.score_shortlist(qs, vecs, off, k=3)
    assert path32.compute == "float32" and "fallback" not in path32.describe()
    with pytest.raises(ScoringError, match="rescore_vecs"):
        scoring.score_shortlist(qs, stored, off, k=3, compute="bfloat16", rescore_vecs=vecs[:-1])
    with pytest.raises(ScoringError, match="k must be"):
        scoring.score_shortlist(qs, stored, off, k=0)
