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

    def __init__(self, ws, index=None, check_interval: float | None = None):
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
        """Encode ``queries`` with the pinned version's champion and search that version: (pinned, hits, report)."""
        with self.pin() as p:
            qvecs = self.encode(p, queries)
            hits, report = PinnedIndex(self.index, p.serving).search_report(qvecs, k)
            return p, hits, report

    def encode(self, p: Pinned, queries: Sequence[str]) -> list[torch.Tensor]:
        """Query vectors from the pinned version's encoder; repeated queries come from a bounded cache
        (keyed by encoder and text: a new champion's encoder never reuses another's vectors)."""
        key = json.dumps(p.spec.backbone, sort_keys=True)
        out: list[torch.Tensor | None] = [self._qcache.get((key, q)) for q in queries]
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            with torch.inference_mode():
                fresh = self.encoder(p.spec).encode_queries([queries[i] for i in missing])
            with self._encoder_lock:
                for i, v in zip(missing, fresh, strict=True):
                    out[i] = v
                    self._qcache[(key, queries[i])] = v
                    while len(self._qcache) > self.query_cache_size:
                        self._qcache.pop(next(iter(self._qcache)), None)
        return out  # type: ignore[return-value]

    def health(self) -> dict[str, Any]:
        p = self.current()
        return {"status": "ok", "index": self.index.name, "backend": self.backend, "version": p.number,
                "model": p.model, "pages": p.serving.pages, "uptime_s": round(time.time() - self.started, 3),
                "swaps_seen": self.swaps}
