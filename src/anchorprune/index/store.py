"""What a backend's storage provides to the life cycle (:mod:`anchorprune.index.lifecycle`): versions, a
serving pointer moved by compare-and-swap, the served record, checks, and a lock record."""

from __future__ import annotations

from typing import Any, Protocol

from anchorprune.index.base import IndexVersion


class Store(Protocol):
    """What a backend provides to the life cycle (see the module docstring)."""

    name: str
    backend: str
    what: str                   # how messages name the index, e.g. "index 'demo' (/srv/indexes/demo)"
    #: whether a lock held by someone else can be removed from here (False: the OS holds it for a live process)
    lock_breakable: bool

    def version_numbers(self) -> list[int]:
        """Numbers of the complete versions, ascending."""

    def read_serving(self) -> int | None:
        """The serving version's number; None before the first swap; CorruptVersionError if unreadable."""

    def write_serving(self, number: int, expected: Any) -> None:
        """Point at ``number`` atomically, only if the pointer still names ``expected`` (ANY: whatever it names);
        otherwise raise :class:`SwapConflictError` and change nothing."""

    def served_history(self) -> list[int] | None:
        """Numbers of versions that have served; None when the store has no record yet (built before it)."""

    def record_served(self, number: int) -> None: ...

    def check_version(self, number: int, full: bool) -> None:
        """Raise CorruptVersionError / VersionNotFoundError unless the version is intact
        (``full=False``: sizes and manifest, cheap; ``full=True``: every checksum)."""

    def version_info(self, number: int) -> IndexVersion: ...

    def remove_version(self, number: int) -> None: ...

    def cleanup_leftovers(self) -> None:
        """Remove what an interrupted build left behind (called with the lock held)."""

    # the lock record: {"pid", "host", "started_at", "token", "command", "expires_at" (None: no lease)}
    def lock_where(self) -> str: ...

    def lock_try(self, owner: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Take the lock for ``owner`` if free: ``(True, record the store found and replaced or None)``,
        or ``(False, None)`` when someone holds it."""

    def lock_owner(self) -> dict[str, Any] | None:
        """The current holder's record; {} if unreadable; None if the lock is free."""

    def lock_break(self, held: dict[str, Any]) -> bool:
        """Remove ``held``'s lock if it is still that record (True), or False if this store cannot."""

    def lock_renew(self, owner: dict[str, Any]) -> None:
        """Extend the lease (raise IndexLockedError if the lock is no longer ours)."""

    def lock_release(self, owner: dict[str, Any]) -> None: ...
