"""The files of a local index version: layout, manifest, checksums, atomic writes.

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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

import anchorprune.index.quantize as quantize
from anchorprune.index.base import CorruptVersionError, IndexInputError, VersionNotFoundError
from anchorprune.index.token_ivf import TokenIvf

FORMAT = 1
VERSION_DIR = re.compile(r"^v(\d+)$")
#: the files of a version, in the order they are written (``page_digests.npy`` is absent from the oldest versions)
FILES = ("vectors.bin", "offsets.npy", "means.npy", "pages.json", "page_digests.npy")
#: the files a version built for a first stage adds (checksummed in the manifest like the others)
STAGE_FILES = {"muvera": ("first_stage.bin", "first_stage.npz"), "token_ivf": TokenIvf.FILES}
#: bytes of the per-page digest (blake2b) of each page's stored vectors
DIGEST_BYTES = 16
FIX = "run `anchorprune index rollback` to serve the last healthy version, then `anchorprune index build`"

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
    from anchorprune.storage import LOCAL, is_url, scheme_of

    if not is_url(location):
        return Path(location)
    if scheme_of(location) in LOCAL:
        return Path(str(location).split("://", 1)[1])
    raise IndexInputError(f"index folder {location}: the local index needs a local filesystem (memory maps, an OS "
                          "file lock, atomic rename); give a path or a file:// URL, or use index.backend: "
                          "elasticsearch")


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def page_digest(stored: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(stored).tobytes(), digest_size=DIGEST_BYTES).digest()


def read_manifest(path: Path) -> dict[str, Any]:
    """A version's manifest, or a one-line error naming the file and the fix."""
    mpath = path / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise VersionNotFoundError(f"{path} has no manifest.json: not a complete index version") from None
    except (OSError, ValueError) as exc:
        raise CorruptVersionError(f"{mpath} is not valid JSON ({exc}); {FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptVersionError(f"{mpath} has format {getattr(manifest, 'get', lambda k: None)('format')!r}, "
                                  f"this code reads {FORMAT}; {FIX}")
    need = ("dtype", "dim", "vectors", "pages", "version", "files")
    if any(k not in manifest for k in need) or not isinstance(manifest["files"], dict):
        raise CorruptVersionError(f"{mpath} lacks one of {need}; {FIX}")
    return manifest


def check_files(path: Path, manifest: dict[str, Any], full: bool) -> None:
    """Every file the manifest lists exists with its recorded size; the small files match their sha256;
    ``vectors.bin``'s sha256 only with ``full`` (it is the big one)."""
    for fname, rec in manifest["files"].items():
        f = path / fname
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            raise CorruptVersionError(f"{path.name}/{fname} is missing; {FIX}") from None
        if size != rec["bytes"]:
            raise CorruptVersionError(f"{path.name}/{fname} has {size} bytes, its manifest says {rec['bytes']} "
                                      f"(truncated or overwritten); {FIX}")
        if (full or fname != "vectors.bin") and sha256_file(f) != rec["sha256"]:
            raise CorruptVersionError(f"{path.name}/{fname} does not match its checksum in the manifest "
                                      f"(the file is damaged); {FIX}")
    want = int(manifest["vectors"]) * quantize.bytes_per_vector(manifest["dtype"], int(manifest["dim"]))
    rec = manifest["files"].get("vectors.bin")
    if rec is None or rec["bytes"] != want:
        raise CorruptVersionError(f"{path.name}/manifest.json describes {manifest['vectors']} vectors "
                                  f"({want} bytes) but vectors.bin is recorded with {rec and rec['bytes']}; {FIX}")


def check_sizes(path: Path, manifest: dict[str, Any]) -> None:
    """The cheapest check (one ``stat`` per file), run before every search of a version already open."""
    for fname, rec in manifest["files"].items():
        try:
            size = (path / fname).stat().st_size
        except FileNotFoundError:
            raise CorruptVersionError(f"{path.name}/{fname} is missing; {FIX}") from None
        if size != rec["bytes"]:
            raise CorruptVersionError(f"{path.name}/{fname} has {size} bytes, its manifest says {rec['bytes']} "
                                      f"(truncated or overwritten); {FIX}")
