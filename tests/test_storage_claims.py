"""The features cache on fsspec URLs, bad locations, and claims: two runs sharing a cache never encode a page twice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import torch

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.config import ConfigError, load_settings
from anchorprune.features.cache import FeaturesCache, QueryCache
from anchorprune.features.claims import Claimant, claim_file
from anchorprune.pages import Page
from anchorprune.storage import StorageError, open_store


def pages(n=6):
    return [Page(f"p{i}", f"h{i:02d}", text=f"topic:t{i}") for i in range(n)]


def memory_url() -> str:
    return f"memory://cache-{uuid.uuid4().hex[:8]}"


class SlowCountingMock(MockBackbone):
    """Records every page it encodes (thread-safe) and takes a little time per batch, like a real model."""

    def __init__(self, delay=0.05, **kw):
        super().__init__(**kw)
        self.delay, self.encoded, self.lock = delay, [], threading.Lock()

    def encode_pages(self, pages, capture):
        time.sleep(self.delay)
        with self.lock:
            self.encoded += [p.content_hash for p in pages]
        return super().encode_pages(pages, capture)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_cache_round_trips_through_urls(tmp_path, scheme):
    url = f"file://{tmp_path}/features" if scheme == "file" else memory_url()
    first, again = MockBackbone(), MockBackbone()
    written = FeaturesCache(url).get_or_encode(first, pages(), LayerCapture.all(), batch_size=4, progress=False)
    read = FeaturesCache(url).get_or_encode(again, pages(), LayerCapture.all(), batch_size=4, progress=False)
    assert first.page_calls == 2 and again.page_calls == 0          # a second cache object reads, never encodes
    for a, b in zip(written, read, strict=True):
        assert a.page_id == b.page_id and a.layers == b.layers
        assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.centrality, b.centrality)
        assert torch.equal(a.eos_attention, b.eos_attention) and torch.equal(a.positions, b.positions)
    window = FeaturesCache(url).get_or_encode(again, pages(2), LayerCapture.window([3, 4]), progress=False)
    assert again.page_calls == 0 and window[0].layers == (3, 4)      # window served from the all-layers entry
    queries = QueryCache(url)
    vecs = queries.get_or_encode(first, ["which page is about topic:t1?"], progress=False)
    assert torch.equal(QueryCache(url).get(first, "which page is about topic:t1?"), vecs[0])
    if scheme == "file":   # the URL and the plain path are the same cache
        assert FeaturesCache(tmp_path / "features").get(MockBackbone(), pages()[0], LayerCapture.all()) is not None


def test_memory_entry_with_flipped_byte_is_recomputed():
    url, mock = memory_url(), MockBackbone()
    cache = FeaturesCache(url)
    cache.get_or_encode(mock, pages(1), LayerCapture.all(), progress=False)
    key = cache.key(mock, "all", "h00")
    data = bytearray(cache.store.read_bytes(key))
    data[len(data) // 2] ^= 0xFF
    cache.store.write_atomic(key, bytes(data))
    mock.page_calls = 0
    cache.get_or_encode(mock, pages(1), LayerCapture.all(), progress=False)
    assert mock.page_calls == 1


@pytest.mark.parametrize("url, words", [
    ("nosuch://bucket/cache", ["unknown URL scheme 'nosuch'", "nosuch://bucket/cache"]),
    ("ftp://example.org/cache", ["'ftp' has no atomic write", "ftp://example.org/cache"]),
    ("http://example.org/cache", ["'http' has no atomic write"]),
])
def test_unusable_location_is_refused_before_anything_is_written(url, words):
    with pytest.raises(StorageError) as err:
        FeaturesCache(url)
    assert all(w in str(err.value) for w in words)


def test_bad_url_in_params_names_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("paths: {features_dir: 'ftp://host/features'}\n"
                 "backbones: [{name: m, kind: mock, model_id: x}]\n")
    with pytest.raises(ConfigError, match=r"paths\.features_dir.*ftp://host/features.*no atomic write"):
        load_settings(p)
    p.write_text("paths: {index_dir: 'memory://indexes'}\nbackbones: [{name: m, kind: mock, model_id: x}]\n")
    with pytest.raises(ConfigError, match=r"paths\.index_dir.*memory-maps"):
        load_settings(p)


def test_failed_write_leaves_the_old_entry(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    store.write_atomic("a/e.pt", b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_atomic("a/e.pt", b"new-but-never-renamed")
    assert store.read_bytes("a/e.pt") == b"old" and store.list("a") == ["e.pt"]   # no temp file left


# ---------------------------------------------------------------- claims
@pytest.mark.parametrize("where", ["file", "memory"])
def test_two_concurrent_runs_never_encode_a_page_twice(tmp_path, where):
    url = str(tmp_path / "shared") if where == "file" else memory_url()
    a, b = SlowCountingMock(), SlowCountingMock()
    results, errors = {}, []

    def run(name, mock, order):
        try:
            results[name] = FeaturesCache(url, poll_s=0.02).get_or_encode(mock, order, LayerCapture.all(),
                                                                        batch_size=2, progress=False)
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    ps = pages(12)
    threads = [threading.Thread(target=run, args=("a", a, ps)), threading.Thread(target=run, args=("b", b, ps[::-1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(a.encoded + b.encoded) == sorted(p.content_hash for p in ps)   # each page exactly once in all
    assert a.encoded and b.encoded                                              # and both runs did work
    for x, y in zip(results["a"], results["b"][::-1], strict=True):
        assert x.page_id == y.page_id and torch.equal(x.embeddings, y.embeddings)


def test_live_claim_is_waited_for_not_encoded(tmp_path):
    cache, mock = FeaturesCache(tmp_path, poll_s=0.02), SlowCountingMock()
    other = Claimant(cache.store, "other-run")
    held = other.acquire(cache.key(mock, "all", "h00"))

    def other_run_finishes():
        time.sleep(0.3)
        feats = MockBackbone().encode_pages(pages(1), LayerCapture.all())[0]
        FeaturesCache(tmp_path).put(mock, LayerCapture.all(), feats)      # under the waiting run's identity
        other.release(held)

    t = threading.Thread(target=other_run_finishes)
    t.start()
    out = cache.get_or_encode(mock, pages(3), LayerCapture.all(), batch_size=3, progress=False)
    t.join()
    assert sorted(mock.encoded) == ["h01", "h02"] and out[0].page_id == "p0"    # h00 came from the other run


def test_claim_of_a_killed_process_is_taken_over_at_once(tmp_path):
    cache, mock = FeaturesCache(tmp_path, claim_ttl_s=3600), SlowCountingMock(delay=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    key = cache.key(mock, "all", "h00")
    import socket

    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "killed-run", "time": time.time()}
    cache.store.create_exclusive(claim_file(key, 0), json.dumps(stale).encode())
    out = cache.get_or_encode(mock, pages(1), LayerCapture.all(), progress=False, wait_s=5)
    assert mock.encoded == ["h00"] and out[0].page_id == "p0"
    assert not cache.store.exists(claim_file(key, 0)) and not cache.store.exists(claim_file(key, 1))


def test_claim_from_another_host_is_stale_only_after_its_ttl(tmp_path):
    store = open_store(tmp_path)
    remote = {"host": "some-other-host", "pid": 1, "token": "remote", "time": time.time()}
    store.create_exclusive(claim_file("e.pt", 0), json.dumps(remote).encode())
    assert Claimant(store, ttl_s=60).acquire("e.pt") is None               # young: its owner may be alive
    remote["time"] -= 120
    store.write_atomic(claim_file("e.pt", 0), json.dumps(remote).encode())
    took = Claimant(store, ttl_s=60).acquire("e.pt")
    assert took is not None and took.generation == 1                      # taken over in the next generation
    assert Claimant(store, ttl_s=60).acquire("e.pt") is None               # and exactly one taker wins it
