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


def plan_shards(pages: Sequence[Page], shard_pages: int) -> list[list[Page]]:
    """``pages`` in consecutive shards of at most ``shard_pages``.

    >>> [len(s) for s in plan_shards([Page(str(i), str(i)) for i in range(70)], 32)]
    [32, 32, 6]
    """
    if shard_pages < 1:
        raise ValueError(f"shard_pages must be >= 1, got {shard_pages}")
    return [list(pages[i:i + shard_pages]) for i in range(0, len(pages), shard_pages)]


@dataclass
class ShardReport:
    """What one shard did: content hashes encoded here, found cached, or left to another run's claim."""

    encoded: list[str]
    cached: list[str]
    deferred: list[str]
    started: float = 0.0      # time.time() when the shard began (after the worker's backbone was loaded)
    finished: float = 0.0
    load_s: float = 0.0       # loading the backbone (the first shard on each worker only)
    worker: str = ""          # host:pid

    @property
    def pages(self) -> int:
        return len(self.encoded) + len(self.cached) + len(self.deferred)

    def to_dict(self) -> dict:
        return asdict(self)


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


#: set in the environment of the worker processes of a local cluster: their torch thread count
WORKER_THREADS_ENV = "ANCHORPRUNE_WORKER_TORCH_THREADS"


def encode_shard(bcfg: BackboneConfig, pages: Sequence[Page], cache_dir: str | Path, capture: LayerCapture,
                 claim_ttl_s: float = 900.0) -> ShardReport:
    """Encode one shard's pages that are still missing into the cache (claimed page by page).

    Runs in a worker: the backbone is loaded there once. Every batch's entries are written as soon
    as it finishes, so a shard killed midway leaves its finished batches in the cache.
    """
    from anchorprune.features.cache import FeaturesCache

    threads = os.environ.get(WORKER_THREADS_ENV)
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    t0 = time.time()
    backbone = worker_backbone(bcfg)
    started = time.time()
    report = FeaturesCache(cache_dir, claim_ttl_s=claim_ttl_s).encode_missing(
        backbone, pages, capture, batch_size=bcfg.batch_size)
    return ShardReport(report.encoded, report.cached, report.deferred, started=started, finished=time.time(),
                       load_s=started - t0, worker=f"{socket.gethostname()}:{os.getpid()}")
