"""One life cycle for every store: versions, the rebuild lock, compare-and-swap, rollback, retention, health.

A store (:class:`Store`: the local folder of versions, or Elasticsearch indices behind an
alias) only knows how to keep versions and a few atomic primitives: read the serving
pointer, move it *if it still names what we expect*, record that a version served, check
a version, delete one, and take / renew / break / release a lock record. Everything that
decides (which version a rollback serves, which versions retention keeps, whether a lock
is stale, what a locked build is told) is written once here, the way Lucene's
``IndexWriter`` / ``IndexDeletionPolicy`` and RocksDB's ``CURRENT`` + ``LOCK`` are shaped:

- **One writer for the whole rebuild.** :meth:`Lifecycle.locked` holds the store's lock
  from before the champion is read until the clean-up after the swap; it is re-entrant for
  the same :class:`Lifecycle` (``build()`` inside a ``rebuild()`` does not lock twice) and
  refuses any other holder at once with :class:`~anchorprune.index.base.IndexLockedError`
  naming it (``wait=True`` queues instead). A stale lock (its owner is a dead process on
  this host, or its lease expired, for stores whose owner may live on another host) is
  taken over with a warning.
- **Versions only move forward.** A rebuild records the version it started from;
  :meth:`Lifecycle.swap` with ``expected=`` moves the pointer only if that version is still
  the serving one (the store makes the compare-and-move atomic), otherwise
  :class:`SwapConflictError` and the newer version keeps serving.
- **Rollback targets are versions that served.** Every swap records the version as served.
  :meth:`Lifecycle.rollback_target` is the newest healthy version older than the serving one
  that served (or, when the serving version is broken or the pointer unreadable, the newest
  healthy version that served at all); a version that was built but never served is not a
  rollback target, and retention (:meth:`Lifecycle.prune`) never deletes the serving version
  nor the newest *healthy* version that served before it.
- **No dead ends.** Retention removes damaged versions that do not serve (they can never be
  rolled back to), so it never keeps a damaged rollback target in place of a healthy one; a
  rebuild starts whatever the pointer holds (:meth:`Lifecycle.start_point`), so
  ``anchorprune index build --force`` is always a way out, and messages point to it when a
  rollback has no target.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anchorprune.index.base import (
    CorruptVersionError,
    IndexInputError,
    IndexLockedError,
    IndexStoreError,
    IndexVersion,
    VersionNotFoundError,
    now_iso,
)
from anchorprune.index.store import Store
from anchorprune.processes import pid_alive

log = logging.getLogger(__name__)


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``swap(..., expected=ANY)``: move the pointer whatever it names now (a human's swap / rollback)
ANY: Any = _Any()


class SwapConflictError(IndexStoreError, RuntimeError):
    """The serving version changed since the rebuild started: the swap was not made (versions never go backwards)."""


@dataclass(frozen=True)
class VersionHealth:
    """One version as ``index status`` reports it."""

    number: int
    ok: bool
    problem: str | None
    served: bool                 # it has served (a rollback target if healthy and older than the serving one)
    serving: bool
    info: IndexVersion | None    # None when the version cannot be read


# ---------------------------------------------------------------- the lock record
def new_owner(lease_s: float | None) -> dict[str, Any]:
    """The record a lock holder leaves: who, where, since when, doing what, and until when (lease)."""
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso(), "token": uuid.uuid4().hex,
            "command": cmd, "expires_at": None if lease_s is None else time.time() + lease_s}


def stale_reason(held: dict[str, Any], now: float | None = None) -> str | None:
    """Why a lock record is stale (a dead owner on this host, or an expired lease), or None if it may be live.

    >>> stale_reason({"pid": os.getpid(), "host": socket.gethostname()}) is None
    True
    >>> stale_reason({"pid": 1, "host": "elsewhere", "expires_at": 0.0})
    'its lease expired at 1970-01-01T00:00:00Z'
    """
    now = time.time() if now is None else now
    exp = held.get("expires_at")
    if isinstance(exp, int | float) and now > exp:
        return f"its lease expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}"
    pid = held.get("pid")
    if held.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() \
            and not pid_alive(pid):
        return f"its owner pid {pid} on this host is no longer running"
    return None


def describe_owner(held: dict[str, Any] | None) -> str:
    if not held:
        return "an owner whose record cannot be read yet"
    cmd = f" ({held['command']})" if held.get("command") else ""
    return f"pid {held.get('pid')} on host {held.get('host')!r} since {held.get('started_at')}{cmd}"


#: the way out when no rollback target is left (it rebuilds whatever serves, or fails to serve, now)
REBUILD = ("run `anchorprune index build --force`: it rebuilds every page from the champion and serves the result "
           "whatever the serving pointer and older versions hold")


def swap_conflict(what: str, number: int, expected: Any, cur: int | None) -> SwapConflictError:
    """The refusal of a swap whose rebuild started from ``expected`` while ``cur`` serves now."""
    return SwapConflictError(
        f"{what}: not swapping in v{number}: this build started from "
        f"{'no version' if expected is None else f'v{expected}'} but "
        f"{'nothing' if cur is None else f'v{cur}'} serves now (another build or a rollback moved it); "
        f"v{number} is kept unserved, run `anchorprune index build` again to build on the new serving version")


# ---------------------------------------------------------------- the life cycle
class Lifecycle:
    """Versions, lock, compare-and-swap, rollback, retention and health over one :class:`Store`.

    ``lease_s``: for stores whose lock owner may be on another host (Elasticsearch), how long a
    lock stays valid without renewal; :meth:`renew` (called at each build step) extends it.
    None (local: the operating system releases a dead process's lock) means no lease.
    """

    def __init__(self, store: Store, what: str, lease_s: float | None = None, poll_s: float = 0.5):
        self.store = store
        self.what = what
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._owner: dict[str, Any] | None = None
        self._depth = 0
        self._renewed = 0.0

    # ------------------------------------------------------------ lock
    @property
    def holding(self) -> bool:
        return self._owner is not None

    @contextlib.contextmanager
    def locked(self, wait: bool = False) -> Iterator[dict[str, Any]]:
        """Hold the store's lock for the block (re-entrant for this object; see the module docstring)."""
        if self._owner is not None:
            self._depth += 1
            try:
                yield self._owner
            finally:
                self._depth -= 1
            return
        owner = self._acquire(wait)
        self._owner, self._depth, self._renewed = owner, 1, time.monotonic()
        try:
            yield owner
        finally:
            self._owner, self._depth = None, 0
            self.store.lock_release(owner)

    def _acquire(self, wait: bool) -> dict[str, Any]:
        announced = False
        while True:
            owner = new_owner(self.lease_s)
            ok, replaced = self.store.lock_try(owner)
            if ok:
                if replaced:
                    log.warning("%s: taking over a stale build lock left by %s (%s)", self.what,
                                describe_owner(replaced), self.store.lock_where())
                self.store.cleanup_leftovers()
                return owner
            held = self.store.lock_owner()
            if held is None:
                continue                                    # released between our try and our read
            why = stale_reason(held) if held else None
            if why and self.store.lock_break(held):
                log.warning("%s: taking over a stale build lock of %s: %s (%s)", self.what, describe_owner(held),
                            why, self.store.lock_where())
                continue
            if not wait:
                raise IndexLockedError(
                    f"{self.what} is already being built by {describe_owner(held)} ({self.store.lock_where()}); "
                    "wait for it to finish (`anchorprune index build --wait` queues behind it), or if that build "
                    "is gone, run `anchorprune index unlock`")
            if not announced:
                log.warning("%s: waiting for the build of %s to finish", self.what, describe_owner(held))
                announced = True
            time.sleep(self.poll_s)

    def renew(self) -> None:
        """Extend the lease of a held lock (at most every quarter lease; a no-op without a lease)."""
        if self._owner is None or self.lease_s is None:
            return
        if time.monotonic() - self._renewed < self.lease_s / 4:
            return
        self._owner["expires_at"] = time.time() + self.lease_s
        self.store.lock_renew(self._owner)
        self._renewed = time.monotonic()

    def unlock(self, force: bool = False) -> str:
        """Remove a lock left behind (for a human: ``anchorprune index unlock``); returns what was done.

        A lock whose owner may still be running is refused unless ``force``; a lock the operating
        system holds for a live process (local) cannot be removed at all: stop that process.
        """
        held = self.store.lock_owner()
        if held is None:
            ok, replaced = self.store.lock_try(new_owner(None))
            if ok:
                owner = self.store.lock_owner() or {}
                self.store.lock_release(owner)
                self.store.cleanup_leftovers()
                return (f"{self.what}: removed a lock record left by {describe_owner(replaced)}" if replaced
                        else f"{self.what}: not locked")
            held = self.store.lock_owner()
        why = stale_reason(held) if held else None
        if not self.store.lock_breakable:
            raise IndexLockedError(
                f"{self.what} is locked by a running process, {describe_owner(held)} "
                f"({self.store.lock_where()}); the lock goes away when it exits: stop it "
                f"(kill {(held or {}).get('pid')}) if it is stuck")
        if not (why or force):
            raise IndexLockedError(
                f"{self.what} is locked by {describe_owner(held)} ({self.store.lock_where()}), which may still be "
                "running; stop that build, or pass --force if you know it is gone")
        self.store.lock_break(held or {})
        return f"{self.what}: removed the build lock of {describe_owner(held)}" + (f" ({why})" if why else "")

    # ------------------------------------------------------------ serving pointer
    def serving(self) -> int | None:
        return self.store.read_serving()

    def served(self) -> set[int]:
        """Versions that have served (stores without a record yet: every version up to the serving one)."""
        hist = self.store.served_history()
        try:
            cur = self.store.read_serving()
        except CorruptVersionError:
            cur = None
        if hist is None:
            return {n for n in self.store.version_numbers() if cur is not None and n <= cur}
        return set(hist) | ({cur} if cur is not None else set())

    def start_point(self) -> Any:
        """What a rebuild's compare-and-swap expects: the serving version (None before the first swap), or
        :data:`ANY` when the pointer is unreadable (a rebuild is the way out of a garbage pointer too)."""
        try:
            return self.store.read_serving()
        except CorruptVersionError as exc:
            log.warning("%s: %s; the rebuild will replace the pointer", self.what, exc)
            return ANY

    def serving_problem(self, full: bool = False) -> str | None:
        """Why the serving version cannot serve (an unreadable pointer, a missing or damaged version), or None
        (also when nothing serves yet). ``full``: every checksum, else the cheap checks."""
        try:
            cur = self.store.read_serving()
        except CorruptVersionError as exc:
            return str(exc)
        return None if cur is None else self._healthy(cur, full)

    def swap(self, number: int, expected: Any = ANY) -> None:
        """Serve ``number`` (checked in full first); with ``expected``, only if that still serves."""
        self.store.check_version(number, full=True)     # never point at a damaged or incomplete version
        if expected is not ANY:
            cur = self.store.read_serving()
            if cur != expected:
                raise self._conflict(number, expected, cur)
        self.store.write_serving(number, expected)
        self.store.record_served(number)

    def _conflict(self, number: int, expected: Any, cur: int | None) -> SwapConflictError:
        return swap_conflict(self.what, number, expected, cur)

    # ------------------------------------------------------------ rollback and retention
    def _healthy(self, number: int, full: bool) -> str | None:
        try:
            self.store.check_version(number, full=full)
        except (CorruptVersionError, VersionNotFoundError) as exc:
            return str(exc)
        return None

    def rollback_target(self) -> int | None:
        """The version a rollback serves (see the module docstring), or None."""
        try:
            cur = self.store.read_serving()
        except CorruptVersionError:
            cur = None
        numbers = set(self.store.version_numbers())
        served = self.served() & numbers
        broken = cur is None or cur not in numbers or self._healthy(cur, full=False) is not None
        candidates = sorted((n for n in served if n != cur and (broken or n < cur)), reverse=True)
        for n in candidates:
            if self._healthy(n, full=True) is None:
                return n
            log.warning("%s: v%d served before but is damaged; not rolling back to it", self.what, n)
        return None

    def rollback(self) -> int:
        try:
            cur: Any = self.store.read_serving()
        except CorruptVersionError:
            cur = ANY                                        # a garbage pointer is replaced whatever it holds
        target = self.rollback_target()
        if target is None:
            raise VersionNotFoundError(
                f"{self.what} has no healthy version that served before the serving one (versions: "
                f"{self.store.version_numbers()}, serving: {'unreadable' if cur is ANY else cur}, served: "
                f"{sorted(self.served())}); {REBUILD}")
        self.swap(target, expected=cur)
        log.warning("%s: rolled back to v%d", self.what, target)
        return target

    def kept(self, keep: int) -> set[int]:
        """Versions retention keeps: the serving one, the newest healthy one that served before it, and the
        newest healthy older ones up to ``keep`` in all. Versions newer than the serving one are not kept, nor
        damaged ones (every checksum is checked): a damaged version can never serve again, and keeping it
        would push out a healthy rollback target."""
        if keep < 2:
            raise IndexInputError(f"keep must be >= 2 (the serving version and the previous one), got {keep}")
        numbers = self.store.version_numbers()
        cur = self.store.read_serving()                  # an unreadable pointer: refuse to delete anything
        if cur is None:
            return set(numbers[-keep:])
        served = self.served()
        older = []
        for n in (n for n in numbers if n < cur):
            problem = self._healthy(n, full=True)
            if problem is None:
                older.append(n)
            else:
                log.warning("%s: v%d is damaged and does not serve: removing it (%s)", self.what, n, problem)
        served_older = [n for n in older if n in served]
        kept = {cur, *served_older[-1:]}
        for n in reversed(older):
            if len(kept) >= keep:
                break
            kept.add(n)
        return kept

    def prune(self, keep: int) -> list[int]:
        kept = self.kept(keep)
        deleted = [n for n in self.store.version_numbers() if n not in kept]
        for n in deleted:
            self.delete(n)
        return deleted

    def delete(self, number: int) -> None:
        try:
            cur = self.store.read_serving()
        except CorruptVersionError:
            raise IndexStoreError(f"{self.what}: the serving pointer is unreadable; run `anchorprune index rollback` "
                                  "before deleting versions") from None
        if number == cur:
            raise IndexStoreError(f"v{number} is the serving version of {self.what}; swap or roll back first")
        if number not in self.store.version_numbers():
            raise VersionNotFoundError(f"{self.what} has no version v{number}")
        self.store.remove_version(number)

    # ------------------------------------------------------------ health
    def pointer_problem(self) -> str | None:
        try:
            self.store.read_serving()
        except CorruptVersionError as exc:
            return str(exc)
        return None

    def health(self, full: bool = False, serving_full: bool = False) -> list[VersionHealth]:
        """Every version's health (cheap checks, or every checksum with ``full``), newest last.

        ``serving_full``: check the serving version's every checksum even without ``full``, as the first
        search of a version does (so a status never calls healthy what every search refuses)."""
        try:
            cur = self.store.read_serving()
        except CorruptVersionError:
            cur = None
        served = self.served()
        numbers = self.store.version_numbers()
        if cur is not None and cur not in numbers:
            numbers = sorted([*numbers, cur])
        out = []
        for n in numbers:
            problem = self._healthy(n, full or (serving_full and n == cur))
            info = None
            if problem is None:
                try:
                    info = self.store.version_info(n)
                except (CorruptVersionError, VersionNotFoundError) as exc:
                    problem = str(exc)
            out.append(VersionHealth(n, problem is None, problem, n in served, n == cur, info))
        return out
