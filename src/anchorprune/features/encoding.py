"""Encode a dataset once per backbone: page features (through the cache) and query vectors."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.features import PageFeatures
from anchorprune.pages import Page

log = logging.getLogger(__name__)


@dataclass
class EncodedCorpus:
    """A dataset as one backbone sees it."""

    backbone: str
    num_layers: int
    features: dict[str, PageFeatures]      # page_id -> features
    queries: dict[str, torch.Tensor]       # query_id -> [m, d]

    @property
    def page_ids(self) -> list[str]:
        return list(self.features)


def encode_pages(
    backbone: Backbone,
    pages: Iterable[Page],
    capture: LayerCapture,
    cache_dir: str | Path | None,
    batch_size: int,
    claim_ttl_s: float = 900.0,
) -> dict[str, PageFeatures]:
    """Features per page id; only pages missing from the cache (a folder or an fsspec URL) run the model."""
    pages = list(pages)
    if cache_dir is None:
        feats = []
        for i in range(0, len(pages), batch_size):
            feats += backbone.encode_pages(pages[i:i + batch_size], capture)
    else:
        from anchorprune.features.cache import FeaturesCache

        feats = FeaturesCache(cache_dir, claim_ttl_s=claim_ttl_s).get_or_encode(backbone, pages, capture,
                                                                               batch_size=batch_size)
    # backbones keep the ids they are given, and the cache re-labels a content hit with the asked id
    return {page.page_id: f for page, f in zip(pages, feats, strict=True)}


def encode_queries(backbone: Backbone, queries: Mapping[str, str], batch_size: int = 32,
                   cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """``[m, d]`` vectors per query id; with ``cache_dir`` each (text, model, revision) is encoded once."""
    qids = list(queries)
    if cache_dir is not None:
        from anchorprune.features.cache import QueryCache

        vecs = QueryCache(cache_dir).get_or_encode(backbone, [queries[q] for q in qids], batch_size=batch_size)
        return {q: v.float() for q, v in zip(qids, vecs, strict=True)}
    out: dict[str, torch.Tensor] = {}
    for i in range(0, len(qids), batch_size):
        chunk = qids[i:i + batch_size]
        for qid, vecs in zip(chunk, backbone.encode_queries([queries[q] for q in chunk]), strict=True):
            out[qid] = vecs.float()
    return out


def encode_dataset(
    backbone: Backbone,
    pages: Iterable[Page],
    queries: Mapping[str, str],
    capture: LayerCapture,
    cache_dir: str | Path | None,
    batch_size: int,
    claim_ttl_s: float = 900.0,
) -> EncodedCorpus:
    features = encode_pages(backbone, pages, capture, cache_dir, batch_size, claim_ttl_s)
    log.info("encoded %d pages and %d queries with %s", len(features), len(queries), backbone.name)
    return EncodedCorpus(backbone.name, backbone.num_layers, features,
                         encode_queries(backbone, queries, cache_dir=cache_dir))


# ---------------------------------------------------------------- sharded encoding (flows/encode.py maps these)
def missing_pages(cache_dir: str | Path, backbone: Backbone, pages: Iterable[Page], capture: LayerCapture) -> list[Page]:
    """The pages (one per content hash) that have no entry in the features cache yet."""
    from anchorprune.features.cache import FeaturesCache

    cache, seen, out = FeaturesCache(cache_dir), set(), []
    for page in pages:
        if page.content_hash not in seen:
            seen.add(page.content_hash)
            if not cache.has(backbone, page, capture):
                out.append(page)
    return out


def missing_page_ids(cache_dir: str | Path, backbone: Backbone, dataset_dir: str | Path,
                     capture: LayerCapture) -> list[str]:
    """The page ids (one per content hash) of ``dataset_dir`` with no cache entry yet, read from the corpus
    table alone: no image is opened, so planning costs the same memory for 100 or 100,000 pages."""
    from anchorprune.data.schema import read_tables

    corpus = read_tables(dataset_dir)[0]
    refs = (Page(pid, h) for pid, h in zip(corpus["page_id"], corpus["content_hash"], strict=True))
    return [p.page_id for p in missing_pages(cache_dir, backbone, refs, capture)]


def plan_shards(pages: Sequence, shard_pages: int) -> list[list]:
    """``pages`` (pages or page ids) in consecutive shards of at most ``shard_pages``.

    >>> [len(s) for s in plan_shards([str(i) for i in range(70)], 32)]
    [32, 32, 6]
    """
    if shard_pages < 1:
        raise ValueError(f"shard_pages must be >= 1, got {shard_pages}")
    return [list(pages[i:i + shard_pages]) for i in range(0, len(pages), shard_pages)]


#: shards submitted per worker and not yet finished: enough that no worker waits between shards, few enough that
#: the client (which holds the Dask scheduler of a local cluster and every submitted task's state) stays flat
#: in the number of shards; with all 335 shards of the 10,749-page corpus submitted at once the client held
#: 1.6 GB (benchmarks/encode_memory.py --corpus debian-bench)
SHARDS_IN_FLIGHT_PER_WORKER = 3


def shards_in_flight(workers: int) -> int:
    """At most this many shards are submitted and unfinished at a time.

    >>> shards_in_flight(2)
    6
    """
    return max(1, workers) * SHARDS_IN_FLIGHT_PER_WORKER


@dataclass
class ShardReport:
    """What one shard did, as counts: pages encoded here, found cached, or left to another run's claim."""

    encoded: int
    cached: int
    deferred: int
    started: float = 0.0      # time.time() when the shard began (after the worker's backbone was loaded)
    finished: float = 0.0
    load_s: float = 0.0       # loading the backbone (the first shard on each worker only)
    worker: str = ""          # host:pid
    rss_anon_kb: int = 0      # the worker's /proc RssAnon after the shard (0 where /proc is absent)
    rss_file_kb: int = 0

    @property
    def pages(self) -> int:
        return self.encoded + self.cached + self.deferred

    def to_dict(self) -> dict:
        return asdict(self)


def proc_rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """``(RssAnon, RssFile)`` of a process in KiB from ``/proc/<pid>/status`` (``(0, 0)`` where unreadable)."""
    anon = file = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("RssFile:"):
                file = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return anon, file


_BACKBONES: dict[str, Backbone] = {}
_BACKBONES_LOCK = threading.Lock()


def worker_backbone(bcfg: BackboneConfig) -> Backbone:
    """The backbone for ``bcfg``, loaded once per worker process (shards of a run share it)."""
    key = bcfg.model_dump_json()
    with _BACKBONES_LOCK:
        if key not in _BACKBONES:
            from anchorprune.backbones import load_backbone

            _BACKBONES[key] = load_backbone(bcfg)
        return _BACKBONES[key]


_CORPORA: dict[str, tuple[float, object]] = {}


def shard_pages(dataset_dir: str | Path, page_ids: Sequence[str]) -> list[Page]:
    """The pages ``page_ids`` of the dataset at ``dataset_dir``, read by this worker from disk.

    The corpus table (ids, hashes, text; no pixels) is read once per worker and dataset version;
    each page's image is opened lazily from its file, so a shard holds only its own pages.
    """
    from anchorprune.data.schema import CORPUS_FILE, load_dataset_dir

    path = Path(dataset_dir)
    mtime = (path / CORPUS_FILE).stat().st_mtime
    with _BACKBONES_LOCK:
        hit = _CORPORA.get(str(path))
        if hit is None or hit[0] != mtime:
            _CORPORA.clear()                  # one dataset per worker at a time
            _CORPORA[str(path)] = hit = (mtime, load_dataset_dir(path))
    dataset = hit[1]
    wanted = set(page_ids)
    pages = {p.page_id: p for p in dataset.pages_for(wanted)}
    missing = [pid for pid in page_ids if pid not in pages]
    if missing:
        raise KeyError(f"{path}: {len(missing)} page ids of this shard are not in the corpus "
                       f"(first {missing[0]!r}); the dataset changed since the shards were planned: rerun encode")
    return [pages[pid] for pid in page_ids]


#: set in the environment of the worker processes of a local cluster: their torch thread count
WORKER_THREADS_ENV = "ANCHORPRUNE_WORKER_TORCH_THREADS"


def encode_shard(bcfg: BackboneConfig, dataset_dir: str | Path, page_ids: Sequence[str], cache_dir: str | Path,
                 capture: LayerCapture, claim_ttl_s: float = 900.0) -> ShardReport:
    """Encode one shard's pages that are still missing into the cache (claimed page by page).

    Runs in a worker: it gets page *references* (the dataset folder and page ids), reads those pages
    itself, and returns counts; no pixels or features travel through the scheduler. The backbone is
    loaded once per worker. Every batch's entries are written as soon as it finishes, so a shard
    killed midway leaves its finished batches in the cache.
    """
    from anchorprune.features.cache import FeaturesCache

    threads = os.environ.get(WORKER_THREADS_ENV)
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    t0 = time.time()
    backbone = worker_backbone(bcfg)
    started = time.time()
    pages = shard_pages(dataset_dir, page_ids)
    report = FeaturesCache(cache_dir, claim_ttl_s=claim_ttl_s).encode_missing(
        backbone, pages, capture, batch_size=bcfg.batch_size)
    del pages
    anon, file = proc_rss_kb()
    return ShardReport(len(report.encoded), len(report.cached), len(report.deferred), started=started,
                       finished=time.time(), load_s=started - t0, worker=f"{socket.gethostname()}:{os.getpid()}",
                       rss_anon_kb=anon, rss_file_kb=file)


# ---------------------------------------------------------------- streaming (the encode stage's summary)
@dataclass
class EncodeSummary:
    """What the encode stage reports, without holding any page's features."""

    backbone: str
    num_layers: int
    pages: int
    queries: int
    tokens: int

    @property
    def tokens_per_page(self) -> float:
        return self.tokens / max(1, self.pages)


def encode_streaming(backbone: Backbone, pages: Iterable[Page], queries: Mapping[str, str], capture: LayerCapture,
                     cache_dir: str | Path, batch_size: int, claim_ttl_s: float = 900.0,
                     chunk_pages: int = 64) -> EncodeSummary:
    """Fill the cache for every page and query, ``chunk_pages`` pages at a time: memory flat in the pages."""
    from anchorprune.features.cache import FeaturesCache

    cache = FeaturesCache(cache_dir, claim_ttl_s=claim_ttl_s)
    n = tokens = 0
    chunk: list[Page] = []

    def flush() -> None:
        nonlocal n, tokens
        for f in cache.get_or_encode(backbone, chunk, capture, batch_size=batch_size, progress=False):
            n += 1
            tokens += f.num_tokens
        chunk.clear()

    for page in pages:
        chunk.append(page)
        if len(chunk) >= chunk_pages:
            flush()
    if chunk:
        flush()
    nq = len(encode_queries(backbone, queries, cache_dir=cache_dir))
    log.info("encoded %d pages and %d queries with %s", n, nq, backbone.name)
    return EncodeSummary(backbone.name, backbone.num_layers, n, nq, tokens)
