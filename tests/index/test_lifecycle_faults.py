"""The issue's faults, injected into the embedded index the way a user hit them.

- two rebuilds at once, in separate processes, one paused with events inside its rebuild;
- damage to each file of a served version (truncated, overwritten with finite garbage, removed)
  and a garbage ``CURRENT``;
- a process killed (``os._exit``) at each build step, between build and swap, and before the clean-up.

Each asserts: the serving version never moves backwards, nothing served changes silently (a search
either answers from an intact version or refuses naming the file and ``index rollback``), rollback
works, and the next build recovers. Children are forked (torch limited to one thread there, so its
thread pool is not inherited half-made) and every wait is bounded.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch
from index_helpers import brute_maxsim, make_pages, planted_query

from anchorprune.index import CorruptVersionError, IndexStoreError, LocalIndex
from anchorprune.index.base import IndexLockedError

CTX = mp.get_context("fork")
TIMEOUT = 60


def _rebuild(root, seed, q, wait=False, built=None, go=None, die_at=None):
    """A child's rebuild: lock, build, (pause), compare-and-swap, prune; reports to ``q``."""
    torch.set_num_threads(1)
    idx = LocalIndex(root, "idx", dtype="float16")
    if die_at:
        def checkpoint(self, step):
            if step == die_at:
                os._exit(9)                                      # killed: no clean-up of any kind
        LocalIndex._checkpoint = checkpoint
    try:
        with idx.rebuild(wait=wait) as started:
            v = idx.build(make_pages(n=6, seed=seed, prefix=f"s{seed}-"), {})
            if built is not None:
                built.set()
                go.wait(TIMEOUT)
            if die_at == "swap":
                os._exit(9)
            idx.swap(v, expected=started)
            if die_at == "prune":
                os._exit(9)
            idx.prune_versions(2)
        q.put(("ok", started, v.number))
    except IndexStoreError as exc:
        q.put((type(exc).__name__, str(exc)))


def _start(*args, **kw):
    p = CTX.Process(target=_rebuild, args=args, kwargs=kw)
    p.start()
    return p


def _join(*procs):
    for p in procs:
        p.join(TIMEOUT)
        if p.is_alive():
            p.kill()
            pytest.fail(f"child {p.pid} did not finish in {TIMEOUT} s")


@pytest.fixture
def served(tmp_path):
    idx = LocalIndex(tmp_path, "idx", dtype="float16")
    pages = make_pages(n=8)
    idx.swap(idx.build(pages, {}))
    return idx, pages


def test_two_rebuilds_at_once_the_second_is_refused_or_queues_and_nothing_goes_backwards(served):
    idx, _ = served
    q, built, go = CTX.Queue(), CTX.Event(), CTX.Event()
    first = _start(idx.dir.parent, 1, q, built=built, go=go)
    assert built.wait(TIMEOUT)                    # the first one built v2 and is paused inside its rebuild
    second = _start(idx.dir.parent, 2, q)
    refused = q.get(timeout=TIMEOUT)
    assert refused[0] == "IndexLockedError" and f"pid {first.pid}" in refused[1]
    queued = _start(idx.dir.parent, 3, q, wait=True)
    go.set()
    results = sorted([q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)])
    _join(first, second, queued)
    assert results == [("ok", 1, 2), ("ok", 2, 3)]     # each swapped from the version it started from
    assert idx.current().number == 3 and [v.number for v in idx.versions()] == [2, 3]
    assert idx.previous().number == 2
    hit = idx.search(planted_query(make_pages(n=6, seed=3, prefix="s3-")[4]), k=1)[0]
    assert hit.page_id == "s3-004"


def test_a_rollback_during_a_rebuild_makes_that_rebuild_abort_its_swap(served):
    idx, pages = served
    idx.swap(idx.build(make_pages(n=4, seed=5), {}))      # v2 serves, v1 served before
    q, built, go = CTX.Queue(), CTX.Event(), CTX.Event()
    child = _start(idx.dir.parent, 7, q, built=built, go=go)
    assert built.wait(TIMEOUT)
    assert idx.rollback().number == 1                     # a human rolls back while it runs
    go.set()
    out = q.get(timeout=TIMEOUT)
    _join(child)
    assert out[0] == "SwapConflictError" and "started from v2 but v1 serves now" in out[1]
    assert idx.current().number == 1 and [v.number for v in idx.versions()] == [1, 2, 3]
    assert idx.search(planted_query(pages[2]), k=1)[0].page_id == pages[2].page_id


@pytest.mark.parametrize("step", [*LocalIndex.BUILD_STEPS, "swap", "prune"])
def test_a_build_killed_at_each_step(served, step, caplog):
    idx, pages = served
    idx.swap(idx.build(make_pages(n=4, seed=5, prefix="b"), {}))      # v2 serves, v1 served before it
    q = CTX.Queue()
    child = _start(idx.dir.parent, 9, q, die_at=step)
    _join(child)
    assert child.exitcode == 9 and q.empty()
    serving = 3 if step == "prune" else 2
    assert idx.current().number == serving               # unchanged, or the newer one it swapped in
    assert (idx.dir / ".lock.owner").exists()            # what the dead build left behind
    with caplog.at_level(logging.WARNING, logger="anchorprune.index.lifecycle"), idx.rebuild() as started:
        assert started == serving
        v = idx.build(make_pages(n=3, seed=11, prefix="n"), {})
        idx.swap(v, expected=started)
        idx.prune_versions(2)
    assert f"stale build lock left by pid {child.pid}" in caplog.text
    assert not list(idx.dir.glob(".build-*"))
    kept = [h.number for h in idx.health() if h.ok]
    assert kept == sorted([serving, v.number])           # a version the killed build never swapped in is gone
    assert idx.rollback().number == serving              # the way back is the last version that served


# ---------------------------------------------------------------- damage
def _damage(idx: LocalIndex, what: str) -> str:
    """Damage the serving v2; returns the file the error must name."""
    d = idx.dir / "v2"
    if what == "vectors-truncated":
        with open(d / "vectors.bin", "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
        return "vectors.bin"
    if what == "vectors-overwritten":                    # a third of it, wrong but finite, same size
        f = d / "vectors.bin"
        data = bytearray(f.read_bytes())
        third = len(data) // 3
        data[third: 2 * third] = np.full(third // 2, 0.25, dtype=np.float16).tobytes()[: third]
        f.write_bytes(bytes(data))
        return "vectors.bin"
    if what == "pages-missing":
        (d / "pages.json").unlink()
        return "pages.json"
    if what == "offsets-garbage":
        f = d / "offsets.npy"
        f.write_bytes(b"\x93NUMPY" + b"\xff" * (f.stat().st_size - 6))
        return "offsets.npy"
    if what == "means-overwritten":
        f = d / "means.npy"
        data = bytearray(f.read_bytes())
        data[-8:] = b"\x00" * 8
        f.write_bytes(bytes(data))
        return "means.npy"
    if what == "digests-missing":
        (d / "page_digests.npy").unlink()
        return "page_digests.npy"
    if what == "manifest-garbage":
        (d / "manifest.json").write_text("{not json")
        return "manifest.json"
    if what == "current-garbage":
        (idx.dir / "CURRENT").write_text("v2\x00\x00garbage")
        return "CURRENT"
    raise AssertionError(what)


DAMAGE = ["vectors-truncated", "vectors-overwritten", "pages-missing", "offsets-garbage", "means-overwritten",
          "digests-missing", "manifest-garbage", "current-garbage"]


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "mapped"])
@pytest.mark.parametrize("what", DAMAGE)
def test_damage_is_refused_with_the_file_named_and_rollback_recovers(served, what, resident):
    idx, pages = served
    new = make_pages(n=6, seed=4, prefix="v2-")
    idx.swap(idx.build(new, {}))
    fname = _damage(idx, what)
    reader = LocalIndex(idx.dir.parent, "idx", resident_bytes=(1 << 30) if resident else 0)
    target = new[3] if what != "vectors-overwritten" else new[2]   # a page inside the overwritten third
    q = planted_query(target)
    if what == "manifest-garbage":            # the version is no longer complete: nothing can serve from it
        with pytest.raises(IndexStoreError, match="manifest.json"):
            reader.search(q, k=3)
    else:
        with pytest.raises(CorruptVersionError, match=f"{fname}.*index rollback"):
            reader.search(q, k=3)
    if what != "current-garbage":
        health = {h.number: h for h in reader.health(full=True)}
        assert not health[2].ok and fname in health[2].problem and health[1].ok
    back = reader.rollback()
    assert back.number == (2 if what == "current-garbage" else 1)
    want = new[3] if what == "current-garbage" else pages[3]
    hit = reader.search(planted_query(want), k=1)[0]
    assert hit.page_id == want.page_id
    assert hit.score == pytest.approx(brute_maxsim(planted_query(want), want.vectors), abs=2e-2)


def test_an_incremental_build_re_encodes_damaged_pages_instead_of_copying_them(served):
    idx, pages = served
    f = idx.dir / "v1" / "vectors.bin"
    data = bytearray(f.read_bytes())
    v1 = idx.current()
    row = 16 * 2                                          # float16, d = 16
    lo = sum(p.vectors.shape[0] for p in pages[:3]) * row
    data[lo: lo + row] = np.full(16, 0.5, dtype=np.float16).tobytes()    # page p003's first vector, finite
    f.write_bytes(bytes(data))
    ids = [p.page_id for p in pages]
    assert idx.damaged_pages(ids) == ["p003"]
    with pytest.raises(CorruptVersionError, match="'p003'.*re-encode"):
        idx.build([], {}, reuse=ids)                      # never copied forward, never re-checksummed
    assert [v.number for v in idx.versions()] == [v1.number]
    v2 = idx.build([pages[3]], {}, reuse=[i for i in ids if i != "p003"])
    idx.swap(v2)
    idx.verify(v2)
    q = planted_query(pages[3])
    top = idx.search(q, k=1)[0]
    assert top.page_id == "p003" and top.score == pytest.approx(brute_maxsim(q, pages[3].vectors), abs=2e-3)
    assert idx.damaged_pages(ids) == []


def test_a_lock_held_by_a_live_rebuild_is_reported_by_status_and_not_removed_by_unlock(served):
    idx, _ = served
    q, built, go = CTX.Queue(), CTX.Event(), CTX.Event()
    child = _start(idx.dir.parent, 1, q, built=built, go=go)
    try:
        assert built.wait(TIMEOUT)
        with pytest.raises(IndexLockedError, match=f"kill {child.pid}"):
            idx.unlock(force=True)
        assert idx.life.store.lock_owner()["pid"] == child.pid
    finally:
        go.set()
        _join(child)
    assert q.get(timeout=TIMEOUT)[0] == "ok" and idx.life.store.lock_owner() is None


def test_an_open_handle_notices_damage_done_after_it_opened_the_version(served):
    idx, pages = served
    idx.swap(idx.build(make_pages(n=4, seed=5), {}))
    assert idx.search(planted_query(pages[0]), k=1)                # v2 opened and cached by this handle
    (idx.dir / "v2" / "means.npy").write_bytes(b"")
    with pytest.raises(CorruptVersionError, match="v2/means.npy has 0 bytes.*index rollback"):
        idx.search(planted_query(pages[0]), k=1)
    assert [h.ok for h in idx.health()] == [True, False]
    assert idx.rollback().number == 1
    assert idx.search(planted_query(pages[0]), k=1)[0].page_id == pages[0].page_id


def test_damage_that_only_changes_the_ranking_is_refused_at_the_first_search(served):
    """The issue's second case: a third of vectors.bin overwritten, the damaged page drops out of the top k."""
    idx, _ = served
    new = make_pages(n=30, seed=2, prefix="b")
    idx.swap(idx.build(new, {}))
    q = planted_query(new[12])
    assert idx.search(q, k=3)[0].page_id == "b012"
    f = idx.dir / "v2" / "vectors.bin"
    data = bytearray(f.read_bytes())
    third = len(data) // 3
    data[third: 2 * third] = np.full(third // 2, 0.25, dtype=np.float16).tobytes()[:third]
    f.write_bytes(bytes(data))
    fresh = LocalIndex(idx.dir.parent, "idx", resident_bytes=0)       # searched from the memory map
    with pytest.raises(CorruptVersionError, match="v2/vectors.bin does not match its checksum.*index rollback"):
        fresh.search(q, k=3)
    unchecked = LocalIndex(idx.dir.parent, "idx", resident_bytes=0, verify_on_open=False)
    hits = unchecked.search(q, k=3)            # the documented trade-off: only returned pages are checked
    assert "b012" not in [h.page_id for h in hits]
    assert fresh.rollback().number == 1
