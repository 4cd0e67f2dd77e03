"""On-disk cache of PageFeatures: the model runs once per (page content, backbone identity, capture).

The backbone identity (:func:`cache_identity`) is model id, resolved revision, dtype and adapter version.

Entries live under ``<root>/<backbone key>/<capture key>/<hh>/<content hash>.pt``. Each file is a
``torch.save`` payload followed by its sha256 digest (32 bytes); an entry whose digest does not
match (a flipped byte, a truncated write) is reported with a warning and recomputed, never
trusted. Writes go to a temporary file first and are renamed into place. A window-only request
is served from an all-layers entry of the same page when one exists (its rows are identical).

:class:`QueryCache` does the same for query token vectors, keyed by (query text, model id,
backbone identity), under ``<root>/<backbone key>/queries/<hh>/<sha256 of the text>.pt``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.features import PageFeatures
from anchorprune.pages import Page

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


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_or_warn(path: Path, decode):
    if not path.exists():
        return None
    try:
        return decode(path.read_bytes(), str(path))
    except CorruptEntryError as exc:
        log.warning("features cache: %s; recomputing", exc)
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


class FeaturesCache:
    """Content-addressed PageFeatures store shared by every stage."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, backbone: Backbone, capture_key: str, content_hash: str) -> Path:
        return self.root / backbone_key(backbone) / capture_key / content_hash[:2] / f"{content_hash}.pt"

    def _read(self, path: Path) -> PageFeatures | None:
        return _read_or_warn(path, decode_entry)

    def get(self, backbone: Backbone, page: Page, capture: LayerCapture) -> PageFeatures | None:
        layers = capture.resolve(backbone.num_layers)
        f = self._read(self.path(backbone, capture.key, page.content_hash))
        if f is None and capture.layers is not None:
            full = self._read(self.path(backbone, LayerCapture.all().key, page.content_hash))
            f = select_layers(full, layers) if full is not None else None
        if f is None or f.layers != layers:
            return None
        return f if f.page_id == page.page_id else replace(f, page_id=page.page_id)

    def put(self, backbone: Backbone, capture: LayerCapture, f: PageFeatures) -> None:
        _atomic_write(self.path(backbone, capture.key, f.content_hash), encode_entry(f))

    def get_or_encode(self, backbone: Backbone, pages: Sequence[Page], capture: LayerCapture,
                      batch_size: int = 4, progress: bool = True) -> list[PageFeatures]:
        """Features for ``pages`` in order; only cache misses run the model, in batches."""
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
        with tqdm(total=len(misses), desc=f"encode {backbone.name}", unit="page",
                  disable=not progress or not misses) as bar:
            for start in range(0, len(misses), batch_size):
                idx = misses[start:start + batch_size]
                for i, f in zip(idx, backbone.encode_pages([pages[i] for i in idx], capture), strict=True):
                    self.put(backbone, capture, f)
                    found[i] = f
                bar.update(len(idx))
        return [found[i] for i in range(len(pages))]


class QueryCache:
    """Query token vectors ``[m, d]`` keyed by (query text, model id, revision); same sealing as pages."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, backbone: Backbone, text: str) -> Path:
        key = hashlib.sha256(text.encode()).hexdigest()
        return self.root / backbone_key(backbone) / "queries" / key[:2] / f"{key}.pt"

    def get(self, backbone: Backbone, text: str) -> torch.Tensor | None:
        d = _read_or_warn(self.path(backbone, text), _unseal)
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
                    _atomic_write(self.path(backbone, texts[i]), _seal({"text": texts[i], "vectors": v}))
                    found[i] = v
                bar.update(len(idx))
        return [found[i] for i in range(len(texts))]
