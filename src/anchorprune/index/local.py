"""The embedded index: versioned directories of packed vectors, memory-mapped, exact MaxSim in chunks.

Layout (``root/<name>/``)::

    CURRENT                 "v3" -- the serving version, replaced atomically (os.replace) under .pointer.lock
    SERVED                  [1, 2, 3] -- versions that have served (rollback targets; see lifecycle.py)
    .lock                   a filelock held for a whole rebuild (the OS drops it when its process dies)
    .lock.owner             {"pid", "host", "started_at", "token", "command"} of the holder, for messages
    v3/
      vectors.bin           packed page vectors [T, d] float32 | float16, or [T, d/8] uint8 sign bits (raw, C order)
      offsets.npy           [P + 1] int64: page p owns rows offsets[p]:offsets[p + 1]
      means.npy             [P, d] float16: L2-normalised mean vector of each page (the ``mean`` first stage)
      first_stage.bin       [P, D] float16 MUVERA FDE of each page (only when built with first_stage="muvera")
      first_stage.npz       the FDE's random matrices (so a reopened version encodes queries identically)
      ivf_centroids.npy     [K, d] float32 k-means centroids of the token vectors (first_stage="token_ivf" only)
      ivf_lists.npy         [K + 1] int64: list c holds ivf_order[ivf_lists[c]:ivf_lists[c + 1]]
      ivf_order.npy         [T] int32 token rows grouped by list;  ivf_pages.npy  [T] int32 their pages
      pages.json            {"page_ids": [...], "content_hashes": [...]}
      page_digests.npy      [P, 16] uint8: blake2b of each page's stored bytes (checked on reuse and on returned hits)
      manifest.json         dtype, dim, counts, meta (config hash, data version, model, backbone), sha256 of every file
    .build-v4-<token>/      a build in progress (renamed to v4/ only after it is verified)

Guarantees: a build writes into a hidden staging directory, verifies it (checksums,
counts, offsets, a smoke search) and only then renames it to ``v<N>/``; the serving
version changes only in :meth:`LocalIndex.swap` (a compare-and-swap decided in
:mod:`anchorprune.index.lifecycle`), by replacing ``CURRENT``. Readers
memory-map ``vectors.bin`` and re-read ``CURRENT`` on every search, so a swap is picked
up at the next query and a version deleted under a running reader stays readable to it
(POSIX unlink semantics).

Scoring: exact MaxSim through :func:`anchorprune.evaluation.scoring.score_packed` (chunked matmul
over the memory map). Sign-bit pages are decoded chunk by chunk to ``±1/sqrt(d)``
(:mod:`anchorprune.index.quantize`) and scored against the float query (asymmetric).
Two-stage search ranks pages by a first stage (:mod:`anchorprune.index.first_stage`: the
L2-normalised mean vector, or MUVERA FDE, one matmul over the ``[P, D]`` matrix; or
``token_ivf``, each query token's probed inverted lists, :mod:`anchorprune.index.token_ivf`),
then scores the top ``candidates`` pages exactly: the final ranking is always exact MaxSim.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import torch
from tqdm.auto import tqdm

from anchorprune.evaluation.scoring import ComputePath, bf16_accelerated, score_packed, score_shortlist
from anchorprune.index import quantize
from anchorprune.index.base import (
    CorruptVersionError,
    Hit,
    IndexInputError,
    IndexStats,
    IndexVersion,
    NoServingVersionError,
    VersionNotFoundError,
    check_meta,
    normalized_mean,
    now_iso,
    page_matrix,
    query_matrix,
    validate_pages,
    version_number,
)
from anchorprune.index.first_stage import (
    MuveraFirstStage,
    SearchReport,
    auto_stage,
    built_stage,
    make_first_stage,
    resolve_first_stage,
    stage_record,
    top_candidates,
)
from anchorprune.index.lifecycle import ANY, Lifecycle, VersionHealth
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams
from anchorprune.pruning.base import PrunedPage

log = logging.getLogger(__name__)

FORMAT = 1
_VDIR = re.compile(r"^v(\d+)$")
#: the files of a version, in the order they are written (``page_digests.npy``: versions built since issue 13)
_FILES = ("vectors.bin", "offsets.npy", "means.npy", "pages.json", "page_digests.npy")
#: the files a version built for a first stage adds (checksummed in the manifest like the others)
_STAGE_FILES = {"muvera": ("first_stage.bin", "first_stage.npz"), "token_ivf": TokenIvf.FILES}
#: bytes of the per-page digest (blake2b) of each page's stored vectors
_DIGEST = 16
_FIX = "run `anchorprune index rollback` to serve the last healthy version, then `anchorprune index build`"
#: page vectors decoded at once when scoring sign-bit pages
_BITS_CHUNK_TOKENS = 1 << 18
#: default bound, in float32 elements, on each scoring work buffer ([M, chunk] similarities, [chunk, d] staging)
_WORK_ELEMENTS = 1 << 24


def _chunk_tokens(explicit: int | None, m: int, dim: int, total: int) -> int:
    """Page vectors per scoring matmul: ``explicit``, or as many as keep each work buffer at ~64 MiB.

    Bounded by the vectors actually scored, so a small call never allocates a large buffer.

    >>> _chunk_tokens(None, 20, 128, 10**7), _chunk_tokens(None, 1, 128, 500), _chunk_tokens(64, 1, 128, 500)
    (131072, 500, 64)
    """
    if explicit is not None:
        return explicit
    return max(1, min(_WORK_ELEMENTS // max(m, 1), _WORK_ELEMENTS // dim, total))


# ---------------------------------------------------------------- files
def index_root(location: Path | str) -> Path:
    """The folder holding indexes: a local path or a ``file://`` URL (``paths.index_dir``).

    Other fsspec URLs are refused with a clear error: a version is memory-mapped for search, the
    rebuild lock is an OS file lock and ``CURRENT`` moves by ``os.replace``, none of which an object
    store or ``memory://`` offers.

    >>> str(index_root("file:///srv/indexes"))
    '/srv/indexes'
    >>> index_root("s3://bucket/indexes")
    Traceback (most recent call last):
    ...
    anchorprune.index.base.IndexInputError: index folder s3://bucket/indexes: the local index needs a local filesystem (memory maps, an OS file lock, atomic rename); give a path or a file:// URL, or use index.backend: elasticsearch
    """
    from anchorprune.features.storage import LOCAL, is_url, scheme_of

    if not is_url(location):
        return Path(location)
    if scheme_of(location) in LOCAL:
        return Path(str(location).split("://", 1)[1])
    raise IndexInputError(f"index folder {location}: the local index needs a local filesystem (memory maps, an OS "
                          "file lock, atomic rename); give a path or a file:// URL, or use index.backend: "
                          "elasticsearch")


def _sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _page_digest(stored: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(stored).tobytes(), digest_size=_DIGEST).digest()


def read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest, or a one-line error naming the file and the fix."""
    mpath = path / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise VersionNotFoundError(f"{path} has no manifest.json: not a complete index version") from None
    except (OSError, ValueError) as exc:
        raise CorruptVersionError(f"{mpath} is not valid JSON ({exc}); {_FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptVersionError(f"{mpath} has format {getattr(manifest, 'get', lambda k: None)('format')!r}, "
                                  f"this code reads {FORMAT}; {_FIX}")
    need = ("dtype", "dim", "vectors", "pages", "version", "files")
    if any(k not in manifest for k in need) or not isinstance(manifest["files"], dict):
        raise CorruptVersionError(f"{mpath} lacks one of {need}; {_FIX}")
    return manifest


def check_files(path: Path, manifest: dict[str, Any], full: bool) -> None:
    """Every file the manifest lists exists with its recorded size; the small files match their sha256;
    ``vectors.bin``'s sha256 only with ``full`` (it is the big one)."""
    for fname, rec in manifest["files"].items():
        f = path / fname
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            raise CorruptVersionError(f"{path.name}/{fname} is missing; {_FIX}") from None
        if size != rec["bytes"]:
            raise CorruptVersionError(f"{path.name}/{fname} has {size} bytes, its manifest says {rec['bytes']} "
                                      f"(truncated or overwritten); {_FIX}")
        if (full or fname != "vectors.bin") and _sha256(f) != rec["sha256"]:
            raise CorruptVersionError(f"{path.name}/{fname} does not match its checksum in the manifest "
                                      f"(the file is damaged); {_FIX}")
    want = int(manifest["vectors"]) * quantize.bytes_per_vector(manifest["dtype"], int(manifest["dim"]))
    rec = manifest["files"].get("vectors.bin")
    if rec is None or rec["bytes"] != want:
        raise CorruptVersionError(f"{path.name}/manifest.json describes {manifest['vectors']} vectors "
                                  f"({want} bytes) but vectors.bin is recorded with {rec and rec['bytes']}; {_FIX}")


def check_sizes(path: Path, manifest: dict[str, Any]) -> None:
    """The cheapest check (one ``stat`` per file), run before every search of a version already open."""
    for fname, rec in manifest["files"].items():
        try:
            size = (path / fname).stat().st_size
        except FileNotFoundError:
            raise CorruptVersionError(f"{path.name}/{fname} is missing; {_FIX}") from None
        if size != rec["bytes"]:
            raise CorruptVersionError(f"{path.name}/{fname} has {size} bytes, its manifest says {rec['bytes']} "
                                      f"(truncated or overwritten); {_FIX}")


@dataclass
class _Version:
    """An opened version directory: manifest, memory-mapped vectors, offsets, means, ids."""

    path: Path
    manifest: dict[str, Any]
    vecs: np.ndarray            # [T, w] memmap (copy-on-write mapping; the file is never modified)
    offsets: np.ndarray         # [P + 1] int64
    means: np.ndarray           # [P, d] float32
    page_ids: list[str]
    content_hashes: list[str]
    digests: np.ndarray | None = None      # [P, 16] uint8 blake2b of each page's stored bytes (None: older versions)
    dense: torch.Tensor | None = None      # [T, d] float32 decoded copy kept in RAM (see LocalIndex.resident_bytes)
    _where: dict[str, int] | None = None   # page id -> position, built on first use
    checked: bool = False                  # vectors.bin's sha256 was checked since this object opened it
    fde: np.ndarray | None = None          # [P, D] float32 MUVERA FDE, loaded at the first muvera search
    muvera: MuveraFirstStage | None = None  # its encoder (random matrices read back from first_stage.npz)
    ivf: TokenIvf | None = None            # token_ivf inverted lists (order / pages memory-mapped)

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def number(self) -> int:
        return int(self.manifest["version"])

    @classmethod
    def open(cls, path: Path, verify: bool = False) -> _Version:
        """Open a version: manifest, sizes and the small files' checksums always (cheap); with ``verify``,
        the sha256 of ``vectors.bin`` too. Damage raises :class:`CorruptVersionError` naming the file."""
        manifest = read_manifest(path)
        check_files(path, manifest, full=verify)
        dtype, dim = manifest["dtype"], int(manifest["dim"])
        total = int(manifest["vectors"])
        width = quantize.stored_width(dtype, dim)
        try:
            vecs = np.memmap(path / "vectors.bin", dtype=quantize.storage_dtype(dtype), mode="c",
                             shape=(total, width))
            offsets = np.load(path / "offsets.npy")
            means = np.load(path / "means.npy").astype(np.float32)
            ids = json.loads((path / "pages.json").read_text())
            digests = np.load(path / "page_digests.npy") if (path / "page_digests.npy").exists() else None
            v = cls(path, manifest, vecs, offsets, means, ids["page_ids"], ids["content_hashes"], digests=digests)
            fs = manifest.get("first_stage") or {}
            if fs.get("name") == "muvera":
                with np.load(path / "first_stage.npz") as state:
                    v.muvera = MuveraFirstStage.from_state(fs["params"], dict(state))
            if fs.get("name") == "token_ivf":
                v.ivf = TokenIvf.from_arrays({f: np.load(path / f, mmap_mode="r") for f in TokenIvf.FILES},
                                             TokenIvfParams.of(fs["params"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptVersionError(f"{path.name} cannot be read ({type(exc).__name__}: {exc}); {_FIX}") from None
        v.check_consistent()
        v.checked = verify
        return v

    def position(self, page_id: str) -> int:
        if self._where is None:
            self._where = {pid: j for j, pid in enumerate(self.page_ids)}
        return self._where[page_id]

    def page_digest_ok(self, j: int) -> bool:
        """Whether page ``j``'s stored vectors still hash to the digest recorded at build (True if none)."""
        if self.digests is None:
            return True
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return _page_digest(np.asarray(self.vecs[lo:hi])) == bytes(self.digests[j])

    def check_pages(self, pages: Iterable[int]) -> None:
        """Raise :class:`CorruptVersionError` naming the first page whose stored vectors fail their digest."""
        for j in pages:
            if not self.page_digest_ok(int(j)):
                raise CorruptVersionError(
                    f"{self.path.name}/vectors.bin: the stored vectors of page {self.page_ids[int(j)]!r} do not "
                    f"match their checksum (the file is damaged); {_FIX}")

    def check_consistent(self) -> None:
        p, t = int(self.manifest["pages"]), int(self.manifest["vectors"])
        o = self.offsets
        problems = []
        if o.shape != (p + 1,) or o[0] != 0 or o[-1] != t or (np.diff(o) <= 0).any():
            problems.append(f"offsets do not describe {p} non-empty pages over {t} vectors")
        if self.means.shape != (p, self.dim):
            problems.append(f"means have shape {self.means.shape}, expected {(p, self.dim)}")
        if self.ivf is not None:
            problems += self.ivf.problems(p, t, self.dim)
        if self.muvera is not None:
            size = (self.path / "first_stage.bin").stat().st_size
            if size != p * self.muvera.dims * 2:
                problems.append(f"first_stage.bin has {size} bytes, not {p} pages x {self.muvera.dims} float16")
        if len(self.page_ids) != p or len(set(self.page_ids)) != p or len(self.content_hashes) != p:
            problems.append("page ids are not unique or do not match the page count")
        if self.digests is not None and self.digests.shape != (p, _DIGEST):
            problems.append(f"page digests have shape {self.digests.shape}, expected {(p, _DIGEST)}")
        if problems:
            raise CorruptVersionError(f"{self.path.name}: " + "; ".join(problems) + f"; {_FIX}")

    def fde_matrix(self) -> np.ndarray:
        """The ``[P, D]`` float32 FDE matrix, read on first use (a build's verify step never loads it)."""
        if self.fde is None:
            assert self.muvera is not None
            raw = np.fromfile(self.path / "first_stage.bin", dtype=np.float16)
            if raw.size != len(self.page_ids) * self.muvera.dims:
                raise CorruptVersionError(f"{self.path.name}: first_stage.bin holds {raw.size} values, not "
                                          f"{len(self.page_ids)} pages x {self.muvera.dims}")
            self.fde = raw.reshape(-1, self.muvera.dims).astype(np.float32)
        return self.fde

    def info(self, name: str) -> IndexVersion:
        m = self.manifest
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return IndexVersion(name=name, number=int(m["version"]), created_at=m["created_at"], pages=int(m["pages"]),
                            vectors=int(m["vectors"]), bytes=size, manifest=m)

    def make_resident(self, budget: int) -> None:
        """Keep a decoded float32 copy in RAM when it fits ``budget`` bytes (float16 / bits versions only).

        Scoring then skips the per-query float16 -> float32 (or bit-unpacking) pass over every
        vector; the file on disk keeps its compact encoding.
        """
        if self.dense is not None or self.dtype == "float32" or (self.dtype == "bfloat16" and bf16_accelerated()):
            return
        total = self.vecs.shape[0]
        if total * self.dim * 4 > budget:
            return
        dense = torch.empty(total, self.dim, dtype=torch.float32)
        step = max(1, (1 << 26) // (self.dim * 4))
        sha = hashlib.sha256()          # every byte is read anyway: check the whole file's checksum on the way
        for a in range(0, total, step):
            raw = np.asarray(self.vecs[a:a + step])
            sha.update(raw.tobytes())
            dense[a:a + step] = torch.from_numpy(quantize.decode(raw, self.dtype, self.dim))
        if sha.hexdigest() != self.manifest["files"]["vectors.bin"]["sha256"]:
            raise CorruptVersionError(f"{self.path.name}/vectors.bin does not match its checksum in the manifest "
                                      f"(the file is damaged); {_FIX}")
        self.dense = dense
        self.checked = True

    def token_rows(self, rows: np.ndarray) -> np.ndarray:
        """Decoded float32 vectors ``[len(rows), d]`` of the given token rows (ascending reads the file in order)."""
        if self.dense is not None:
            return self.dense[torch.from_numpy(rows.astype(np.int64))].numpy()
        return quantize.decode(np.asarray(self.vecs[rows]), self.dtype, self.dim)

    def rows(self, pages: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded float32 vectors of the given pages (in that order) and their local offsets."""
        starts, ends = self.offsets[pages], self.offsets[pages + 1]
        lengths = ends - starts
        local = np.zeros(len(pages) + 1, dtype=np.int64)
        np.cumsum(lengths, out=local[1:])
        idx = np.repeat(starts - local[:-1], lengths) + np.arange(local[-1])
        return torch.from_numpy(self.token_rows(idx)), torch.from_numpy(local)

    def score_search(self, queries: Sequence[torch.Tensor], chunk_tokens: int | None,
                     k: int) -> tuple[torch.Tensor, ComputePath]:
        """Scores ``[Q, P]`` whose top ``k`` is exact float32 MaxSim, and how they were computed.

        A bfloat16 version searched from its memory map on a CPU with native bf16 scans every page with
        bf16 matmuls and rescores the best ``k + margin`` per query exactly in float32 from the stored
        rows (:func:`anchorprune.evaluation.scoring.score_shortlist`); everything else is :meth:`score_all`.
        """
        if self.dense is None and self.dtype == "bfloat16":
            ct = _chunk_tokens(chunk_tokens, sum(q.shape[0] for q in queries), self.dim, self.vecs.shape[0])
            return score_shortlist(queries, quantize.as_bfloat16(self.vecs), torch.from_numpy(self.offsets), k,
                                   compute="auto", chunk_tokens=ct, page_ids=self.page_ids)
        return self.score_all(queries, chunk_tokens), ComputePath("auto", "float32", bf16_accelerated(), self.dtype)

    def score_all(self, queries: Sequence[torch.Tensor], chunk_tokens: int | None) -> torch.Tensor:
        """Exact float32 MaxSim ``[Q, P]`` of the queries against every page (what evaluation uses)."""
        chunk_tokens = _chunk_tokens(chunk_tokens, sum(q.shape[0] for q in queries), self.dim, self.vecs.shape[0])
        if self.dense is not None:
            return score_packed(queries, self.dense, torch.from_numpy(self.offsets), chunk_tokens=chunk_tokens,
                                page_ids=self.page_ids)
        if self.dtype != "bits":   # bfloat16 rows are converted to float32 chunk by chunk
            vecs = quantize.as_bfloat16(self.vecs) if self.dtype == "bfloat16" else torch.from_numpy(self.vecs)
            return score_packed(queries, vecs, torch.from_numpy(self.offsets),
                                chunk_tokens=chunk_tokens, page_ids=self.page_ids, compute="float32")
        n_pages = len(self.page_ids)
        out = torch.empty(len(queries), n_pages, dtype=torch.float32)
        budget = max(chunk_tokens or _BITS_CHUNK_TOKENS, 1)
        a = 0
        while a < n_pages:
            b = int(np.searchsorted(self.offsets, self.offsets[a] + budget, side="right")) - 1
            b = min(max(b, a + 1), n_pages)
            lo, hi = int(self.offsets[a]), int(self.offsets[b])
            chunk = torch.from_numpy(quantize.decode(np.asarray(self.vecs[lo:hi]), "bits", self.dim))
            out[:, a:b] = score_packed(queries, chunk, torch.from_numpy(self.offsets[a:b + 1] - lo),
                                       chunk_tokens=chunk_tokens)
            a = b
        return out


def _top_k(scores: torch.Tensor, k: int, page_ids: Sequence[str], which: np.ndarray | None = None) -> list[Hit]:
    """The ``k`` best pages, score descending, ties broken by page id ascending (as :mod:`anchorprune.evaluation.metrics`).

    >>> [h.page_id for h in _top_k(torch.tensor([1.0, 2.0, 2.0, 0.5]), 2, ["d", "c", "b", "a"])]
    ['b', 'c']
    """
    s = scores.numpy()
    ids = which if which is not None else np.arange(len(s))
    if k < len(s):                                    # everything scoring at least the k-th best score
        kth = np.partition(s, len(s) - k)[len(s) - k]
        pool = np.flatnonzero(s >= kth)
    else:
        pool = np.arange(len(s))
    order = sorted(pool.tolist(), key=lambda i: (-float(s[i]), page_ids[int(ids[i])]))[:k]
    return [Hit(page_ids[int(ids[i])], float(s[i])) for i in order]


# ---------------------------------------------------------------- index
class LocalIndex:
    """Versioned on-disk index under ``root/<name>/`` (see the module docstring).

    Parameters
    ----------
    root
        The folder holding indexes (``paths.index_dir``).
    name
        Index name (a folder under ``root``).
    dtype
        Storage of page vectors in new builds: ``float32``, ``float16`` or ``bits``.
        Each version records its own dtype; search uses the serving version's.
    two_stage, candidates
        Search first-stage candidates first, then exact MaxSim on the top ``candidates``.
    first_stage, first_stage_params
        ``none`` | ``mean`` | ``muvera`` | ``auto`` (None: ``mean`` if ``two_stage`` else ``none``) and its
        parameters (MUVERA: ``k_sim``, ``d_proj``, ``reps``, ``final_dim``, ``seed``). ``muvera``
        builds write the FDE of every page; the manifest records the first stage and its parameters.
    first_stage_threshold, first_stage_auto
        ``auto``: builds prepare ``first_stage_auto``'s vectors; a search over a version of at least
        ``first_stage_threshold`` pages (None: ``first_stage.AUTO_THRESHOLD_PAGES``) uses that first
        stage, a smaller one exact MaxSim over every page. Manifest and search report say which.
    chunk_tokens
        Page vectors per scoring matmul (``None``: about 64 MiB of similarity buffer).
    resident_bytes
        A float16 or bits serving version whose float32 decoding fits this many bytes is decoded
        once into RAM and searched from there (faster: no per-query conversion); larger ones, and
        float32 versions, are searched straight from the memory map. 0 turns it off.
    verify_on_open
        Check the sha256 of the serving version's ``vectors.bin`` at its first search in this
        object (a float16 / bits version decoded into RAM is checked on the way anyway). Every
        search also checks file sizes and the digests of the pages it returns. Turn it off only
        for a version too large to read once per process (then ``anchorprune index verify``).

    Examples
    --------
    >>> import tempfile, torch
    >>> from anchorprune.pruning.base import PrunedPage
    >>> idx = LocalIndex(tempfile.mkdtemp(), "demo", dtype="float32")
    >>> pages = [PrunedPage("a", "h1", torch.eye(4)[:2], None), PrunedPage("b", "h2", torch.eye(4)[2:], None)]
    >>> v = idx.build(pages, {"config_hash": "c0"})
    >>> idx.swap(v)
    >>> idx.search(torch.eye(4)[3:], k=1)
    [Hit(page_id='b', score=1.0)]
    """

    backend = "local"
    lock_breakable = False
    #: build steps, in order; ``_checkpoint(step)`` is called as each one starts (tests inject failures there)
    BUILD_STEPS = ("validate", "lock", "stage", "write", "manifest", "verify", "publish")

    def __init__(self, root: Path | str, name: str, dtype: str = "float16", two_stage: bool = False,
                 candidates: int = 100, chunk_tokens: int | None = None, resident_bytes: int = 1 << 30,
                 verify_on_open: bool = True, first_stage: str | None = None,
                 first_stage_params: dict[str, Any] | None = None, first_stage_threshold: int | None = None,
                 first_stage_auto: str = "token_ivf"):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
            raise IndexInputError(f"index name {name!r} must be letters, digits, '_', '-' or '.'")
        self.name = name
        self.dir = index_root(root) / name
        self.dtype = quantize.check_dtype(dtype)
        self.first_stage = resolve_first_stage(first_stage, two_stage)
        self.first_stage_params = dict(first_stage_params or {})
        self.first_stage_threshold = first_stage_threshold
        self.first_stage_auto = built_stage(first_stage_auto)
        self.two_stage = self.first_stage != "none"
        if candidates < 1:
            raise IndexInputError(f"candidates must be >= 1, got {candidates}")
        self.candidates = candidates
        self.chunk_tokens = chunk_tokens
        self.resident_bytes = resident_bytes
        self.verify_on_open = verify_on_open
        self._cache: dict[int, _Version] = {}
        self.life = Lifecycle(self, f"index {name!r} ({self.dir})")

    def __repr__(self) -> str:
        return f"LocalIndex({str(self.dir)!r}, dtype={self.dtype!r}, first_stage={self.first_stage!r})"

    @property
    def _built_stage(self) -> str:
        """The first stage whose vectors a build writes (``auto``: its target's)."""
        return built_stage(self.first_stage, self.first_stage_auto)

    # ------------------------------------------------------------ paths and versions
    @property
    def _pointer(self) -> Path:
        return self.dir / "CURRENT"

    @property
    def _owner_file(self) -> Path:
        return self.dir / ".lock.owner"

    def _checkpoint(self, step: str) -> None:
        """Called as each build step starts; a no-op (tests patch it to inject failures)."""

    def _numbers(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = _VDIR.match(p.name)
            if m and (p / "manifest.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def _serving_number(self) -> int | None:
        try:
            text = self._pointer.read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptVersionError(f"{self._pointer} cannot be read ({exc}); run `anchorprune index rollback` "
                                      "to point it at the last healthy version") from None
        m = _VDIR.match(text)
        if not m:
            raise CorruptVersionError(f"{self._pointer} holds {text[:40]!r}, expected 'v<N>'; run `anchorprune "
                                      "index rollback` to point it at the last healthy version")
        return int(m.group(1))

    def _open(self, number: int, verify: bool = False) -> _Version:
        if not verify and number in self._cache:
            return self._cache[number]
        path = self.dir / f"v{number}"
        if not path.is_dir():
            raise VersionNotFoundError(f"index {self.name!r} has no version v{number} (it has "
                                       f"{[f'v{n}' for n in self._numbers()]}); {_FIX}")
        v = _Version.open(path, verify=verify)
        self._cache[number] = v
        return v

    def _serving(self) -> _Version:
        n = self._serving_number()
        if n is None:
            raise NoServingVersionError(f"index {self.name!r} ({self.dir}) has no serving version yet: "
                                        "run `anchorprune index build` (or build() then swap())")
        v = self._open(n)
        try:                       # the cheap check at every search: a file truncated or removed since it opened
            check_sizes(v.path, v.manifest)
        except CorruptVersionError:
            self._cache.pop(n, None)
            raise
        for other, ov in self._cache.items():      # a swapped-out version does not keep its RAM copy
            if other != n:
                ov.dense = None
        if self.resident_bytes:
            v.make_resident(self.resident_bytes)
        if self.verify_on_open and not v.checked:     # once per opened version: nothing served changes silently
            check_files(v.path, v.manifest, full=True)
            v.checked = True
        return v

    def current(self) -> IndexVersion | None:
        n = self._serving_number()
        return None if n is None else self._open(n).info(self.name)

    def versions(self) -> list[IndexVersion]:
        return [self._open(n).info(self.name) for n in self._numbers()]

    def stats(self) -> IndexStats:
        cur = self.current()
        m = cur.manifest if cur else {}
        return IndexStats(name=self.name, backend=self.backend, dtype=m.get("dtype", self.dtype),
                          dim=m.get("dim"), current=cur, versions=tuple(self._numbers()), two_stage=self.two_stage)

    def existing_hashes(self) -> dict[str, str]:
        n = self._serving_number()
        if n is None:
            return {}
        v = self._open(n)
        return dict(zip(v.page_ids, v.content_hashes, strict=True))

    def damaged_pages(self, page_ids: Iterable[str]) -> list[str]:
        """Pages of the serving version (among ``page_ids``) whose stored vectors fail their checksum.

        A version without per-page digests (built before them) counts every page as damaged when
        its ``vectors.bin`` fails its whole-file checksum.
        """
        n = self._serving_number()
        if n is None:
            return []
        v = self._open(n)
        where = {pid: j for j, pid in enumerate(v.page_ids)}
        wanted = [p for p in page_ids if p in where]
        if v.digests is None:
            try:
                check_files(v.path, v.manifest, full=True)
            except CorruptVersionError:
                return wanted
            return []
        return [p for p in wanted if not v.page_digest_ok(where[p])]

    def verify(self, version: IndexVersion | int) -> IndexVersion:
        """Re-check a version's checksums and structure (raises :class:`CorruptVersionError`)."""
        return self._open(version_number(version), verify=True).info(self.name)

    # ------------------------------------------------------------ the Store protocol (lifecycle.py decides)
    def version_numbers(self) -> list[int]:
        return self._numbers()

    def read_serving(self) -> int | None:
        return self._serving_number()

    def _pointer_lock(self) -> filelock.FileLock:
        """A short lock around every read-compare-replace of ``CURRENT`` and ``SERVED`` (not the build lock:
        a rollback must work while a build runs; that build's compare-and-swap then refuses)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(self.dir / ".pointer.lock", timeout=60, thread_local=False)

    def write_serving(self, number: int, expected: Any) -> None:
        with self._pointer_lock():
            if expected is not ANY:
                cur = self._serving_number()
                if cur != expected:
                    raise self.life._conflict(number, expected, cur)
            self._replace(self._pointer, f"v{number}\n")
        log.info("index %s: now serving v%d", self.name, number)

    def _replace(self, path: Path, text: str) -> None:
        tmp = self.dir / f".{path.name}.{uuid.uuid4().hex[:8]}"
        _write_file(tmp, text.encode())
        try:
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(self.dir)

    def served_history(self) -> list[int] | None:
        try:
            hist = json.loads((self.dir / "SERVED").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("index %s: %s is unreadable; treating every version up to the serving one as served",
                        self.name, self.dir / "SERVED")
            return None
        return [int(n) for n in hist if isinstance(n, int)]

    def record_served(self, number: int) -> None:
        with self._pointer_lock():
            hist = self.served_history()
            if hist is None:        # first record: what served before it is what the old layout implies
                hist = [n for n in self._numbers() if n < number]
            if number not in hist:
                self._replace(self.dir / "SERVED", json.dumps([*hist, number]))

    def check_version(self, number: int, full: bool) -> None:
        v = self._open(number, verify=full)
        try:
            check_sizes(v.path, v.manifest)        # an already-open version: its files may have changed since
        except CorruptVersionError:
            self._cache.pop(number, None)
            raise

    def version_info(self, number: int) -> IndexVersion:
        return self._open(number).info(self.name)

    def remove_version(self, number: int) -> None:
        path = self.dir / f"v{number}"
        trash = self.dir / f".deleting-v{number}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)             # disappears at once; readers holding a memmap keep reading
        self._cache.pop(number, None)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("index %s: deleted v%d", self.name, number)

    def cleanup_leftovers(self) -> None:
        for leftover in [*self.dir.glob(".build-*"), *self.dir.glob(".deleting-*")]:
            log.warning("removing %s left by an interrupted build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)

    def lock_where(self) -> str:
        return f"lock file {self.dir / '.lock'}, owner record {self._owner_file}"

    def lock_try(self, owner: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.dir / ".lock", thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return False, None
        left = self._read_owner()          # we hold the OS lock: a record here was left by a process that died
        self._lock_handle = lock
        self._replace(self._owner_file, json.dumps(owner))
        return True, left

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._owner_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def lock_owner(self) -> dict[str, Any] | None:
        if not self.dir.is_dir():
            return None
        probe = filelock.FileLock(self.dir / ".lock", thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return self._read_owner() or {}
        probe.release()
        return None

    def lock_break(self, held: dict[str, Any]) -> bool:
        return False                       # the OS holds it for a live process; it goes away when that exits

    def lock_renew(self, owner: dict[str, Any]) -> None:
        return None

    def lock_release(self, owner: dict[str, Any]) -> None:
        left = self._read_owner()
        if left and left.get("token") == owner.get("token"):
            with contextlib.suppress(FileNotFoundError):
                self._owner_file.unlink()
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            self._lock_handle = None
            handle.release()

    # ------------------------------------------------------------ the rebuild
    @contextlib.contextmanager
    def rebuild(self, wait: bool = False) -> Iterator[int | None]:
        """Hold the build lock for a whole rebuild; yields the version it starts from (for ``swap(expected=)``)."""
        with self.life.locked(wait=wait):
            yield self._serving_number()

    # ------------------------------------------------------------ build
    def build(self, pages: Iterable[PrunedPage], meta: dict[str, Any], reuse: Iterable[str] = ()) -> IndexVersion:
        """Write, verify and publish a new version ``v<N>`` (not served until :meth:`swap`).

        ``reuse`` names pages of the serving version to copy unchanged (see
        :mod:`anchorprune.index.base`, "Incremental rebuilds"); each one's stored vectors are
        checked against their digest first, and a damaged one stops the build (re-encode it:
        :meth:`damaged_pages` names them).
        """
        self._checkpoint("validate")
        meta = check_meta(meta)
        reuse = list(reuse)
        if len(set(reuse)) != len(reuse):
            dup = next(r for r in reuse if reuse.count(r) > 1)
            raise IndexInputError(f"reuse names page {dup!r} twice")
        serving_n = self._serving_number()
        source = self._open(serving_n) if serving_n is not None and reuse else None
        if reuse and source is None:
            raise IndexInputError(f"reuse names {len(reuse)} pages but index {self.name!r} has no serving version "
                                  "to copy them from; pass every page in `pages` instead")
        dim = source.dim if source is not None else None
        if source is not None:
            known = set(source.page_ids)
            missing = [r for r in reuse if r not in known]
            if missing:
                raise IndexInputError(f"reuse names pages not in the serving version v{source.number}: {missing[:5]}"
                                      f"{' ...' if len(missing) > 5 else ''}; encode them and pass them in `pages`")
            if source.dtype == "bits" and self.dtype != "bits":
                raise IndexInputError(f"cannot reuse sign-bit pages of v{source.number} in a {self.dtype} build; "
                                      "re-encode every page (reuse=())")
            if source.digests is None:          # no per-page digests: the whole file must pass before we copy
                check_files(source.path, source.manifest, full=True)
        if isinstance(pages, Sequence):
            dim = validate_pages(pages, dim)
            clash = {p.page_id for p in pages} & set(reuse)
            if clash:
                raise IndexInputError(f"pages {sorted(clash)[:5]} are both given and named in reuse; pass each once")
            if not pages and not reuse:
                raise IndexInputError("build() got no pages and nothing to reuse: an index needs at least one page")
        if dim is not None:
            quantize.check_dim(self.dtype, dim)

        self._checkpoint("lock")
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.life.locked():
            number = max(self._numbers(), default=0) + 1
            self._checkpoint("stage")
            staging = self.dir / f".build-v{number}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                self._checkpoint("write")
                counts = self._write(staging, pages, reuse, source, dim)
                self._checkpoint("manifest")
                self._write_manifest(staging, number, meta, counts, source)
                self._checkpoint("verify")
                built = _Version.open(staging, verify=True)
                built.check_pages(range(len(built.page_ids)))
                self._smoke_search(built)
                self._checkpoint("publish")
                final = self.dir / f"v{number}"
                os.rename(staging, final)
                _fsync_dir(self.dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        info = self._open(number).info(self.name)
        log.info("index %s: built v%d (%d pages, %d vectors, %.1f MB, %s); not serving until swap()",
                 self.name, number, info.pages, info.vectors, info.bytes / 1e6, self.dtype)
        return info

    def _write(self, staging: Path, pages: Iterable[PrunedPage], reuse: list[str], source: _Version | None,
               dim: int | None) -> dict[str, Any]:
        reuse_set = set(reuse)
        ids: list[str] = []
        hashes: list[str] = []
        lengths: list[int] = []
        means: list[np.ndarray] = []
        digests: list[bytes] = []
        seen: set[str] = set()
        muvera: MuveraFirstStage | None = None
        fde_out = open(staging / "first_stage.bin", "wb") if self._built_stage == "muvera" else None  # noqa: SIM115

        def add_fde(stored: np.ndarray) -> None:       # FDE of the stored (decoded) page vectors, streamed
            nonlocal muvera
            if fde_out is None:
                return
            if muvera is None:
                muvera = make_first_stage("muvera", int(dim), self.first_stage_params)
            fde_out.write(muvera.encode_document(quantize.decode(stored, self.dtype, int(dim)))
                          .astype(np.float16).tobytes())

        with contextlib.ExitStack() as stack, open(staging / "vectors.bin", "wb") as out:
            if fde_out is not None:
                stack.enter_context(fde_out)
            for i, page in enumerate(tqdm(pages, desc=f"index {self.name}", unit="page", disable=None)):
                v = page_matrix(page, dim, where=f" (input item {i})")
                dim = v.shape[1] if dim is None else dim
                if i == 0:
                    quantize.check_dim(self.dtype, dim)
                if page.page_id in seen or page.page_id in reuse_set:
                    raise IndexInputError(f"page id {page.page_id!r} is given twice (input item {i})")
                seen.add(page.page_id)
                stored = quantize.encode(v, self.dtype)
                out.write(stored.tobytes())
                digests.append(_page_digest(stored))
                add_fde(stored)
                ids.append(page.page_id)
                hashes.append(page.content_hash)
                lengths.append(v.shape[0])
                means.append(normalized_mean(v))
            if reuse:
                assert source is not None
                where = {pid: j for j, pid in enumerate(source.page_ids)}
                for pid in reuse:
                    j = where[pid]
                    lo, hi = int(source.offsets[j]), int(source.offsets[j + 1])
                    stored = np.asarray(source.vecs[lo:hi])
                    if source.digests is not None and _page_digest(stored) != bytes(source.digests[j]):
                        raise CorruptVersionError(
                            f"v{source.number}/vectors.bin: the stored vectors of reused page {pid!r} do not match "
                            "their checksum; re-encode it (pass it in `pages`, not `reuse`: "
                            "`anchorprune index build` does this by itself)")
                    if source.dtype != self.dtype:      # float32 -> float16 / bits, float16 -> float32 / bits
                        stored = quantize.encode(quantize.decode(stored, source.dtype, source.dim), self.dtype)
                    out.write(stored.tobytes())
                    digests.append(_page_digest(stored))
                    add_fde(stored)
                    ids.append(pid)
                    hashes.append(source.content_hashes[j])
                    lengths.append(hi - lo)
                    means.append(source.means[j])
            for f in (out, fde_out) if fde_out is not None else (out,):
                f.flush()
                os.fsync(f.fileno())
        if not ids:
            raise IndexInputError("build() got no pages and nothing to reuse: an index needs at least one page")
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        _save_npy(staging / "offsets.npy", offsets)
        ivf = self._train_ivf(staging, offsets, int(dim)) if self._built_stage == "token_ivf" else None
        _save_npy(staging / "means.npy", np.stack(means).astype(np.float16))
        _write_file(staging / "pages.json", json.dumps({"page_ids": ids, "content_hashes": hashes}).encode())
        _save_npy(staging / "page_digests.npy", np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, _DIGEST))
        first_stage: dict[str, Any] = {"name": self._built_stage, "params": {}}
        if muvera is not None:
            assert fde_out is not None
            with open(staging / "first_stage.npz", "wb") as f:
                np.savez(f, **muvera.state)
            first_stage = {"name": "muvera", "params": muvera.params(), "dims": muvera.dims, "dtype": "float16"}
        if ivf is not None:
            first_stage = {"name": "token_ivf", "params": ivf.record()}
        first_stage.update(stage_record(self.first_stage, self.first_stage_threshold, self.first_stage_auto,
                                        len(ids)))
        return {"dim": dim, "pages": len(ids), "vectors": int(offsets[-1]), "new_pages": len(seen),
                "reused_pages": len(reuse), "first_stage": first_stage}

    def _train_ivf(self, staging: Path, offsets: np.ndarray, dim: int) -> TokenIvf:
        """k-means and inverted lists over the vectors just written (read back from the staging file, as
        stored: a float16 / bits index clusters what it will score), saved beside them."""
        total = int(offsets[-1])
        stored = np.memmap(staging / "vectors.bin", dtype=quantize.storage_dtype(self.dtype), mode="r",
                           shape=(total, quantize.stored_width(self.dtype, dim)))
        params = TokenIvfParams.of(self.first_stage_params)
        log.info("index %s: token_ivf k-means over %d token vectors", self.name, total)
        ivf = TokenIvf.train(lambda rows: quantize.decode(np.asarray(stored[rows]), self.dtype, dim), offsets, params)
        for fname, arr in ivf.arrays().items():
            _save_npy(staging / fname, arr)
        return ivf                                    # the read-only map closes with this frame

    def _write_manifest(self, staging: Path, number: int, meta: dict[str, Any], counts: dict[str, Any],
                        source: _Version | None) -> None:
        files = {}
        for fname in (*_FILES, *_STAGE_FILES.get(counts["first_stage"]["name"], ())):
            f = staging / fname
            files[fname] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        manifest = {
            "format": FORMAT, "backend": self.backend, "name": self.name, "version": number,
            "created_at": now_iso(), "dtype": self.dtype, "dim": counts["dim"], "pages": counts["pages"],
            "vectors": counts["vectors"], "new_pages": counts["new_pages"], "reused_pages": counts["reused_pages"],
            "reused_from": None if source is None else source.number,
            "bytes_per_vector": quantize.bytes_per_vector(self.dtype, counts["dim"]),
            "first_stage": counts["first_stage"], "meta": meta, "files": files,
        }
        _write_file(staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        _fsync_dir(staging)

    def _smoke_search(self, v: _Version) -> None:
        """The new version answers a query (its first page's first vector) over its first and last pages.

        Only a few pages are scored, so a multi-GB version is not read twice at build time; the
        checksums already cover every byte.
        """
        q = torch.from_numpy(quantize.decode(np.asarray(v.vecs[:1]), v.dtype, v.dim))
        n = len(v.page_ids)
        sample = np.unique(np.concatenate([np.arange(min(n, 32)), np.arange(max(n - 32, 0), n)]))
        vecs, offsets = v.rows(sample)
        scores = score_packed([q], vecs, offsets,
                              chunk_tokens=_chunk_tokens(self.chunk_tokens, 1, v.dim, vecs.shape[0]))
        if scores.shape != (1, len(sample)) or not torch.isfinite(scores).all():
            raise CorruptVersionError(f"{v.path.name}: the smoke search returned {tuple(scores.shape)} "
                                      "scores or non-finite values")

    # ------------------------------------------------------------ serving (decided in lifecycle.py)
    def swap(self, version: IndexVersion | int, expected: Any = ANY) -> None:
        """Serve ``version`` from the next search on (``CURRENT`` replaced atomically); with ``expected`` (the
        version a rebuild started from), only if that still serves, else :class:`SwapConflictError`."""
        self.life.swap(version_number(version), expected)

    def previous(self) -> IndexVersion | None:
        """The version a rollback would serve: the newest healthy version older than the serving one that served."""
        n = self.life.rollback_target()
        return None if n is None else self._open(n).info(self.name)

    def rollback(self) -> IndexVersion:
        return self._open(self.life.rollback()).info(self.name)

    def delete_version(self, version: IndexVersion | int) -> None:
        self.life.delete(version_number(version))

    def prune_versions(self, keep: int = 2) -> list[int]:
        """Delete old versions; keeps the serving one, the last one that served before it, and newest older ones
        up to ``keep`` (``keep >= 2``)."""
        return self.life.prune(keep)

    def health(self, full: bool = False) -> list[VersionHealth]:
        return self.life.health(full)

    def unlock(self, force: bool = False) -> str:
        return self.life.unlock(force)

    # ------------------------------------------------------------ search
    def search(self, query_vectors: torch.Tensor, k: int = 10) -> list[Hit]:
        """Top-``k`` pages for one query ``[m, d]`` by MaxSim (exact, or two-stage if configured)."""
        return self.search_many([query_vectors], k)[0]

    def search_many(self, queries: Sequence[torch.Tensor], k: int = 10) -> list[list[Hit]]:
        return self.search_report(queries, k)[0]

    def search_report(self, queries: Sequence[torch.Tensor], k: int = 10) -> tuple[list[list[Hit]], SearchReport]:
        """Like :meth:`search_many`, plus which first stage answered (and how many pages it handed on)."""
        if k < 1:
            raise IndexInputError(f"k must be >= 1, got {k}")
        v = self._serving()
        qs = [query_matrix(q, v.dim, i) for i, q in enumerate(queries)]
        stage = auto_stage(self.first_stage, len(v.page_ids), self.first_stage_threshold, self.first_stage_auto)
        needs = {"muvera": (v.muvera, "FDEs", "MUVERA"), "token_ivf": (v.ivf, "inverted lists", "token_ivf")}
        if stage in needs and needs[stage][0] is None:
            _, files, label = needs[stage]
            log.warning("index %s: first stage %r asked for, but the serving v%d was built without %s; "
                        "using the mean vector (rebuild the index to use %s)", self.name, stage, v.number, files, label)
            stage = "mean"
        pages = len(v.page_ids)
        if stage == "none" or self.candidates >= pages:
            configured = self.first_stage if self.first_stage != "none" else None
            if not qs:
                return [], SearchReport("none", pages, pages, v.number, configured)
            scores, path = v.score_search(qs, self.chunk_tokens, k)    # [Q, P]: top k exact float32
            report = SearchReport("none", pages, pages, v.number, configured, scoring=path)
            out = [_top_k(s, k, v.page_ids) for s in scores]
        else:               # candidates decoded to float32 and scored exactly
            out = [self._two_stage(v, q, k, stage) for q in qs]
            report = SearchReport(stage, self.candidates, pages, v.number,
                                  self.first_stage if self.first_stage != stage else None,
                                  scoring=ComputePath("auto", "float32", bf16_accelerated(), v.dtype))
        # nothing served changes silently: the pages returned still hash to what the build wrote
        v.check_pages(sorted({v.position(h.page_id) for hits in out for h in hits}))
        return out, report

    def _two_stage(self, v: _Version, q: torch.Tensor, k: int, stage: str = "mean") -> list[Hit]:
        if stage == "muvera":
            assert v.muvera is not None
            cand = top_candidates(v.fde_matrix(), v.muvera.encode_query(q.numpy()), self.candidates)
        elif stage == "token_ivf":
            assert v.ivf is not None
            cand = v.ivf.candidates(q.numpy(), v.token_rows, len(v.page_ids), self.candidates,
                                    self.first_stage_params.get("nprobe"))
        else:
            cand = top_candidates(v.means, normalized_mean(q.numpy()), self.candidates)   # [P, d] @ [d]
        vecs, offsets = v.rows(cand)                                 # candidates in file order: sequential reads
        scores = score_packed([q], vecs, offsets,
                              chunk_tokens=_chunk_tokens(self.chunk_tokens, q.shape[0], v.dim, vecs.shape[0]))[0]
        return _top_k(scores, k, v.page_ids, which=cand)

    def exact_scores(self, queries: Sequence[torch.Tensor]) -> tuple[list[str], torch.Tensor]:
        """Page ids and the exact ``[Q, P]`` MaxSim of the serving version (for evaluation and tests)."""
        v = self._serving()
        qs = [query_matrix(q, v.dim, i) for i, q in enumerate(queries)]
        return list(v.page_ids), v.score_all(qs, self.chunk_tokens)
