"""The life cycle (lifecycle.py) on both stores: lock over the rebuild, compare-and-swap, served history,
rollback to a healthy served version, retention, health. Every test runs on the local store and on the
Elasticsearch backend over the fake (``make_index`` in index_fixtures.py), and on a live cluster when
``ELASTICSEARCH_URL`` is set. Damage is injected per store (``damage``/``break_pointer``).
"""

from __future__ import annotations

import json
import logging
import socket

import index_fixtures
import pytest
from index_helpers import make_pages, planted_query

from anchorprune.index import (
    CorruptVersionError,
    IndexLockedError,
    LocalIndex,
    SwapConflictError,
    VersionNotFoundError,
)
from anchorprune.index.elasticsearch import ElasticsearchIndex

make_index = index_fixtures.make_index        # the shared fixture (see index_fixtures.py)


def twin(idx):
    """A second handle on the same index, as another build or a human's CLI would open it."""
    if isinstance(idx, LocalIndex):
        return LocalIndex(idx.dir.parent, idx.name, dtype=idx.dtype)
    return ElasticsearchIndex(idx.client, idx.name, dtype=idx.dtype)


def damage(idx, n: int) -> str:
    """Damage version ``n`` in a way a full check catches; returns what the error should name."""
    if isinstance(idx, LocalIndex):
        f = idx.dir / f"v{n}" / "vectors.bin"
        data = bytearray(f.read_bytes())
        data[: len(data) // 3] = b"\x11" * (len(data) // 3)           # wrong but finite, same size
        f.write_bytes(bytes(data))
        return "vectors.bin"
    first = next(iter(dict(idx.client.search(index=idx.index_name(n), size=1))["hits"]["hits"]))
    idx.client.delete(index=idx.index_name(n), id=first["_id"], refresh=True)   # a lost document
    return idx.index_name(n)


def break_pointer(idx) -> None:
    """Make the serving pointer unreadable (local: garbage CURRENT; Elasticsearch: alias on two indices)."""
    if isinstance(idx, LocalIndex):
        (idx.dir / "CURRENT").write_bytes(b"\x00garbage")
        return
    names = sorted(idx._all_versions())
    idx.client.indices.update_aliases(actions=[{"add": {"index": idx.index_name(n), "alias": idx.name}}
                                               for n in names[:2]])


def served_versions(idx, count: int, n_pages: int = 5) -> list[list]:
    gens = [make_pages(n=n_pages, seed=s, prefix=f"g{s}-") for s in range(count)]
    for g in gens:
        idx.swap(idx.build(g, {}))
    return gens


def test_a_second_rebuild_is_refused_at_once_naming_the_holder(make_index):
    idx = make_index()
    served_versions(idx, 1)
    other = twin(idx)
    with idx.rebuild() as started:
        assert started == 1
        with pytest.raises(IndexLockedError, match="already being built by pid") as err:
            other.build(make_pages(n=2, seed=9), {})
        assert "index build --wait" in str(err.value)
        with pytest.raises(IndexLockedError), other.rebuild():
            pass
        v2 = idx.build(make_pages(n=3, seed=4), {})        # the holder's own build does not lock twice
        idx.swap(v2, expected=started)
    assert other.build(make_pages(n=2, seed=9), {}).number == 3   # released: the next one runs


def test_a_swap_never_goes_backwards(make_index):
    """The issue's first case, minus the lock: a build that started from v1 must not replace a newer v2."""
    idx = make_index()
    gens = served_versions(idx, 1)
    v2 = idx.build(make_pages(n=4, seed=7, prefix="new-"), {})
    human = twin(idx)
    with idx.rebuild() as started:
        v3 = idx.build(make_pages(n=3, seed=8, prefix="old-"), {})
        human.swap(v2)                      # meanwhile a newer version was put into service
        with pytest.raises(SwapConflictError, match="started from v1 but v2 serves now"):
            idx.swap(v3, expected=started)
    assert idx.current().number == 2 and [v.number for v in idx.versions()] == [1, 2, 3]
    assert idx.search(planted_query(make_pages(n=4, seed=7, prefix="new-")[1]), k=1)[0].page_id == "new-001"
    # v1 (the version the refused build started from) is still the rollback target, with its own pages
    assert idx.previous().number == 1 and idx.previous().pages == len(gens[0])
    assert not {"old-000", "old-001", "old-002"} & set(idx.existing_hashes())      # v3 never served


def test_a_version_that_never_served_is_neither_kept_nor_a_rollback_target(make_index):
    """The issue's last case: a build killed between writing v3 and swapping it in."""
    idx = make_index()
    served_versions(idx, 2)                                  # v1, v2 served
    idx.build(make_pages(n=3, seed=5), {})                   # v3: built, never swapped in
    v4 = idx.build(make_pages(n=3, seed=6), {})
    idx.swap(v4)
    assert idx.previous().number == 2                        # not v3
    assert idx.prune_versions(keep=2) == [1, 3]
    assert [v.number for v in idx.versions()] == [2, 4]
    assert idx.rollback().number == 2 and idx.current().number == 2


def test_retention_never_deletes_the_last_served_version_even_when_newer_unserved_ones_pile_up(make_index):
    idx = make_index()
    served_versions(idx, 1)
    for s in range(3):
        idx.build(make_pages(n=2, seed=10 + s), {})         # v2..v4 never served
    idx.swap(idx.build(make_pages(n=2, seed=20), {}))      # v5
    assert idx.prune_versions(keep=3) == [2, 3]            # keeps 5 (serving), 1 (last served), 4 (newest older)
    assert idx.previous().number == 1


def test_rollback_skips_a_damaged_version(make_index, caplog):
    idx = make_index()
    gens = served_versions(idx, 3)
    what = damage(idx, 2)
    health = {h.number: h for h in idx.health(full=True)}
    assert not health[2].ok and what in health[2].problem and health[1].ok and health[3].serving
    with caplog.at_level(logging.WARNING):
        assert idx.rollback().number == 1
    assert "v2 served before but is damaged" in caplog.text
    assert idx.search(planted_query(gens[0][1]), k=1)[0].page_id == gens[0][1].page_id


def test_rollback_repairs_an_unreadable_pointer(make_index):
    idx = make_index()
    gens = served_versions(idx, 3)
    break_pointer(idx)
    with pytest.raises(CorruptVersionError, match="index rollback"):
        idx.search(planted_query(gens[2][0]), k=1)
    assert idx.life.pointer_problem() is not None
    assert [h.number for h in idx.health()] == [1, 2, 3]
    assert idx.rollback().number == 3                        # the newest healthy version that served
    assert idx.current().number == 3 and idx.life.pointer_problem() is None
    assert idx.search(planted_query(gens[2][0]), k=1)[0].page_id == gens[2][0].page_id


def test_rollback_without_a_healthy_served_version_says_to_rebuild(make_index):
    idx = make_index()
    served_versions(idx, 1)
    idx.build(make_pages(n=2, seed=3), {})                  # v2: never served
    with pytest.raises(VersionNotFoundError, match="no healthy version that served.*anchorprune index build"):
        idx.rollback()
    assert idx.current().number == 1


def test_search_breaks_score_ties_by_page_id(make_index):
    import torch

    idx = make_index("float32")
    v = torch.eye(16)[:2]
    pages = [make_pages(n=1)[0].__class__(pid, f"h-{pid}", v.clone(), None) for pid in ("c", "a", "d", "b")]
    idx.swap(idx.build(pages, {}))
    assert [h.page_id for h in idx.search(torch.eye(16)[:1], k=3)] == ["a", "b", "c"]


# ---------------------------------------------------------------- Elasticsearch: the lease
@pytest.fixture
def es_index(make_index):
    idx = make_index()
    if not isinstance(idx, ElasticsearchIndex):
        pytest.skip("the lease is the Elasticsearch lock's (the local lock is held by the OS for a live process)")
    return idx


def _write_lock(idx, **owner) -> None:
    idx.client.index(index=idx.lock_index, id="build", refresh=True, document={
        "pid": 4242, "host": "build-host-2", "started_at": "2026-11-29T10:00:00Z", "token": "t",
        "command": "anchorprune index build", **owner})


def test_es_a_live_lease_from_another_host_refuses_and_unlock_needs_force(es_index):
    import time

    _write_lock(es_index, expires_at=time.time() + 600)
    with pytest.raises(IndexLockedError, match="pid 4242 on host 'build-host-2'.*anchorprune index build"):
        es_index.build(make_pages(n=2), {})
    with pytest.raises(IndexLockedError, match="--force"):
        es_index.unlock()
    assert "removed the build lock of pid 4242" in es_index.unlock(force=True)
    assert es_index.build(make_pages(n=2), {}).number == 1


def test_es_an_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost_the_lock(es_index, caplog):
    old = twin(es_index)
    old.life.lease_s = 600.0
    with old.rebuild():
        # the holder stalls past its lease: another host sees an expired lease
        held = es_index.life.store.lock_owner()
        _write_lock(es_index, **{k: v for k, v in held.items() if k[0] != "_" and k != "expires_at"}, expires_at=0.0)
        with caplog.at_level(logging.WARNING):
            v1 = es_index.build(make_pages(n=2), {})
        assert v1.number == 1 and "lease expired" in caplog.text
        old.life._renewed = float("-inf")                 # its next step renews the lease ...
        with pytest.raises(IndexLockedError, match="lost its lock"):
            old.build(make_pages(n=2, seed=4), {})        # ... and stops instead of building on
    assert [v.number for v in es_index.versions()] == [1]


def test_es_an_owner_on_this_host_that_died_is_stale(es_index, caplog):
    import subprocess
    import sys
    import time

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(es_index, pid=dead.pid, host=socket.gethostname(), expires_at=time.time() + 600)
    with caplog.at_level(logging.WARNING):
        assert es_index.build(make_pages(n=2), {}).number == 1
    assert f"pid {dead.pid} on this host is no longer running" in caplog.text
    assert json.dumps(es_index.life.store.lock_owner()) == "null"     # released after the build


def test_retention_removes_a_damaged_version_and_keeps_the_newest_healthy_one_that_served(make_index, caplog):
    """No dead ends: a damaged rollback target never pushes out a healthy one."""
    idx = make_index()
    served_versions(idx, 3)                                  # v1, v2 served; v3 serves
    damage(idx, 2)
    with caplog.at_level(logging.WARNING):
        assert idx.prune_versions(keep=2) == [2]             # not [1]: v1 is the newest healthy one that served
    assert "v2 is damaged and does not serve: removing it" in caplog.text
    assert [v.number for v in idx.versions()] == [1, 3] and idx.previous().number == 1
    assert all(h.ok for h in idx.health(full=True))


def test_a_rebuild_starts_from_an_unreadable_pointer_and_serves_its_version(make_index):
    idx = make_index()
    served_versions(idx, 2)
    break_pointer(idx)
    with idx.rebuild() as started:
        v3 = idx.build(make_pages(n=3, seed=30, prefix="fresh-"), {})
        idx.swap(v3, expected=started)                       # the pointer held garbage: replaced whatever it holds
    assert idx.current().number == 3 and idx.life.pointer_problem() is None
    idx.prune_versions(keep=2)
    assert idx.previous() is not None
