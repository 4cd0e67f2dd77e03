"""Servers that do not answer fail fast: one bounded probe, then one line naming the server and what to check.

The stack talks to up to four servers: an MLflow tracking server, Elasticsearch, a Prefect API
and a Dask scheduler. Each client retries on its own terms (MLflow's HTTP client backs off for
over two minutes against a closed port; the Elasticsearch client retries a timed-out request
three times at 120 s each), so before the first use the address is probed with a TCP connect
bounded by the *connect budget*: ``ANCHORPRUNE_CONNECT_TIMEOUT_S`` seconds (default
:data:`DEFAULT_CONNECT_TIMEOUT_S`). A server that does not accept the connection within it is
:class:`ServerUnreachableError`, a ``ConnectionError`` whose message is one complete line with
the address redacted (:mod:`anchorprune.redact`).

Addresses without a network endpoint (``sqlite:///``, a local path, ``file://``) are not probed.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

from anchorprune.redact import redact_url

__all__ = ["CONNECT_TIMEOUT_ENV", "DEFAULT_CONNECT_TIMEOUT_S", "ServerUnreachableError", "connect_timeout_s",
           "endpoint", "probe"]

#: the environment variable that sets the connect budget, in seconds
CONNECT_TIMEOUT_ENV = "ANCHORPRUNE_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 5.0

#: default ports by scheme, for URLs that leave the port out
DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 8786, "tls": 8786}


class ServerUnreachableError(ConnectionError):
    """A server did not accept a connection within the connect budget (the message is one line)."""


def connect_timeout_s() -> float:
    """The connect budget: ``$ANCHORPRUNE_CONNECT_TIMEOUT_S`` (a positive number of seconds) or the default."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{CONNECT_TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def endpoint(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a network URL, or None for one without an endpoint (sqlite, file, a path).

    >>> endpoint("http://u:p@ss@127.0.0.1:9/x"), endpoint("tcp://sched:8786"), endpoint("sqlite:///m.db")
    (('127.0.0.1', 9), ('sched', 8786), None)
    """
    if "://" not in url:
        return None
    scheme = url.split("://", 1)[0].lower()
    base = scheme.split("+")[-1]
    if base not in DEFAULT_PORTS:
        return None
    rest = url.split("://", 1)[1]
    slash = rest.find("/")
    rest = rest[rest.rfind("@", 0, slash if slash != -1 else len(rest)) + 1:]   # drop user:password (may hold "@")
    parts = urlsplit(f"{base}://{rest}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        return None
    return parts.hostname, port or DEFAULT_PORTS[base]


def probe(url: str, what: str, hint: str, timeout: float | None = None) -> None:
    """Connect to ``url``'s host and port within ``timeout`` (the connect budget), else raise one line.

    ``what`` names the server ("MLflow tracking server"), ``hint`` says what to check.
    """
    where = endpoint(url)
    if where is None:
        return
    budget = connect_timeout_s() if timeout is None else timeout
    start = time.monotonic()
    try:
        with socket.create_connection(where, timeout=budget):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = "no answer"
        took = time.monotonic() - start
        raise ServerUnreachableError(
            f"{what} at {redact_url(url)} does not answer ({reason} after {took:.1f} s, budget {budget:g} s, "
            f"{CONNECT_TIMEOUT_ENV}): {hint}") from None
