"""The prepared serving copy (evaluation.scoring.prepare / PreparedPages): the same scores bit for bit as the
unprepared path, checked once (a NaN page is named when it is prepared), and released when a version is
swapped out."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "index"))
from index_helpers import make_pages, planted_query  # noqa: E402

from anchorprune.evaluation.scoring import (  # noqa: E402
    PreparedPages,
    ScoringError,
    gather_pages,
    pack,
    prepare,
    score_packed,
    score_shortlist,
)
from anchorprune.index import LocalIndex  # noqa: E402
from anchorprune.index.base import CorruptVersionError  # noqa: E402


def corpus(seed: int = 0, pages: int = 120, dim: int = 48):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 37, (pages,), generator=g)                   # odd lengths: chunks never aligned
    vecs, off = pack([torch.randn(int(n), dim, generator=g) for n in lens])
    qs = [torch.randn(int(m), dim, generator=g) for m in (3, 11, 20)]
    return vecs, off, qs


@pytest.mark.parametrize("chunk", [None, 1, 17, 100, 999])
@pytest.mark.parametrize("storage", [torch.float32, torch.float16, torch.bfloat16])
def test_prepared_scores_are_bit_identical_to_the_unprepared_path(storage, chunk):
    vecs, off, qs = corpus()
    vecs = vecs.to(storage)
    pp = prepare(vecs, off)
    assert pp.compute == "float32" and pp.padded.shape[0] == vecs.shape[0] + 16
    assert torch.equal(pp.padded[vecs.shape[0]:], torch.zeros(16, vecs.shape[1]))
    assert torch.equal(score_packed(qs, pp, chunk_tokens=chunk), score_packed(qs, vecs, off, chunk_tokens=chunk))


@pytest.mark.parametrize("chunk", [None, 17, 300])
def test_prepared_bf16_scan_and_shortlist_match_the_unprepared_bf16_path(chunk):
    vecs, off, qs = corpus(seed=1)
    stored = vecs.to(torch.bfloat16)
    pp = prepare(stored, off, compute="bfloat16")
    assert pp.padded.dtype == torch.bfloat16
    assert torch.equal(score_packed(qs, pp, chunk_tokens=chunk),
                       score_packed(qs, stored, off, compute="bfloat16", chunk_tokens=chunk))
    a, path_a = score_shortlist(qs, pp, None, k=5, margin=7, chunk_tokens=chunk)
    b, path_b = score_shortlist(qs, stored, off, k=5, compute="bfloat16", margin=7, chunk_tokens=chunk)
    assert torch.equal(a, b) and (path_a.compute, path_a.shortlist) == (path_b.compute, path_b.shortlist) == ("bfloat16", 12)
    with pytest.raises(ScoringError, match="prepared for bfloat16"):
        score_packed(qs, pp, compute="float32")


def test_take_scores_candidates_like_a_gathered_copy():
    vecs, off, qs = corpus(seed=2)
    pp = prepare(vecs, off, page_ids=[f"p{i}" for i in range(len(off) - 1)])
    cand = np.array([7, 3, 99, 0, 55])
    rows, local = gather_pages(vecs, off, cand)
    sub = pp.take(cand)
    assert sub.page_ids == ["p7", "p3", "p99", "p0", "p55"]
    assert torch.equal(score_packed(qs, sub), score_packed(qs, rows, local))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_page_is_named_when_prepared(bad):
    vecs, off, _ = corpus(seed=3)
    vecs[int(off[41]) + 1 if off[42] - off[41] > 1 else int(off[41]), 5] = bad
    with pytest.raises(ScoringError, match=r"page 41 \('p41'\) contains NaN or inf"):
        prepare(vecs, off, page_ids=[f"p{i}" for i in range(len(off) - 1)], step_rows=50)


def test_a_prepared_corpus_refuses_separate_offsets():
    vecs, off, qs = corpus()
    with pytest.raises(ScoringError, match="offsets=None"):
        score_packed(qs, prepare(vecs, off), off)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bits"])
def test_the_serving_version_is_prepared_once_and_released_on_swap(tmp_path, dtype):
    idx = LocalIndex(tmp_path, "s", dtype=dtype)
    pages = make_pages(n=10, dim=16)
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[4])
    first = idx.search(q, k=3)
    v1 = idx.store.open(1)
    assert isinstance(v1.prepared, PreparedPages) and v1.checked
    padded = weakref.ref(v1.prepared.padded)
    assert idx.search(q, k=3) == first and idx.store.open(1).prepared.padded is padded()    # built once
    mapped = LocalIndex(tmp_path, "s", dtype=dtype, resident_bytes=0)                        # never prepared
    assert mapped.search(q, k=3) == first and mapped.store.open(1).prepared is None

    idx.swap(idx.build(make_pages(n=6, dim=16, seed=9, prefix="b"), {}))
    idx.search(q, k=3)
    assert v1.prepared is None and v1.dense is None
    gc.collect()
    assert padded() is None                                   # the swapped-out copy's memory is freed
    assert idx.store.open(2).prepared is not None


def test_a_version_whose_vectors_hold_nan_is_refused_naming_the_page(tmp_path):
    idx = LocalIndex(tmp_path, "n", dtype="float32")
    idx.swap(idx.build(make_pages(n=5, dim=16), {}))
    v = idx.store.open(1)
    v.vecs[int(v.offsets[3]), 2] = np.nan                      # copy-on-write map: the file is untouched
    with pytest.raises(CorruptVersionError, match=r"v1/vectors.bin: page 3 \('p003'\) contains NaN"):
        v.make_resident(1 << 30)
    assert v.prepared is None


def test_unprepared_chunks_padded_with_the_next_pages_rows_still_name_the_nan_page():
    """An aligned-width chunk may read the next pages' rows as padding: a NaN there is reported for its own
    page (when its chunk comes), never blamed on the chunk that merely padded with it."""
    pages = [torch.ones(5, 4) for _ in range(6)]                     # 5 rows each: widths never multiples of 16
    vecs, off = pack(pages)
    vecs[int(off[4]) + 2, 1] = float("nan")                          # page 4, vector 2
    with pytest.raises(ScoringError, match=r"page 4 \('p4'\) contains NaN or inf \(vector 2\)"):
        score_packed([torch.ones(2, 4)], vecs, off, chunk_tokens=10, page_ids=[f"p{i}" for i in range(6)])
    ok = score_packed([torch.ones(2, 4)], vecs[: int(off[4])], off[:5], chunk_tokens=10)
    assert torch.equal(ok, torch.full((1, 4), 8.0))
