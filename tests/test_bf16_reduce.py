"""The bf16 MaxSim path reduces the bf16 similarity block on its bit patterns (evaluation.scoring.bf16_page_max):
the same per-page maxima as converting the block to float32 first, and the shortlist keeps float32's top-10."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anchorprune.evaluation.scoring import bf16_page_max, pack, prepare, score_packed, score_shortlist


def widened_reduceat(sim16: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """The plain path: the whole ``[t, M]`` block converted to float32, then a float max per page ``[n, M]``."""
    return np.maximum.reduceat(sim16.to(torch.float32).numpy(), starts, axis=0)


def ends_of(starts: np.ndarray, t: int) -> np.ndarray:
    return np.r_[starts[1:], t]


@pytest.mark.parametrize("shift", [0.0, -3.0, 3.0])
def test_bit_pattern_max_equals_the_float_max(shift):
    g = torch.Generator().manual_seed(7)
    sim16 = (torch.randn(400, 13, generator=g) + shift).to(torch.bfloat16)           # [t, M]
    starts = np.unique(np.r_[0, torch.randint(1, 400, (40,), generator=g).numpy()])   # 1- to many-row pages
    got = bf16_page_max(sim16, starts, ends_of(starts, 400))
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.int32), widened_reduceat(sim16, starts).view(np.int32))   # bit for bit


def test_signed_zeros_infinities_and_all_negative_pages():
    vals = [[-0.0, -1.0], [0.0, -0.0], [-5.0, -0.5], [float("-inf"), -1e30], [float("inf"), 2.0], [-0.0, 0.0]]
    sim16 = torch.tensor([sum(vals, [])], dtype=torch.bfloat16).T.contiguous()          # [12, 1]
    starts = np.arange(0, 12, 2)
    got = bf16_page_max(sim16, starts, starts + 2)[:, 0]
    want = widened_reduceat(sim16, starts)[:, 0]
    assert np.array_equal(got, want)              # equal values (a zero maximum's sign may differ: +0 == -0)
    assert got.tolist() == [-0.0, 0.0, -0.5, float(torch.tensor(-1e30).bfloat16()), float("inf"), 0.0]


def reference_bf16_maxsim(queries, vecs16, off):
    """bf16 matmul (fp32 accumulation, bf16 output), widened to float32, max per page, sum per query."""
    out = []
    for q in queries:
        sim = torch.mm(q.to(torch.bfloat16), vecs16.T).to(torch.float32)              # [m, T]
        out.append(torch.stack([sim[:, a:b].amax(dim=1).sum() for a, b in zip(off[:-1], off[1:], strict=True)]))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [None, 29, 640])
def test_bf16_score_packed_matches_the_widen_then_reduce_reference(chunk):
    g = torch.Generator().manual_seed(3)
    vecs, off = pack([torch.randn(int(n), 32, generator=g) - 0.4 for n in torch.randint(1, 60, (70,), generator=g)])
    qs = [torch.randn(m, 32, generator=g) for m in (1, 6, 17)]
    v16 = vecs.to(torch.bfloat16)
    ref = reference_bf16_maxsim(qs, v16, off.tolist())
    assert torch.allclose(score_packed(qs, v16, off, compute="bfloat16", chunk_tokens=chunk), ref, rtol=0, atol=1e-4)
    assert torch.equal(score_packed(qs, prepare(v16, off, compute="bfloat16"), chunk_tokens=chunk),
                       score_packed(qs, v16, off, compute="bfloat16", chunk_tokens=chunk))


def test_bf16_shortlist_keeps_the_float32_top10_on_a_seeded_corpus():
    """Topic-clustered unit vectors (near-ties abound): the bf16 scan + float32 rescoring of k + margin pages
    gives float32's exact top-10, in order, for at least 99% of queries."""
    g = torch.Generator().manual_seed(11)
    dim = 64
    topics = torch.nn.functional.normalize(torch.randn(12, dim, generator=g), dim=1)           # [12, dim]
    pages = []
    for _ in range(400):
        t = topics[torch.randint(0, 12, (3,), generator=g)]
        n = int(torch.randint(8, 40, (1,), generator=g))
        pages.append(torch.nn.functional.normalize(t[torch.randint(0, 3, (n,), generator=g)]
                                                   + 0.6 * torch.randn(n, dim, generator=g), dim=1))
    vecs, off = pack(pages)
    qs = [torch.nn.functional.normalize(topics[int(torch.randint(0, 12, (1,), generator=g))]
                                        + 0.8 * torch.randn(12, dim, generator=g), dim=1) for _ in range(100)]
    exact = score_packed(qs, vecs, off)                                               # [Q, P] float32
    got, path = score_shortlist(qs, vecs.to(torch.bfloat16), off, k=10, compute="bfloat16", rescore_vecs=vecs)
    assert path.compute == "bfloat16" and path.rescored
    te, tg = torch.topk(exact, 10, dim=1), torch.topk(got, 10, dim=1)
    identical = (te.indices == tg.indices).all(dim=1).float().mean().item()
    assert identical >= 0.99
    assert torch.equal(tg.values, te.values) or identical < 1.0                     # rescored scores are float32's
