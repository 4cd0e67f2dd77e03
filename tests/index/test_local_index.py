"""The local backend's guarantees: failures leave the serving version alone, one build at a time, checksums."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from index_helpers import brute_maxsim, make_pages, planted_query, unit

from anchorprune.config import IndexConfig
from anchorprune.index import (
    CorruptVersionError,
    IndexInputError,
    IndexLockedError,
    LocalIndex,
    open_index,
)
from anchorprune.index.base import IndexStoreError
from anchorprune.index.local import store as local_store
from anchorprune.pruning.base import PrunedPage


class Boom(RuntimeError):
    pass


@pytest.fixture
def served(tmp_path):
    """An index serving v1 built from 8 pages."""
    idx = LocalIndex(tmp_path, "idx", dtype="float16")
    pages = make_pages(n=8)
    idx.swap(idx.build(pages, {"config_hash": "c1"}))
    return idx, pages


def _listing(idx: LocalIndex) -> list[str]:
    return sorted(p.name for p in idx.dir.iterdir())


def _still_serving(idx: LocalIndex, pages) -> None:
    assert idx.current().number == 1
    assert idx.search(planted_query(pages[2]), k=1)[0].page_id == pages[2].page_id


@pytest.mark.parametrize("step", LocalIndex.BUILD_STEPS)
def test_failure_at_each_build_step_leaves_serving_version(served, monkeypatch, step):
    idx, pages = served
    before = _listing(idx)

    def fail(self, name):
        if name == step:
            raise Boom(f"injected at {name}")

    monkeypatch.setattr(LocalIndex, "_checkpoint", fail)
    with pytest.raises(Boom):
        idx.build(make_pages(n=8, seed=3, version="b"), {})
    assert _listing(idx) == before                    # no v2, no staging dir, lock released
    _still_serving(idx, pages)
    monkeypatch.undo()
    assert idx.build(make_pages(n=3, seed=4), {}).number == 2     # the next build runs (lock was released)


def test_failure_while_swapping_keeps_the_old_pointer(served, monkeypatch):
    idx, pages = served
    v2 = idx.build(make_pages(n=4, seed=9, prefix="q"), {})

    def broken_replace(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(local_store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        idx.swap(v2)
    monkeypatch.undo()
    _still_serving(idx, pages)
    assert not [p for p in idx.dir.iterdir() if p.name.startswith(".CURRENT")]


def test_a_second_build_in_the_same_process_is_refused(served, monkeypatch):
    idx, _ = served
    inner: list[Exception] = []

    def nested(self, name):
        if name == "write" and not inner:
            try:
                LocalIndex(idx.dir.parent, "idx").build(make_pages(n=2, seed=1), {})
            except IndexLockedError as exc:
                inner.append(exc)

    monkeypatch.setattr(LocalIndex, "_checkpoint", nested)
    idx.build(make_pages(n=2, seed=2), {})
    assert inner and f"pid {os.getpid()}" in str(inner[0]) and "already being built" in str(inner[0])


def _hold_lock(root, ready, release):
    """In a child process: hold the build lock of ``root/idx`` until ``release`` is set."""
    with LocalIndex(root, "idx").rebuild():
        ready.set()
        release.wait(30)


def test_a_live_owner_in_another_process_refuses_the_build_naming_it(served):
    idx, pages = served
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(idx.dir.parent, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid} on host") as err:
            idx.build(make_pages(n=2), {})
        assert "index build --wait" in str(err.value) and "index unlock" in str(err.value)
        with pytest.raises(IndexLockedError, match="running process"):
            idx.unlock()                          # a live owner's OS lock cannot be removed from here
    finally:
        release.set()
        holder.join(30)
    _still_serving(idx, pages)
    assert not (idx.dir / ".lock.owner").exists()   # the holder removed its record on the way out
    assert idx.build(make_pages(n=2), {}).number == 2


def test_an_owner_record_left_by_a_dead_build_is_taken_over_with_a_warning(served, caplog):
    idx, _ = served
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (idx.dir / ".lock.owner").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                     "started_at": "2026-01-01T00:00:00Z", "token": "old",
                                                     "command": "anchorprune index build"}))
    (idx.dir / ".build-v2-deadbeef").mkdir()          # what the crashed build left behind
    with caplog.at_level(logging.WARNING, logger="anchorprune.index.lifecycle"):
        v = idx.build(make_pages(n=2, seed=8), {})
    assert v.number == 2
    assert "stale build lock" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert not (idx.dir / ".lock.owner").exists() and not (idx.dir / ".build-v2-deadbeef").exists()


def test_unlock_removes_a_leftover_record_and_says_so(served):
    idx, _ = served
    (idx.dir / ".lock.owner").write_text(json.dumps({"pid": 1, "host": "some-other-host", "started_at": "t"}))
    assert "removed a lock record left by pid 1 on host 'some-other-host'" in idx.unlock()
    assert not (idx.dir / ".lock.owner").exists()
    assert idx.unlock().endswith("not locked")


@pytest.mark.parametrize("bad", ["nan", "dim", "empty", "duplicate"])
def test_bad_input_in_a_list_writes_nothing(tmp_path, bad):
    idx = LocalIndex(tmp_path, "idx", dtype="float32")
    pages = make_pages(n=4)
    if bad == "nan":
        v = pages[2].vectors.clone()
        v[0, 0] = float("inf")
        pages[2] = PrunedPage("p002", "h", v, None)
    elif bad == "dim":
        pages[2] = PrunedPage("p002", "h", torch.ones(3, 15), None)
    elif bad == "empty":
        pages[2] = PrunedPage("p002", "h", torch.ones(0, 16), None)
    else:
        pages[2] = PrunedPage("p001", "h", pages[2].vectors, None)
    with pytest.raises(IndexInputError, match="p00[12]"):
        idx.build(pages, {})
    assert not idx.dir.exists()                       # not even the index folder


def test_bad_page_in_a_stream_removes_the_half_written_version(served):
    idx, pages = served
    before = _listing(idx)

    def stream():
        yield from make_pages(n=5, seed=3)
        yield PrunedPage("late", "h", torch.full((2, 16), float("nan")), None)

    with pytest.raises(IndexInputError, match="'late'"):
        idx.build(stream(), {})
    assert _listing(idx) == before
    _still_serving(idx, pages)


def test_reuse_of_unknown_page_or_overlap_is_refused(served):
    idx, pages = served
    with pytest.raises(IndexInputError, match="not in the serving version"):
        idx.build([], {}, reuse=["nope"])
    with pytest.raises(IndexInputError, match="both given and named in reuse"):
        idx.build(pages[:1], {}, reuse=[pages[0].page_id])
    with pytest.raises(IndexInputError, match="no pages and nothing to reuse"):
        idx.build([], {})
    assert [v.number for v in idx.versions()] == [1]


def test_reuse_converts_float_storage_but_refuses_bits_to_float(tmp_path):
    pages = make_pages(n=4)
    idx32 = LocalIndex(tmp_path, "idx", dtype="float32")
    idx32.swap(idx32.build(pages, {}))
    idx16 = LocalIndex(tmp_path, "idx", dtype="float16")
    v2 = idx16.build([], {}, reuse=[p.page_id for p in pages])
    assert v2.manifest["dtype"] == "float16" and v2.manifest["reused_pages"] == 4
    idx16.swap(v2)
    q = planted_query(pages[1])
    assert idx16.search(q, k=1)[0].score == pytest.approx(brute_maxsim(q, pages[1].vectors), abs=2e-3)
    bits = LocalIndex(tmp_path, "idx", dtype="bits")
    bits.swap(bits.build([], {}, reuse=[p.page_id for p in pages]))
    with pytest.raises(IndexInputError, match="sign-bit"):
        idx32.build([], {}, reuse=[pages[0].page_id])


def test_bit_pages_score_float_query_against_scaled_signs(tmp_path):
    pages = make_pages(n=6, dim=32)
    idx = LocalIndex(tmp_path, "b", dtype="bits")
    idx.swap(idx.build(pages, {}))
    q = unit(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)))
    hits = {h.page_id: h.score for h in idx.search(q, k=6)}
    for p in pages:
        signs = torch.where(p.vectors > 0, 1.0, -1.0) / np.sqrt(32)
        assert hits[p.page_id] == pytest.approx(brute_maxsim(q, signs), abs=1e-4)
    v = idx.current()
    assert v.manifest["files"]["vectors.bin"]["bytes"] == v.vectors * 4      # 32 bits -> 4 bytes per vector


@pytest.mark.parametrize("dtype", ["float16", "bits"])
def test_resident_copy_and_memory_map_give_the_same_results(tmp_path, dtype):
    pages = make_pages(n=9, dim=32)
    built = LocalIndex(tmp_path, "r", dtype=dtype)
    built.swap(built.build(pages, {}))
    qs = [planted_query(p, m=3, seed=i) for i, p in enumerate(pages[:4])]
    resident = LocalIndex(tmp_path, "r", dtype=dtype, two_stage=True, candidates=3)
    mapped = LocalIndex(tmp_path, "r", dtype=dtype, two_stage=True, candidates=3, resident_bytes=0, chunk_tokens=7)
    for a, b in zip(resident.search_many(qs, k=9), mapped.search_many(qs, k=9), strict=True):
        assert [h.page_id for h in a] == [h.page_id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    _, s_res = resident.exact_scores(qs)
    _, s_map = mapped.exact_scores(qs)
    assert torch.allclose(s_res, s_map, atol=1e-5)
    assert resident._serving().handle.dense is not None and mapped._serving().handle.dense is None


def test_corrupt_version_is_detected_and_never_swapped_in(served):
    idx, pages = served
    v2 = idx.build(make_pages(n=3, seed=5), {})
    f = idx.dir / "v2" / "vectors.bin"
    data = bytearray(f.read_bytes())
    data[0] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match="checksum"):
        idx.verify(v2)
    with pytest.raises(CorruptVersionError):
        idx.swap(v2)
    _still_serving(idx, pages)


def test_another_reader_sees_the_swap_at_its_next_search(served):
    idx, pages = served
    reader = LocalIndex(idx.dir.parent, "idx")
    new = make_pages(n=3, seed=11, prefix="n")
    q = planted_query(new[1])
    assert reader.search(q, k=1)[0].page_id.startswith("p")
    idx.swap(idx.build(new, {}))
    assert reader.search(q, k=1)[0].page_id == "n001"


def test_serving_version_cannot_be_deleted_and_keep_below_two_is_refused(served):
    idx, _ = served
    with pytest.raises(IndexStoreError, match="serving version"):
        idx.delete_version(1)
    with pytest.raises(IndexInputError, match="keep must be >= 2"):
        idx.prune_versions(keep=1)


def test_manifest_records_meta_checksums_and_sizes(served):
    idx, pages = served
    v = idx.current()
    m = v.manifest
    assert m["meta"] == {"config_hash": "c1"} and m["dtype"] == "float16" and m["dim"] == 16
    assert set(m["files"]) == {"vectors.bin", "offsets.npy", "means.npy", "pages.json", "page_digests.npy"}
    assert m["files"]["vectors.bin"]["bytes"] == v.vectors * 16 * 2
    assert v.bytes == sum(f.stat().st_size for f in (idx.dir / "v1").iterdir())
    assert (idx.dir / "CURRENT").read_text().strip() == "v1"


def test_open_index_picks_local_and_explains_missing_elasticsearch_url(tmp_path, monkeypatch):
    idx = open_index(IndexConfig(name="x", dtype="bits", two_stage=True, candidates=7), tmp_path)
    assert isinstance(idx, LocalIndex) and idx.dir == tmp_path / "x" and idx.candidates == 7
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    with pytest.raises(ValueError, match="ELASTICSEARCH_URL is not set"):
        open_index(IndexConfig(backend="elasticsearch"), tmp_path)
