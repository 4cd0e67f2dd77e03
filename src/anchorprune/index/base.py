"""The Index contract: versioned stores of pruned page vectors, built aside and swapped in atomically.

Both backends (:mod:`anchorprune.index.local`, :mod:`anchorprune.index.elasticsearch`)
follow the same life cycle:

0. ``with index.rebuild(wait=False) as started_from:`` holds the build lock for a whole
   rebuild (read the champion, encode, build, swap, prune); a second one gets
   :class:`IndexLockedError` naming the holder at once (``wait=True`` queues).
1. ``build(pages, meta, reuse=...)`` validates the input, writes a **new** version
   next to the serving one, verifies it (checksums / counts / a smoke search) and
   returns its :class:`IndexVersion`. It does **not** serve it. A failure at any step
   removes the half-built version and leaves the serving one untouched. It takes the
   build lock itself when no ``rebuild()`` holds it.
2. ``swap(version, expected=started_from)`` makes it the serving version in one atomic
   step (a pointer file replaced with ``os.replace`` / one ``update_aliases`` call), only
   if ``started_from`` still serves (compare-and-swap; otherwise
   :class:`~anchorprune.index.lifecycle.SwapConflictError` and the newer version keeps serving).
3. ``rollback()`` serves the newest healthy version older than the serving one that has
   served (any healthy served version when the serving one is broken);
   ``prune_versions(keep)`` never deletes the serving one nor the last one that served
   before it. All of this is written once, in :mod:`anchorprune.index.lifecycle`.

Incremental rebuilds
--------------------
``existing_hashes()`` gives ``{page_id: content_hash}`` of the serving version. The
caller re-encodes and re-prunes only pages whose hash changed or that are new, passes
them as ``pages``, and names the unchanged ones in ``reuse``: their stored vectors are
copied from the serving version (never re-encoded, never re-sent over the wire). A page
of the serving version that is in neither ``pages`` nor ``reuse`` is not in the new
version (removed pages disappear).

Validation happens before anything is written when ``pages`` is a sequence (a list);
a one-shot iterator (e.g. a generator streaming a huge corpus) is validated page by
page as it is consumed, and a bad page aborts the build and deletes the half-built
version, so nothing half-written is ever visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from anchorprune.pruning.base import PrunedPage

if TYPE_CHECKING:
    from anchorprune.index.first_stage import SearchReport
    from anchorprune.index.lifecycle import Lifecycle, VersionHealth

Dtype = Literal["float32", "float16", "bits"]

#: keys a build's ``meta`` should carry (recorded in the manifest; missing ones are logged, not fatal)
META_KEYS = ("config_hash", "data_version", "model", "model_version", "backbone_id", "backbone_revision")


class IndexStoreError(Exception):
    """Base class of index errors (named so as not to shadow the built-in ``IndexError``)."""


class IndexInputError(IndexStoreError, ValueError):
    """Pages handed to ``build`` are malformed (NaN, wrong dimension, duplicate id, ...)."""


class IndexLockedError(IndexStoreError, RuntimeError):
    """Another build of the same index holds the lock."""


class NoServingVersionError(IndexStoreError, LookupError):
    """The index has no serving version yet (build and swap one first)."""


class VersionNotFoundError(IndexStoreError, LookupError):
    """A version number that the index does not hold."""


class CorruptVersionError(IndexStoreError, RuntimeError):
    """A version's files do not match its manifest (checksum, size or count)."""


@dataclass(frozen=True)
class IndexVersion:
    """One built version of an index (serving or not)."""

    name: str                 # index name (local dir name / Elasticsearch alias)
    number: int               # N of v<N>
    created_at: str           # ISO-8601 UTC
    pages: int
    vectors: int              # stored page vectors in total
    bytes: int                # bytes on disk (local: all files of v<N>; Elasticsearch: store size)
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"v{self.number}"


@dataclass(frozen=True)
class Hit:
    """One search result: a page and its MaxSim score (higher is better)."""

    page_id: str
    score: float


@dataclass(frozen=True)
class IndexStats:
    """What ``stats()`` reports about the serving version."""

    name: str
    backend: str
    dtype: str
    dim: int | None
    current: IndexVersion | None
    versions: tuple[int, ...]
    two_stage: bool

    @property
    def bytes_per_page(self) -> float:
        c = self.current
        return c.bytes / c.pages if c and c.pages else 0.0

    def as_dict(self) -> dict[str, Any]:
        c = self.current
        return {
            "name": self.name, "backend": self.backend, "dtype": self.dtype, "dim": self.dim,
            "two_stage": self.two_stage, "versions": list(self.versions),
            "current": None if c is None else {
                "version": c.number, "created_at": c.created_at, "pages": c.pages, "vectors": c.vectors,
                "bytes": c.bytes, "bytes_per_page": round(self.bytes_per_page, 1),
                "meta": c.manifest.get("meta", {})},
        }


@runtime_checkable
class Index(Protocol):
    """A versioned multi-vector index (see the module docstring for the life cycle); both backends implement
    all of it through :class:`anchorprune.index.facade.VersionedIndex`, so callers need no ``hasattr``."""

    name: str
    backend: str
    dtype: str                       # storage of page vectors in new builds
    two_stage: bool                  # a first stage is configured (not "none")
    candidates: int                  # pages a first stage hands to exact MaxSim
    first_stage: str                 # none | mean | muvera | token_ivf | auto
    first_stage_params: dict[str, Any]
    first_stage_threshold: int | None
    first_stage_auto: str
    life: Lifecycle                  # the life cycle over this index's store (pointer, rollback target, lock)

    @property
    def built_stage(self) -> str: ...

    def search_report(self, queries: Sequence[torch.Tensor],
                      k: int = 10) -> tuple[list[list[Hit]], SearchReport]: ...

    def previous(self) -> IndexVersion | None: ...

    def build(self, pages: Iterable[PrunedPage], meta: dict[str, Any],
              reuse: Iterable[str] = ()) -> IndexVersion: ...

    def rebuild(self, wait: bool = False) -> AbstractContextManager[int | None]: ...

    def swap(self, version: IndexVersion | int, expected: Any = ...) -> None: ...

    def search(self, query_vectors: torch.Tensor, k: int = 10) -> list[Hit]: ...

    def search_many(self, queries: Sequence[torch.Tensor], k: int = 10) -> list[list[Hit]]: ...

    def stats(self) -> IndexStats: ...

    def current(self) -> IndexVersion | None: ...

    def versions(self) -> list[IndexVersion]: ...

    def rollback(self) -> IndexVersion: ...

    def delete_version(self, version: IndexVersion | int) -> None: ...

    def prune_versions(self, keep: int = 2) -> list[int]: ...

    def existing_hashes(self) -> dict[str, str]: ...

    def damaged_pages(self, page_ids: Iterable[str]) -> list[str]: ...

    def verify(self, version: IndexVersion | int) -> IndexVersion: ...

    def health(self, full: bool = False) -> list[VersionHealth]: ...

    def unlock(self, force: bool = False) -> str: ...


# ---------------------------------------------------------------- shared helpers
def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def version_number(version: IndexVersion | int) -> int:
    if isinstance(version, IndexVersion):
        return version.number
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 1:
        raise VersionNotFoundError(f"version must be an IndexVersion or a number >= 1, got {version!r}")
    return int(version)


def page_matrix(page: PrunedPage, dim: int | None, where: str = "") -> np.ndarray:
    """The page's vectors as a C-contiguous float32 ``[k, d]`` array, or a named :class:`IndexInputError`.

    >>> import torch
    >>> from anchorprune.pruning.base import PrunedPage
    >>> page_matrix(PrunedPage("p1", "h", torch.ones(2, 4), None), 4).shape
    (2, 4)
    >>> page_matrix(PrunedPage("p1", "h", torch.ones(2, 3), None), 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    anchorprune.index.base.IndexInputError: page 'p1' has vectors of dimension 3, the index has dimension 4; ...
    """
    if not isinstance(page, PrunedPage):
        raise IndexInputError(f"build() takes PrunedPage records{where}, got {type(page).__name__}")
    pid = page.page_id
    if not isinstance(pid, str) or not pid:
        raise IndexInputError(f"a page has an empty or non-string page_id {pid!r}{where}")
    if not isinstance(page.content_hash, str) or not page.content_hash:
        raise IndexInputError(f"page {pid!r} has no content_hash{where}; the incremental rebuild needs one")
    v = page.vectors
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        v = v.numpy()
    v = np.asarray(v)
    if v.ndim != 2:
        raise IndexInputError(f"page {pid!r} has vectors of shape {v.shape}{where}; expected [k, d]")
    if v.shape[0] == 0:
        raise IndexInputError(f"page {pid!r} has no vectors{where}; a pruner must keep at least one")
    if dim is not None and v.shape[1] != dim:
        raise IndexInputError(f"page {pid!r} has vectors of dimension {v.shape[1]}, the index has dimension "
                              f"{dim}{where}; re-encode with the index's backbone or build a new index name")
    if not np.issubdtype(v.dtype, np.floating):
        raise IndexInputError(f"page {pid!r} has {v.dtype} vectors{where}; expected floats")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not np.isfinite(v).all():
        row = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
        raise IndexInputError(f"page {pid!r} vector {row} contains NaN or inf{where}; re-encode the page")
    return v


def validate_pages(pages: Sequence[PrunedPage], dim: int | None) -> int | None:
    """Check every page up front (ids unique, shapes, finite); returns the dimension."""
    seen: set[str] = set()
    for i, p in enumerate(pages):
        v = page_matrix(p, dim, where=f" (input item {i})")
        dim = v.shape[1] if dim is None else dim
        if p.page_id in seen:
            raise IndexInputError(f"page id {p.page_id!r} is given twice (input item {i}); page ids must be unique")
        seen.add(p.page_id)
    return dim


def check_reuse(reuse: Iterable[str]) -> list[str]:
    """``reuse`` as a list, refusing a page named twice."""
    reuse = list(reuse)
    if len(set(reuse)) != len(reuse):
        dup = next(r for r in reuse if reuse.count(r) > 1)
        raise IndexInputError(f"reuse names page {dup!r} twice")
    return reuse


def check_pages_up_front(pages: Iterable[PrunedPage], reuse: list[str], dim: int | None, dtype: str) -> int | None:
    """When ``pages`` is a sequence, validate it all before anything is written (a one-shot iterator is
    validated page by page as it is consumed, :func:`validated_pages`); returns the dimension if known."""
    import anchorprune.index.quantize as quantize

    if isinstance(pages, Sequence):
        dim = validate_pages(pages, dim)
        clash = {p.page_id for p in pages} & set(reuse)
        if clash:
            raise IndexInputError(f"pages {sorted(clash)[:5]} are both given and named in reuse; pass each once")
        if not pages and not reuse:
            raise IndexInputError(NO_PAGES)
    if dim is not None:
        quantize.check_dim(dtype, dim)
    return dim


NO_PAGES = "build() got no pages and nothing to reuse: an index needs at least one page"


def validated_pages(pages: Iterable[PrunedPage], dim: int | None, reuse: Iterable[str],
                    dtype: str) -> Iterator[tuple[PrunedPage, np.ndarray]]:
    """Each page with its ``[k, d]`` float32 matrix, checked as it passes (shape, finite, unique id, not also
    in ``reuse``, a dimension ``dtype`` can store); nothing is held beyond the current page."""
    import anchorprune.index.quantize as quantize

    reuse = set(reuse)
    seen: set[str] = set()
    for i, page in enumerate(pages):
        v = page_matrix(page, dim, where=f" (input item {i})")
        if dim is None:
            dim = v.shape[1]
            quantize.check_dim(dtype, dim)
        if page.page_id in seen or page.page_id in reuse:
            raise IndexInputError(f"page id {page.page_id!r} is given twice (input item {i})")
        seen.add(page.page_id)
        yield page, v


def query_matrix(q: torch.Tensor | np.ndarray, dim: int, i: int = 0) -> torch.Tensor:
    """A query ``[m, d]`` as float32, with a named error for a bad shape or NaN."""
    t = torch.as_tensor(np.asarray(q) if not isinstance(q, torch.Tensor) else q).detach().cpu()
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] != dim:
        raise IndexInputError(f"query {i} has shape {tuple(t.shape)}; the index expects [m, {dim}] vectors")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise IndexInputError(f"query {i} contains NaN or inf; re-encode it")
    return t


def normalized_mean(vecs: np.ndarray) -> np.ndarray:
    """L2-normalised mean of ``[n, d]`` rows (the first-stage vector of a page or query).

    >>> [round(float(x), 3) for x in normalized_mean(np.array([[3.0, 0.0], [3.0, 8.0]]))]
    [0.6, 0.8]
    """
    m = vecs.astype(np.float64).mean(axis=0)
    n = float(np.linalg.norm(m))
    if not math.isfinite(n) or n == 0.0:
        out = np.zeros_like(m)
        out[0] = 1.0        # a page whose vectors cancel out: any unit vector (it scores 0 on average)
        return out.astype(np.float32)
    return (m / n).astype(np.float32)


def check_meta(meta: dict[str, Any]) -> dict[str, Any]:
    import json

    if not isinstance(meta, dict):
        raise IndexInputError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise IndexInputError(f"meta must be JSON-serialisable (it goes into the manifest): {exc}") from None
    return dict(meta)
