"""Claims: "I am encoding this page" markers in a shared cache, so two runs never encode a page twice.

A claim is a small JSON file created with an exclusive create (:meth:`Store.create_exclusive`)
beside the entry it announces, ``<entry>.claim.<generation>``. Whoever creates generation 0
encodes the page; everyone else defers to it and waits for the entry. A claim is **stale** when

- its owner ran on this host and that process is gone (a killed run: taken over at once), or
- it is older than ``ttl_s`` (an owner on another host that died; its clock is trusted).

A stale claim of generation *g* is taken over by creating generation *g + 1*, itself an
exclusive create, so of several runs that find the same stale claim exactly one takes it over.
The owner writes the entry **before** it releases (deletes) its claims, and whoever claims a page
checks for the entry again after claiming, so a page is encoded at most once as long as no live
owner holds a claim longer than ``ttl_s`` (claims are taken per batch, so a claim lives for one
batch's forward pass: keep ``ttl_s`` well above that).

>>> from anchorprune.storage import open_store
>>> store = open_store("memory://doctest-claims")
>>> a, b = Claimant(store, "run-a"), Claimant(store, "run-b")
>>> held = a.acquire("x/h.pt"); held is not None, b.acquire("x/h.pt") is None
(True, True)
>>> a.release(held); b.acquire("x/h.pt") is not None
True
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from anchorprune.processes import pid_alive
from anchorprune.storage import Store

log = logging.getLogger(__name__)

MAX_GENERATIONS = 64


@dataclass(frozen=True)
class Claim:
    rel: str            # the entry claimed
    generation: int

    @property
    def file(self) -> str:
        return claim_file(self.rel, self.generation)


def claim_file(rel: str, generation: int) -> str:
    return f"{rel}.claim.{generation}"


class Claimant:
    """One run's (or one worker's) identity for claims: host, pid and a random token."""

    def __init__(self, store: Store, run: str | None = None, ttl_s: float = 900.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = f"{run or 'run'}-{uuid.uuid4().hex[:12]}"

    def _payload(self) -> bytes:
        return json.dumps({"host": self.host, "pid": self.pid, "token": self.token, "time": time.time()}).encode()

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == self.host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
            return True
        return time.time() - float(info.get("time", 0.0)) > self.ttl_s

    def _read(self, file: str) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(file))
        except FileNotFoundError:
            return None
        except ValueError:   # half-written by a writer that died between create and write: treat as ancient
            return {"time": 0.0}

    def acquire(self, rel: str) -> Claim | None:
        """A claim on ``rel``, or None while a live owner holds it."""
        gen, vanished = 0, 0
        while gen < MAX_GENERATIONS:
            if self.store.create_exclusive(claim_file(rel, gen), self._payload()):
                return Claim(rel, gen)
            info = self._read(claim_file(rel, gen))
            if info is None and vanished < 100:   # released between our create and our read: same generation again
                vanished += 1
                continue
            info = info or {"time": 0.0}
            if not self.is_stale(info):
                return None
            if gen == 0 or info.get("token") != self.token:
                log.info("claim on %s (generation %d, owner %s) is stale; taking over", rel, gen, info.get("token"))
            gen += 1
        raise RuntimeError(f"{rel}: {MAX_GENERATIONS} stale claims in a row; remove {rel}.claim.* by hand")

    def release(self, claim: Claim) -> None:
        """Delete the claim and every older (stale) generation; call after the entry is written."""
        for gen in range(claim.generation, -1, -1):
            self.store.remove(claim_file(claim.rel, gen))
