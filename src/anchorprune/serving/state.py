"""What the search service holds: the index, one query encoder per champion spec, and the version a request uses.

Hot swap, without touching the index's life cycle:

- Every request **pins** one serving version (:meth:`SearchState.pin`): the index's pointer is read (local:
  one small file, ``CURRENT``; Elasticsearch: the alias, at most every ``check_interval`` seconds) and,
  when it names the version already opened, the opened version is reused; the query is encoded with
  *that version's* spec (its manifest's ``meta.spec``) and searched over *that version*
  (:class:`PinnedIndex`), so the hits, the scores and the version reported belong together even when a
  swap lands in the middle of the request.
- A new version is opened once, under a writer lock that waits for the requests still searching the old
  one (a local index drops the RAM copy of a swapped-out version when it opens the next). Requests that
  arrive meanwhile wait a few milliseconds; none fails, and none is answered from a mix of versions.
- A version whose champion differs loads its query encoder once; encoders are kept per spec.

Compute runs on **one worker thread** (:meth:`SearchState.search` hands it a job and waits): the requests
queued while it searches are taken together, encoded in one batch and searched in one ``search_report``
call (one pass over the version's vectors for all of them), pinned to one version. Concurrent requests
therefore never run torch at the same time (on a busy 2-core host, 8 request threads each running torch's
intra-op pool cost 10x more CPU per query than one thread; see docs/serving.md), and torch is limited to
``torch_threads`` intra-op threads (default 1). A batch is grouped by ``k``; when a batched call fails, its
jobs are rerun one by one, so one request's bad query is answered for that request alone.

The index is used through its facade: ``search_report`` run against the captured serving version (the
``Serving`` a backend's ``_serving`` returns), ``life.serving()`` for the pointer, ``current()`` /
manifest for the spec. Nothing under ``anchorprune.index`` is changed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from anchorprune.index.facade import Serving, VersionedIndex

log = logging.getLogger(__name__)


class PinnedIndex:
    """The index, answering every search from one captured serving version (the facade's search policy)."""

    search_report = VersionedIndex.search_report

    def __init__(self, index: VersionedIndex, serving: Serving):
        self._index = index
        self._sv = serving

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def _serving(self) -> Serving:
        return self._sv


@dataclass
class Pinned:
    """One opened serving version and what a search of it needs."""

    number: int
    serving: Serving
    spec: Any                       # ChampionSpec
    meta: dict[str, Any]
    opened_at: float = field(default_factory=time.time)

    @property
    def model(self) -> dict[str, Any]:
        from anchorprune.promotion.registry import model_name

        name = self.meta.get("model") or model_name(self.spec.backbone.get("name", "?"))
        return {"name": name, "version": str(self.meta.get("model_version") or self.spec.version or "")}


@dataclass
class _Job:
    """Queries of one request for the compute worker, and where their answer goes."""

    queries: list[str]
    k: int
    future: Future = field(default_factory=Future)


class _ReadersWriter:
    """Many requests search at once; opening a new version waits for them and holds new ones briefly."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class SearchState:
    """The serving index of a workspace and its query encoders, loaded once (see the module docstring)."""

    #: most queries searched in one batch (a POST of more is one batch on its own)
    max_batch_queries = 64
    #: seconds an idle worker thread waits for work before it ends (the next search starts a new one)
    worker_idle_s = 30.0

    def __init__(self, ws, index=None, check_interval: float | None = None, torch_threads: int | None = 1):
        from anchorprune.stages.index import open_serving_index

        self.ws = ws
        self.index = index if index is not None else open_serving_index(ws)
        self.backend = getattr(self.index, "backend", "local")
        # reading CURRENT costs a few microseconds; the alias is a request to the cluster
        self.check_interval = (0.0 if self.backend == "local" else 1.0) if check_interval is None else check_interval
        self.started = time.time()
        self._rw = _ReadersWriter()
        self._open_lock = threading.Lock()
        self._encoder_lock = threading.Lock()
        self._pinned: Pinned | None = None
        self._checked_at = 0.0
        self._encoders: dict[str, Any] = {}
        self._qcache: dict[tuple[str, str], torch.Tensor] = {}
        self.query_cache_size = 4096
        self.swaps = 0
        self.torch_threads = torch_threads
        self._jobs: list[_Job] = []
        self._jobs_cv = threading.Condition()
        self._worker_running = False
        self.batches = 0                # search_report calls made by the worker
        self.batched_queries = 0        # queries they answered
        self.largest_batch = 0          # most queries the worker took at once

    # ------------------------------------------------------------ versions
    def _pointer(self) -> int | None:
        return self.index.life.serving()

    def _spec_of(self, number: int) -> tuple[Any, dict[str, Any]]:
        from anchorprune.promotion.registry import ChampionSpec
        from anchorprune.stages.search import serving_spec

        info = next((v for v in self.index.versions() if v.number == number), None)
        meta = (info.manifest.get("meta") or {}) if info is not None else {}
        blob = meta.get("spec")
        spec = ChampionSpec.from_json(json.dumps(blob)) if blob else serving_spec(self.ws, self.index)
        return spec, meta

    def _open(self) -> Pinned:
        """Open the serving version (writer side: no request is searching while a backend opens it)."""
        with self._rw.write():
            sv = self.index._serving()            # the facade's contract: the serving version, opened and checked
            cur = self._pinned
            if cur is not None and cur.number == sv.number:
                cur.serving = sv
                return cur
            spec, meta = self._spec_of(sv.number)
            pinned = Pinned(sv.number, sv, spec, meta)
            self.encoder(spec)                    # load a new champion's encoder before the version serves here
            if cur is not None:
                self.swaps += 1
                log.info("search service: index %s v%d -> v%d", self.index.name, cur.number, sv.number)
            self._pinned = pinned
            return pinned

    def current(self) -> Pinned:
        """The pinned serving version, reopened when the pointer moved (checked every ``check_interval`` s)."""
        cur = self._pinned
        now = time.monotonic()
        if cur is not None and now - self._checked_at < self.check_interval:
            return cur
        n = self._pointer()
        self._checked_at = now
        if cur is not None and n == cur.number:
            return cur
        with self._open_lock:
            cur = self._pinned
            if cur is not None and n == cur.number:
                return cur
            return self._open()

    @contextmanager
    def pin(self) -> Iterator[Pinned]:
        """The version one request searches from start to end (held open for it while it runs)."""
        while True:
            p = self.current()
            with self._rw.read():
                if self._pinned is p:         # not replaced between reading it and taking the reader side
                    yield p
                    return

    # ------------------------------------------------------------ encoders and search
    def encoder(self, spec):
        key = json.dumps(spec.backbone, sort_keys=True)
        enc = self._encoders.get(key)
        if enc is None:
            with self._encoder_lock:
                enc = self._encoders.get(key)
                if enc is None:
                    enc = self.ws.backbone(spec.backbone_config())
                    self._encoders[key] = enc
        return enc

    def search(self, queries: Sequence[str], k: int) -> tuple[Pinned, list, Any]:
        """Encode ``queries`` with the pinned version's champion and search that version: (pinned, hits, report).

        Runs on the compute worker, batched with the other requests waiting (see the module docstring)."""
        job = _Job(list(queries), k)
        with self._jobs_cv:
            self._jobs.append(job)
            if not self._worker_running:
                self._worker_running = True
                threading.Thread(target=self._work, name="anchorprune-search", daemon=True).start()
            self._jobs_cv.notify()
        return job.future.result()

    def _work(self) -> None:
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        while True:
            with self._jobs_cv:
                if not self._jobs:
                    self._jobs_cv.wait(self.worker_idle_s)
                if not self._jobs:
                    self._worker_running = False
                    return
                batch, n = [], 0
                while self._jobs and (not batch or n + len(self._jobs[0].queries) <= self.max_batch_queries):
                    job = self._jobs.pop(0)
                    batch.append(job)
                    n += len(job.queries)
                self.largest_batch = max(self.largest_batch, n)
            by_k: dict[int, list[_Job]] = {}
            for job in batch:
                by_k.setdefault(job.k, []).append(job)
            for k, jobs in by_k.items():
                self._run(jobs, k)

    def _run(self, jobs: list[_Job], k: int) -> None:
        """One pinned version, one encode, one ``search_report`` for ``jobs``; each job gets its share."""
        try:
            queries = [q for job in jobs for q in job.queries]
            with self.pin() as p:
                qvecs = self.encode(p, queries)
                hits, report = PinnedIndex(self.index, p.serving).search_report(qvecs, k)
            self.batches += 1
            self.batched_queries += len(queries)
        except BaseException as exc:  # noqa: BLE001 - handed to the request(s) that asked
            if len(jobs) > 1:                # answer each alone: one bad query fails only its own request
                for job in jobs:
                    self._run([job], k)
                return
            jobs[0].future.set_exception(exc)
            return
        a = 0
        for job in jobs:
            job.future.set_result((p, hits[a:a + len(job.queries)], report))
            a += len(job.queries)

    def compute_stats(self) -> dict[str, Any]:
        return {"torch_threads": self.torch_threads or torch.get_num_threads(), "batches": self.batches,
                "queries": self.batched_queries, "largest_batch": self.largest_batch,
                "mean_batch": round(self.batched_queries / self.batches, 2) if self.batches else None}

    def encode(self, p: Pinned, queries: Sequence[str]) -> list[torch.Tensor]:
        """Query vectors from the pinned version's encoder; repeated queries come from a bounded cache
        (keyed by encoder and text: a new champion's encoder never reuses another's vectors)."""
        key = json.dumps(p.spec.backbone, sort_keys=True)
        out: list[torch.Tensor | None] = [self._qcache.get((key, q)) for q in queries]
        missing = list(dict.fromkeys(q for q, v in zip(queries, out, strict=True) if v is None))
        if missing:
            with torch.inference_mode():
                fresh = dict(zip(missing, self.encoder(p.spec).encode_queries(missing), strict=True))
            with self._encoder_lock:
                for q, v in fresh.items():
                    self._qcache[(key, q)] = v
                    while len(self._qcache) > self.query_cache_size:
                        self._qcache.pop(next(iter(self._qcache)), None)
            out = [fresh[q] if v is None else v for q, v in zip(queries, out, strict=True)]
        return out  # type: ignore[return-value]

    def health(self) -> dict[str, Any]:
        p = self.current()
        return {"status": "ok", "index": self.index.name, "backend": self.backend, "version": p.number,
                "model": p.model, "pages": p.serving.pages, "uptime_s": round(time.time() - self.started, 3),
                "swaps_seen": self.swaps, "compute": self.compute_stats()}
