"""The local store: a folder of versions, the ``CURRENT`` pointer, the ``SERVED`` record and the build lock.

It implements :class:`~anchorprune.index.lifecycle.Store`; every decision (which version a rollback
serves, which ones retention keeps, whether a lock is stale) is the life cycle's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import filelock

from anchorprune.index.base import (
    CorruptVersionError,
    IndexVersion,
    NoServingVersionError,
    VersionNotFoundError,
)
from anchorprune.index.lifecycle import ANY, swap_conflict
from anchorprune.index.local.files import FIX, VERSION_DIR, check_files, check_sizes, fsync_dir, write_file
from anchorprune.index.local.version import Version

log = logging.getLogger(__name__)


class LocalStore:
    """The versions of index ``name`` under ``directory`` (layout: :mod:`anchorprune.index.local.files`)."""

    backend = "local"
    lock_breakable = False          # the OS holds the build lock for a live process

    def __init__(self, directory: Path, name: str):
        self.dir = directory
        self.name = name
        self.what = f"index {name!r} ({directory})"
        self._cache: dict[int, Version] = {}
        self._lock_handle: filelock.FileLock | None = None

    @property
    def _pointer(self) -> Path:
        return self.dir / "CURRENT"

    @property
    def _owner_file(self) -> Path:
        return self.dir / ".lock.owner"

    def version_numbers(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = VERSION_DIR.match(p.name)
            if m and (p / "manifest.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def read_serving(self) -> int | None:
        try:
            text = self._pointer.read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptVersionError(f"{self._pointer} cannot be read ({exc}); run `anchorprune index rollback` "
                                      "to point it at the last healthy version") from None
        m = VERSION_DIR.match(text)
        if not m:
            raise CorruptVersionError(f"{self._pointer} holds {text[:40]!r}, expected 'v<N>'; run `anchorprune "
                                      "index rollback` to point it at the last healthy version")
        return int(m.group(1))

    def open(self, number: int, verify: bool = False) -> Version:
        if not verify and number in self._cache:
            return self._cache[number]
        path = self.dir / f"v{number}"
        if not path.is_dir():
            raise VersionNotFoundError(f"index {self.name!r} has no version v{number} (it has "
                                       f"{[f'v{n}' for n in self.version_numbers()]}); {FIX}")
        v = Version.open(path, verify=verify)
        self._cache[number] = v
        return v

    def open_serving(self, resident_bytes: int, verify_on_open: bool) -> Version:
        """The serving version, checked for searching: file sizes at every call, every checksum once per
        opened version (``verify_on_open``); decoded into RAM when it fits ``resident_bytes``."""
        n = self.read_serving()
        if n is None:
            raise NoServingVersionError(f"index {self.name!r} ({self.dir}) has no serving version yet: "
                                        "run `anchorprune index build` (or build() then swap())")
        v = self.open(n)
        try:                       # the cheap check at every search: a file truncated or removed since it opened
            check_sizes(v.path, v.manifest)
        except CorruptVersionError:
            self._cache.pop(n, None)
            raise
        for other, ov in self._cache.items():      # a swapped-out version does not keep its RAM copy
            if other != n:
                ov.release()
        if resident_bytes:
            v.make_resident(resident_bytes)
        if verify_on_open and not v.checked:     # once per opened version: nothing served changes silently
            check_files(v.path, v.manifest, full=True)
            v.checked = True
        return v

    # ------------------------------------------------------------ the Store protocol (lifecycle.py decides)
    def _pointer_lock(self) -> filelock.FileLock:
        """A short lock around every read-compare-replace of ``CURRENT`` and ``SERVED`` (not the build lock:
        a rollback must work while a build runs; that build's compare-and-swap then refuses)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(self.dir / ".pointer.lock", timeout=60, thread_local=False)

    def write_serving(self, number: int, expected: Any) -> None:
        with self._pointer_lock():
            if expected is not ANY:
                cur = self.read_serving()
                if cur != expected:
                    raise swap_conflict(self.what, number, expected, cur)
            self._replace(self._pointer, f"v{number}\n")
        log.info("index %s: now serving v%d", self.name, number)

    def _replace(self, path: Path, text: str) -> None:
        tmp = self.dir / f".{path.name}.{uuid.uuid4().hex[:8]}"
        write_file(tmp, text.encode())
        try:
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(self.dir)

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
                hist = [n for n in self.version_numbers() if n < number]
            if number not in hist:
                self._replace(self.dir / "SERVED", json.dumps([*hist, number]))

    def check_version(self, number: int, full: bool) -> None:
        v = self.open(number, verify=full)
        try:
            check_sizes(v.path, v.manifest)        # an already-open version: its files may have changed since
        except CorruptVersionError:
            self._cache.pop(number, None)
            raise

    def version_info(self, number: int) -> IndexVersion:
        return self.open(number).info(self.name)

    def forget(self, number: int | None = None) -> None:
        """Drop opened versions from the cache (one, or all)."""
        if number is None:
            self._cache.clear()
        else:
            self._cache.pop(number, None)

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
