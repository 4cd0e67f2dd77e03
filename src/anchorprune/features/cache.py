"""On-disk cache of PageFeatures: the model runs once per (page content, backbone identity, capture).

The backbone identity (:func:`cache_identity`) is model id, resolved revision, dtype and adapter version.

Entries live under ``<root>/<backbone key>/<capture key>/<hh>/<content hash>.pt``. Each file is a
``torch.save`` payload followed by its sha256 digest (32 bytes); an entry whose digest does not
match (a flipped byte, a truncated write) is reported with a warning and recomputed, never
trusted. Writes go to a temporary file first and are renamed into place. A window-only request
is served from an all-layers entry of the same page when one exists (its rows are identical).

:class:`QueryCache` does the same for query token vectors, keyed by (query text, model id,
backbone identity), under ``<root>/<backbone key>/queries/<hh>/<sha256 of the text>.pt``.

``root`` is a local path (the default) or an fsspec URL (``memory://``, ``s3://bucket/cache``, ...;
see :mod:`anchorprune.storage`): workers on several hosts can share one cache. Encoding takes a
claim per page (:mod:`anchorprune.features.claims`) before it runs the model, so two runs sharing a cache
never encode the same page twice: the second one waits for the first one's entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.features import PageFeatures
from anchorprune.features.claims import Claimant
from anchorprune.pages import Page
from anchorprune.redact import redact_text
from anchorprune.storage import Store, open_store

log = logging.getLogger(__name__)

DIGEST = 32


class CorruptEntryError(ValueError):
    """A cache entry failed its checksum or could not be decoded."""


def cache_identity(backbone: Backbone) -> dict[str, str]:
    """Everything about a backbone that changes its vectors (with the capture, which is a path level):
    model id, resolved revision, dtype, and the adapter class and its version.

    >>> from anchorprune.backbones.mock import MockBackbone
    >>> cache_identity(MockBackbone())["adapter"]
    'anchorprune.backbones.mock.MockBackbone/1'
    """
    missing = [a for a in ("model_id", "revision", "dtype", "ADAPTER_VERSION") if getattr(backbone, a, None) is None]
    if missing:
        raise TypeError(f"{type(backbone).__name__} lacks {missing} needed for the features cache key; "
                        "give the backbone these attributes (see backbones.base.Backbone)")
    cls = type(backbone)
    return {"model_id": backbone.model_id, "revision": str(backbone.revision), "dtype": str(backbone.dtype),
            "adapter": f"{cls.__module__}.{cls.__qualname__}/{backbone.ADAPTER_VERSION}"}


def backbone_key(backbone: Backbone) -> str:
    """A short stable key for :func:`cache_identity` (model id readable, the rest hashed)."""
    ident = cache_identity(backbone)
    blob = "\x1f".join(f"{k}={ident[k]}" for k in sorted(ident)).encode()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone.model_id)[-48:]
    return f"{safe}-{hashlib.sha256(blob).hexdigest()[:12]}"


def _seal(obj: dict) -> bytes:
    """``torch.save`` payload followed by its sha256 digest."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    return payload + hashlib.sha256(payload).digest()


def _unseal(data: bytes, where: str) -> dict:
    payload, digest = data[:-DIGEST], data[-DIGEST:]
    if len(data) <= DIGEST or hashlib.sha256(payload).digest() != digest:
        raise CorruptEntryError(f"{where}: checksum mismatch (truncated or modified)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure means the entry is unusable
        raise CorruptEntryError(f"{where}: cannot decode ({exc})") from exc


def _read_or_warn(store: Store, rel: str, decode):
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        return decode(data, store.url(rel))
    except CorruptEntryError as exc:
        log.warning("features cache: %s; recomputing", redact_text(exc))   # the entry URL may hold credentials
        return None


def encode_entry(f: PageFeatures) -> bytes:
    return _seal({
        "page_id": f.page_id, "content_hash": f.content_hash, "embeddings": f.embeddings.contiguous(),
        "centrality": f.centrality.contiguous(), "eos_attention": f.eos_attention.contiguous(),
        "positions": f.positions.contiguous(), "layers": list(f.layers), "num_layers": f.num_layers,
    })


def decode_entry(data: bytes, where: str = "entry") -> PageFeatures:
    d = _unseal(data, where)
    try:
        return PageFeatures(d["page_id"], d["content_hash"], d["embeddings"], d["centrality"],
                            d["eos_attention"], d["positions"], tuple(d["layers"]), int(d["num_layers"]))
    except Exception as exc:  # noqa: BLE001 - a payload of the wrong shape is as unusable as a bad digest
        raise CorruptEntryError(f"{where}: not a PageFeatures entry ({exc})") from exc


def select_layers(f: PageFeatures, layers: Sequence[int]) -> PageFeatures:
    """The same page with only ``layers``' rows (a window view of an all-layers entry)."""
    rows = f.rows_for(layers)
    return replace(f, centrality=f.centrality[rows], eos_attention=f.eos_attention[rows], layers=tuple(layers))


@dataclass
class EncodeReport:
    """What one :meth:`FeaturesCache.encode_missing` call did."""

    encoded: list[str] = field(default_factory=list)    # content hashes this call ran the model on
    cached: list[str] = field(default_factory=list)     # found in the cache (written earlier, or meanwhile by others)
    deferred: list[str] = field(default_factory=list)   # claimed by another live run: its entry will appear


class FeaturesCache:
    """Content-addressed PageFeatures store shared by every stage (a local folder or an fsspec URL)."""

    def __init__(self, root: str | Path, claim_ttl_s: float = 900.0, poll_s: float = 0.5) -> None:
        self.store = open_store(root)
        self.root = self.store.location
        self.claim_ttl_s = claim_ttl_s
        self.poll_s = poll_s

    def key(self, backbone: Backbone, capture_key: str, content_hash: str) -> str:
        """The entry's path relative to the cache root."""
        return f"{backbone_key(backbone)}/{capture_key}/{content_hash[:2]}/{content_hash}.pt"

    def path(self, backbone: Backbone, capture_key: str, content_hash: str) -> Path:
        """The entry's file (local caches only)."""
        return self.store.local_path(self.key(backbone, capture_key, content_hash))

    def _read(self, rel: str) -> PageFeatures | None:
        return _read_or_warn(self.store, rel, decode_entry)

    def get(self, backbone: Backbone, page: Page, capture: LayerCapture) -> PageFeatures | None:
        layers = capture.resolve(backbone.num_layers)
        f = self._read(self.key(backbone, capture.key, page.content_hash))
        if f is None and capture.layers is not None:
            full = self._read(self.key(backbone, LayerCapture.all().key, page.content_hash))
            f = select_layers(full, layers) if full is not None else None
        if f is None or f.layers != layers:
            return None
        return f if f.page_id == page.page_id else replace(f, page_id=page.page_id)

    def has(self, backbone: Backbone, page: Page, capture: LayerCapture) -> bool:
        """Whether an entry exists that could serve ``page`` (not verified: :meth:`get` does that)."""
        if self.store.exists(self.key(backbone, capture.key, page.content_hash)):
            return True
        return capture.layers is not None and self.store.exists(
            self.key(backbone, LayerCapture.all().key, page.content_hash))

    def put(self, backbone: Backbone, capture: LayerCapture, f: PageFeatures) -> None:
        self.store.write_atomic(self.key(backbone, capture.key, f.content_hash), encode_entry(f))

    def encode_missing(self, backbone: Backbone, pages: Sequence[Page], capture: LayerCapture,
                       batch_size: int = 4, claimant: Claimant | None = None,
                       on_batch: Callable[[int], None] | None = None) -> EncodeReport:
        """Run the model on the pages of ``pages`` that have no entry, writing each batch's entries at once.

        Each page is claimed before its batch runs (and checked again after claiming); a page
        another live run has claimed is left to it and reported as ``deferred``. A killed call
        loses at most the batch in flight: every finished batch is already in the cache.
        """
        claimant = claimant or Claimant(self.store, ttl_s=self.claim_ttl_s)
        report = EncodeReport()
        todo = [p for p in _unique_content(pages)]
        for start in range(0, len(todo), batch_size):
            held = []
            try:
                for page in todo[start:start + batch_size]:
                    if self.has(backbone, page, capture):
                        report.cached.append(page.content_hash)
                        continue
                    claim = claimant.acquire(self.key(backbone, capture.key, page.content_hash))
                    if claim is None:
                        report.deferred.append(page.content_hash)
                    elif self.has(backbone, page, capture):     # written between our check and our claim
                        claimant.release(claim)
                        report.cached.append(page.content_hash)
                    else:
                        held.append((page, claim))
                if held:
                    feats = backbone.encode_pages([p for p, _ in held], capture)
                    for (page, _), f in zip(held, feats, strict=True):
                        self.put(backbone, capture, f)
                        report.encoded.append(page.content_hash)
            finally:
                for _, claim in held:      # after the entries are written (or on failure: free them for others)
                    claimant.release(claim)
            if on_batch is not None:
                on_batch(len(todo[start:start + batch_size]))
        return report

    def get_or_encode(self, backbone: Backbone, pages: Sequence[Page], capture: LayerCapture,
                      batch_size: int = 4, progress: bool = True, wait_s: float | None = None) -> list[PageFeatures]:
        """Features for ``pages`` in order; only cache misses run the model, in batches.

        Pages another run is encoding are waited for (up to ``wait_s`` seconds, default twice the
        claim time-to-live), and taken over if that run dies.
        """
        found: dict[int, PageFeatures] = {}
        misses: list[int] = []
        for i, page in enumerate(pages):
            f = self.get(backbone, page, capture)
            if f is None:
                misses.append(i)
            else:
                found[i] = f
        if misses:
            log.info("features cache: %d hits, %d pages to encode with %s", len(found), len(misses), backbone.name)
        claimant = Claimant(self.store, ttl_s=self.claim_ttl_s)
        deadline = time.monotonic() + (2 * self.claim_ttl_s if wait_s is None else wait_s)
        with tqdm(total=len(_unique_content(pages[i] for i in misses)), desc=f"encode {backbone.name}",
                  unit="page", disable=not progress or not misses) as bar:
            pending = [pages[i] for i in misses]
            while pending:
                report = self.encode_missing(backbone, pending, capture, batch_size, claimant)
                bar.update(len(report.encoded) + len(report.cached))
                waiting = set(report.deferred)
                if not waiting:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"features cache {self.root}: {len(waiting)} pages still claimed by another "
                                       f"run after waiting; rerun, or remove their *.claim.* files if that run "
                                       "is gone")
                time.sleep(self.poll_s)
                pending = [p for p in pending if p.content_hash in waiting]
        for i in misses:
            f = self.get(backbone, pages[i], capture)
            if f is None:   # an entry that failed its checksum after another run wrote it: encode it here
                f = backbone.encode_pages([pages[i]], capture)[0]
                self.put(backbone, capture, f)
                f = replace(f, page_id=pages[i].page_id)
            found[i] = f
        return [found[i] for i in range(len(pages))]


def _unique_content(pages) -> list[Page]:
    """One page per content hash (two ids with the same content are one entry)."""
    seen: dict[str, Page] = {}
    for p in pages:
        seen.setdefault(p.content_hash, p)
    return list(seen.values())


class QueryCache:
    """Query token vectors ``[m, d]`` keyed by (query text, model id, revision); same sealing as pages."""

    def __init__(self, root: str | Path) -> None:
        self.store = open_store(root)
        self.root = self.store.location

    def key(self, backbone: Backbone, text: str) -> str:
        h = hashlib.sha256(text.encode()).hexdigest()
        return f"{backbone_key(backbone)}/queries/{h[:2]}/{h}.pt"

    def path(self, backbone: Backbone, text: str) -> Path:
        """The entry's file (local caches only)."""
        return self.store.local_path(self.key(backbone, text))

    def get(self, backbone: Backbone, text: str) -> torch.Tensor | None:
        d = _read_or_warn(self.store, self.key(backbone, text), _unseal)
        return d["vectors"] if d is not None and d.get("text") == text else None

    def get_or_encode(self, backbone: Backbone, texts: Sequence[str], batch_size: int = 32,
                      progress: bool = True) -> list[torch.Tensor]:
        """Vectors for ``texts`` in order; only texts not cached run the backbone's query encoder."""
        found = {i: v for i, t in enumerate(texts) if (v := self.get(backbone, t)) is not None}
        misses = [i for i in range(len(texts)) if i not in found]
        with tqdm(total=len(misses), desc=f"queries {backbone.name}", unit="query",
                  disable=not progress or not misses) as bar:
            for start in range(0, len(misses), batch_size):
                idx = misses[start:start + batch_size]
                for i, v in zip(idx, backbone.encode_queries([texts[i] for i in idx]), strict=True):
                    v = v.float().contiguous()                            # [m, d]
                    self.store.write_atomic(self.key(backbone, texts[i]), _seal({"text": texts[i], "vectors": v}))
                    found[i] = v
                bar.update(len(idx))
        return [found[i] for i in range(len(texts))]
