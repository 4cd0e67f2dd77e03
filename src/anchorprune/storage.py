"""Artefacts on any filesystem: a local path (the default) or an fsspec URL (``memory://``, ``s3://``, ...).

:func:`open_store` turns a location into a :class:`Store` that offers the two writes the caches
need, and refuses a filesystem that cannot do them safely, naming it:

- :meth:`Store.write_atomic`: a reader sees the old bytes or the new ones, never half of them.
  Local disk: a temporary file beside the target, then ``os.replace``. ``memory://``: one dict
  assignment. Object stores (``s3``, ``gs``/``gcs``, ``az``/``abfs``): a single PUT, which the
  service makes visible whole or not at all. Any other scheme (``ftp``, ``sftp``, ``http``, ``zip``, ...)
  offers neither an atomic rename nor an atomic PUT through fsspec, so :class:`StorageError` is
  raised when the store is opened, before anything is written.
- :meth:`Store.create_exclusive`: create a file only if it does not exist (claims).
  Local: ``O_CREAT | O_EXCL``. ``memory://``: check-and-create under a process lock (the memory
  filesystem lives in one process). Object stores: fsspec's ``pipe_file(mode="create")``, a
  conditional PUT (``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS) in the fsspec
  implementations that support it.

>>> s = open_store("memory://doctest-store")
>>> s.write_atomic("a/b.bin", b"xyz"); s.read_bytes("a/b.bin")
b'xyz'
>>> s.create_exclusive("a/lock", b"1"), s.create_exclusive("a/lock", b"2")
(True, False)
>>> open_store("ftp://example.org/cache")
Traceback (most recent call last):
...
anchorprune.storage.StorageError: ftp://example.org/cache: filesystem 'ftp' has no atomic write (neither an atomic rename nor a whole-object PUT), so a crash could leave half-written artefacts; use a local path, memory://, or an object store (s3://, gs://, az://)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchorprune.redact import redact_url

#: schemes whose single-object write is atomic (a PUT is visible whole or not at all)
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
LOCAL = frozenset({"file", "local"})
MEMORY = frozenset({"memory"})
SUPPORTED = LOCAL | MEMORY | OBJECT_STORES

_MEMORY_LOCK = threading.Lock()


class StorageError(ValueError):
    """A cache or index location that cannot hold artefacts safely (unknown scheme, no atomic write)."""


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def scheme_of(location: str | Path) -> str:
    """``'file'`` for a plain path, else the URL's scheme (``'memory'``, ``'s3'``, ...)."""
    if not is_url(location):
        return "file"
    return str(location).split("://", 1)[0].lower()


def check_location(location: str | Path) -> str:
    """The scheme of ``location``, or :class:`StorageError` naming what is wrong with it."""
    scheme = scheme_of(location)
    if scheme in SUPPORTED:
        return scheme
    from fsspec.registry import known_implementations

    if scheme not in known_implementations:
        raise StorageError(f"{redact_url(location)}: unknown URL scheme {scheme!r}; use a local path or an fsspec URL "
                           f"({', '.join(sorted(SUPPORTED))})")
    raise StorageError(f"{redact_url(location)}: filesystem {scheme!r} has no atomic write (neither an atomic rename nor a "
                       "whole-object PUT), so a crash could leave half-written artefacts; use a local path, "
                       "memory://, or an object store (s3://, gs://, az://)")


@dataclass
class Store:
    """A folder on some filesystem; every path argument is relative to :attr:`root` (``/``-separated)."""

    location: str                 # what the user gave (path or URL), for messages
    scheme: str
    fs: Any                       # fsspec.AbstractFileSystem
    root: str                     # the filesystem's own path of the folder

    @property
    def local(self) -> bool:
        return self.scheme in LOCAL

    def full(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def local_path(self, rel: str) -> Path:
        """The on-disk path of ``rel`` (local stores only: memory maps need a real file)."""
        if not self.local:
            raise StorageError(f"{redact_url(self.location)}: {self.scheme!r} is not a local filesystem; {rel!r} has no "
                               "on-disk path")
        return Path(self.full(rel))

    def url(self, rel: str = "") -> str:
        return self.full(rel) if self.local else f"{self.scheme}://{self.full(rel).lstrip('/')}"

    # ---------------------------------------------------------------- reads
    def exists(self, rel: str) -> bool:
        return os.path.exists(self.full(rel)) if self.local else self.fs.exists(self.full(rel))

    def read_bytes(self, rel: str) -> bytes:
        """Raises FileNotFoundError when ``rel`` is missing."""
        if self.local:
            return Path(self.full(rel)).read_bytes()
        return self.fs.cat_file(self.full(rel))

    def list(self, rel: str = "") -> list[str]:
        """Names of the entries directly under ``rel`` ([] when it does not exist)."""
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.full(rel), detail=False))
        except FileNotFoundError:
            return []

    # ---------------------------------------------------------------- writes
    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data``; a reader sees the old file or the new one, never a mix."""
        target = self.full(rel)
        if self.local:
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=os.path.splitext(target)[1])
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return
        self.fs.pipe_file(target, data)   # memory: one dict assignment; object stores: one PUT

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` if it does not exist; False (nothing written) if it does."""
        target = self.full(rel)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        if self.scheme in MEMORY:
            with _MEMORY_LOCK:
                if self.fs.exists(target):
                    return False
                self.fs.pipe_file(target, data)
                return True
        try:
            self.fs.pipe_file(target, data, mode="create")   # conditional PUT where the backend has one
        except FileExistsError:
            return False
        return True

    def remove(self, rel: str) -> None:
        """Delete ``rel`` if it exists."""
        if self.local:
            Path(self.full(rel)).unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full(rel))


def open_store(location: str | Path) -> Store:
    """A :class:`Store` for a local path or fsspec URL; :class:`StorageError` for an unusable one."""
    scheme = check_location(location)
    if scheme in LOCAL:
        from fsspec.implementations.local import LocalFileSystem

        raw = str(location)
        path = raw.split("://", 1)[1] if is_url(raw) else raw
        return Store(raw, "file", LocalFileSystem(), os.path.abspath(os.path.expanduser(path)))
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(str(location))
    except ImportError as exc:
        raise StorageError(f"{redact_url(location)}: the fsspec implementation for {scheme!r} is not installed ({exc}); "
                           f"pip install the package it names (s3fs, gcsfs, adlfs)") from None
    return Store(str(location), scheme, fs, root.rstrip("/") or "/")
