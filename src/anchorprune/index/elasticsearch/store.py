"""The Elasticsearch store: one index ``<alias>-v<N>`` per version, the alias as the serving pointer, the
version's manifest in its mapping's ``_meta``, and a lock document with a lease.

It implements :class:`~anchorprune.index.lifecycle.Store` for
:class:`~anchorprune.index.elasticsearch.ElasticsearchIndex`; every decision is the life cycle's.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from anchorprune.index.base import (
    CorruptVersionError,
    IndexLockedError,
    IndexVersion,
    VersionNotFoundError,
    now_iso,
)
from anchorprune.index.elasticsearch.mapping import META_KEY
from anchorprune.index.lifecycle import ANY, describe_owner, swap_conflict

log = logging.getLogger(__name__)


class ElasticsearchStore:
    """Versions, serving alias and build lock of one alias (``client``, ``name``, ``what`` are the index's)."""

    backend = "elasticsearch"
    lock_breakable = True
    client: Any
    name: str
    what: str
    _meta_cache: dict[str, dict[str, Any]]
    _lock_seq: tuple[Any, Any]

    def index_name(self, number: int) -> str:
        return f"{self.name}-v{number}"

    def version_of(self, index_name: str) -> int | None:
        """N of an index named ``<alias>-v<N>``, or None for any other name."""
        m = re.fullmatch(rf"{re.escape(self.name)}-v(\d+)", index_name)
        return int(m.group(1)) if m else None

    @property
    def lock_index(self) -> str:
        return f"{self.name}-lock"

    def _all_versions(self) -> dict[int, dict[str, Any]]:
        """``{N: manifest}`` of every ``<alias>-v<N>`` index (complete or not)."""
        resp = self.client.indices.get(index=f"{self.name}-v*", allow_no_indices=True, ignore_unavailable=True)
        out = {}
        for iname, body in dict(resp).items():
            n = self.version_of(iname)
            if n is not None:
                out[n] = (body.get("mappings", {}).get("_meta", {}) or {}).get(META_KEY, {})
        return out

    def _numbers(self) -> list[int]:
        return sorted(n for n, man in self._all_versions().items() if man.get("complete"))

    def _serving_number(self) -> int | None:
        from elasticsearch import NotFoundError

        self.server()
        try:
            resp = self.client.indices.get_alias(name=self.name)
        except NotFoundError:
            return None
        names = list(dict(resp))
        if len(names) != 1:
            raise CorruptVersionError(f"alias {self.name!r} points at {names}; it must name exactly one version. "
                                      f"Fix it with one POST _aliases call or `anchorprune index rollback`.")
        n = self.version_of(names[0])
        if n is None:
            raise CorruptVersionError(f"alias {self.name!r} points at {names[0]!r}, not a '{self.name}-v<N>' index")
        return n

    def _manifest(self, number: int) -> dict[str, Any]:
        iname = self.index_name(number)
        if iname in self._meta_cache:
            return self._meta_cache[iname]
        from elasticsearch import NotFoundError

        try:
            resp = self.client.indices.get_mapping(index=iname)
        except NotFoundError:
            raise VersionNotFoundError(f"index {self.name!r} has no version v{number} ({iname})") from None
        man = (dict(resp)[iname]["mappings"].get("_meta", {}) or {}).get(META_KEY, {})
        if man.get("complete"):
            self._meta_cache[iname] = man
        return man

    def _info(self, number: int) -> IndexVersion:
        man = self._manifest(number)
        iname = self.index_name(number)
        stats = self.client.indices.stats(index=iname, metric="store")
        size = int(dict(stats)["indices"][iname]["primaries"]["store"]["size_in_bytes"])
        return IndexVersion(name=self.name, number=number, created_at=man.get("created_at", ""),
                            pages=int(man.get("pages", 0)), vectors=int(man.get("vectors", 0)), bytes=size,
                            manifest=man)

    def existing_hashes(self) -> dict[str, str]:
        from elasticsearch import helpers

        n = self._serving_number()
        if n is None:
            return {}
        return {hit["_id"]: hit["_source"]["content_hash"] for hit in helpers.scan(
            self.client, index=self.index_name(n), query={"query": {"match_all": {}}},
            source_includes=["content_hash"], size=1000)}

    # ------------------------------------------------------------ the Store protocol (lifecycle.py decides)
    def version_numbers(self) -> list[int]:
        return self._numbers()

    def read_serving(self) -> int | None:
        return self._serving_number()

    def write_serving(self, number: int, expected: Any) -> None:
        """One ``update_aliases`` call; with ``expected``, its ``remove`` carries ``must_exist: true``, so the
        cluster applies nothing if the alias no longer points at that version (an atomic compare-and-swap)."""
        from elasticsearch import NotFoundError

        actions: list[dict[str, Any]] = []
        try:
            old = self._serving_number() if expected is ANY else expected
        except CorruptVersionError:             # the alias names several indices: take it off all of them
            old = None
            actions += [{"remove": {"index": i, "alias": self.name}}
                        for i in dict(self.client.indices.get_alias(name=self.name))]
        if old is not None and old != number:
            remove: dict[str, Any] = {"index": self.index_name(old), "alias": self.name}
            if expected is not ANY:
                remove["must_exist"] = True
            actions.append({"remove": remove})
        actions.append({"add": {"index": self.index_name(number), "alias": self.name}})
        try:
            self.client.indices.update_aliases(actions=actions)
        except NotFoundError:
            if expected is ANY:
                raise
            raise swap_conflict(self.what, number, expected, self._serving_number()) from None
        log.info("alias %s: now serving %s (was %s)", self.name, self.index_name(number),
                 None if old is None else self.index_name(old))

    def served_history(self) -> list[int] | None:
        served = [n for n, man in self._all_versions().items() if man.get("complete") and man.get("served_at")]
        return sorted(served) if served else None

    def record_served(self, number: int) -> None:
        man = self._manifest(number)
        if man.get("served_at"):
            return
        man = {**man, "served_at": now_iso()}
        self.client.indices.put_mapping(index=self.index_name(number), meta={META_KEY: man})
        self._meta_cache[self.index_name(number)] = man

    def check_version(self, number: int, full: bool) -> None:
        man = self._manifest(number)
        if not man.get("complete"):
            raise CorruptVersionError(f"{self.index_name(number)} is not a complete version (its build did not "
                                      "finish); run `anchorprune index rollback` or `anchorprune index build`")
        if full:
            got = int(dict(self.client.count(index=self.index_name(number)))["count"])
            if got != int(man.get("pages", -1)):
                raise CorruptVersionError(f"{self.index_name(number)} holds {got} documents, its manifest says "
                                          f"{man.get('pages')}; run `anchorprune index rollback`")

    def version_info(self, number: int) -> IndexVersion:
        return self._info(number)

    def remove_version(self, number: int) -> None:
        self.client.indices.delete(index=self.index_name(number))
        self._meta_cache.pop(self.index_name(number), None)

    def cleanup_leftovers(self) -> None:
        try:
            serving = self._serving_number()
        except CorruptVersionError:
            return                                   # the alias is odd: leave every index for a human
        for n, man in self._all_versions().items():
            if not man.get("complete") and n != serving:
                log.warning("deleting %s left by an interrupted build", self.index_name(n))
                self.client.indices.delete(index=self.index_name(n), ignore_unavailable=True)

    def lock_where(self) -> str:
        return f"lock document {self.lock_index}/_doc/build"

    def lock_try(self, owner: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        from elasticsearch import ConflictError

        try:
            resp = self.client.index(index=self.lock_index, id="build", document=owner, op_type="create",
                                     refresh=True)
        except ConflictError:
            return False, None
        self._lock_seq = (resp["_seq_no"], resp["_primary_term"])
        return True, None

    def lock_owner(self) -> dict[str, Any] | None:
        from elasticsearch import NotFoundError

        try:
            held = dict(self.client.get(index=self.lock_index, id="build"))
        except NotFoundError:
            return None
        return {**(held.get("_source") or {}), "_seq_no": held.get("_seq_no"),
                "_primary_term": held.get("_primary_term")}

    def lock_break(self, held: dict[str, Any]) -> bool:
        from elasticsearch import ConflictError, NotFoundError

        with contextlib.suppress(ConflictError, NotFoundError):      # changed meanwhile: the caller looks again
            self.client.delete(index=self.lock_index, id="build", if_seq_no=held["_seq_no"],
                               if_primary_term=held["_primary_term"], refresh=True)
        return True

    def lock_renew(self, owner: dict[str, Any]) -> None:
        from elasticsearch import ConflictError, NotFoundError

        seq, term = self._lock_seq
        try:
            resp = self.client.index(index=self.lock_index, id="build", document=owner, if_seq_no=seq,
                                     if_primary_term=term, refresh=True)
        except (ConflictError, NotFoundError):
            raise IndexLockedError(
                f"alias {self.name!r}: this build lost its lock ({self.lock_where()}): its lease expired and another "
                f"build took it over ({describe_owner(self.lock_owner())}); this build stops here") from None
        self._lock_seq = (resp["_seq_no"], resp["_primary_term"])

    def lock_release(self, owner: dict[str, Any]) -> None:
        from elasticsearch import ConflictError, NotFoundError

        seq, term = getattr(self, "_lock_seq", (None, None))
        if seq is None:
            return
        with contextlib.suppress(ConflictError, NotFoundError):
            self.client.delete(index=self.lock_index, id="build", if_seq_no=seq, if_primary_term=term, refresh=True)
        self._lock_seq = (None, None)
