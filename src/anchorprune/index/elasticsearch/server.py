"""The Elasticsearch server: its version, its licence, and the Python client that can talk to it.

Servers: Elasticsearch 8.18 or later (``rank_vectors`` and the ``rescorer`` retriever first
shipped in 8.18.0). The first request reads the server version (``GET /``) and the licence and
picks what the server supports: ``element_type`` ``bfloat16`` for dtype ``float16`` from 9.3
(PR #139463), ``float`` before that (logged and recorded in the manifest as ``element_type``),
``bit`` and ``float`` everywhere. The Python client must speak the server's major (it sends
``compatible-with=<client major>``; an 8.x server refuses 9): the 8.x client
(``elasticsearch>=8.18,<9``, the pin) works with 8.18+ and 9.x servers, the 9.x client only with
9.x servers. A mismatch is :class:`ElasticsearchVersionError` naming the client to install.
kNN ``num_candidates`` is capped at 10,000, the server's limit.

``rank_vectors`` needs an Enterprise licence (a trial counts); on a basic or expired licence
:class:`ElasticsearchLicenseError` says so, before anything is created, and again if the server
refuses a mapping, a document or a query with 403 ``security_exception`` later. Credentials come only from the
environment (``ELASTICSEARCH_URL``, ``ELASTICSEARCH_API_KEY``); TLS certificates are
verified unless the URL is plain http.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import anchorprune.index.quantize as quantize
from anchorprune.index.base import IndexStoreError
from anchorprune.redact import redact_url  # noqa: F401 - the one redaction helper, re-exported for the package

log = logging.getLogger(__name__)

#: licence types whose operation mode allows rank_vectors (Enterprise; a trial is Enterprise-level)
RANK_VECTORS_LICENSES = ("enterprise", "trial")
#: oldest supported server: rank_vectors (PR #118183) and the rescorer retriever (PR #118585) are in 8.18.0
MIN_SERVER = (8, 18, 0)
#: rank_vectors element_type bfloat16 exists from 9.3 (PR #139463, docs/changelog/139463.yaml)
BFLOAT16_SINCE = (9, 3, 0)
#: the client that talks to 8.x and 9.x servers (the 9.x client is "not compatible with Elasticsearch 8.x")
CLIENT_FOR_8X = "elasticsearch>=8.18,<9"


class ElasticsearchLicenseError(IndexStoreError, RuntimeError):
    """The cluster's licence does not allow ``rank_vectors``."""


class ElasticsearchVersionError(IndexStoreError, RuntimeError):
    """The server is too old, or the installed Python client cannot talk to it."""


@dataclass(frozen=True)
class ServerInfo:
    """What the backend read from the server at its first request."""

    number: str                              # e.g. "9.3.0"
    version: tuple[int, int, int]
    license_type: str | None = None          # None: no licence API (e.g. serverless)
    license_status: str | None = None


def parse_version(number: str) -> tuple[int, int, int]:
    """``"9.3.0-SNAPSHOT"`` -> ``(9, 3, 0)``.

    >>> parse_version("8.19.3"), parse_version("9.3.0-SNAPSHOT")
    ((8, 19, 3), (9, 3, 0))
    """
    parts = [int(x) for x in re.findall(r"\d+", number)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))         # type: ignore[return-value]


def client_version() -> tuple[int, int, int]:
    """Version of the installed ``elasticsearch`` Python client."""
    import elasticsearch

    return parse_version(elasticsearch.__versionstr__)


def client_install_hint(server_major: int) -> str:
    """The pip requirement of a client that talks to a server of this major.

    >>> client_install_hint(8), client_install_hint(9)
    ("pip install 'elasticsearch>=8.18,<9'", "pip install 'elasticsearch>=8.18,<10'")
    """
    if server_major <= 8:
        return f"pip install '{CLIENT_FOR_8X}'"
    return f"pip install 'elasticsearch>={'8.18' if server_major == 9 else f'{server_major - 1}.0'},<{server_major + 1}'"


def check_client_server(client: tuple[int, int, int], server: tuple[int, int, int], where: str = "the server") -> None:
    """Raise :class:`ElasticsearchVersionError` unless this client major can talk to this server.

    A server of major M accepts ``compatible-with`` M or M-1 (RestCompatibleVersionHelper).

    >>> check_client_server((8, 19, 3), (9, 3, 0))
    >>> check_client_server((9, 5, 1), (8, 19, 0))
    Traceback (most recent call last):
    ...
    anchorprune.index.elasticsearch.server.ElasticsearchVersionError: the server is Elasticsearch 8.19.0 but the installed Python client elasticsearch 9.5.1 only talks to 9.x servers: pip install 'elasticsearch>=8.18,<9' (the 8.x client works with 8.18+ and 9.x servers)
    """
    if server < MIN_SERVER:
        raise ElasticsearchVersionError(
            f"{where} is Elasticsearch {'.'.join(map(str, server))}, but the rank_vectors field and the rescorer "
            "retriever need 8.18 or later: upgrade the cluster, or use the local backend (index.backend: local)")
    if client[0] not in (server[0], server[0] - 1):
        raise ElasticsearchVersionError(
            f"{where} is Elasticsearch {'.'.join(map(str, server))} but the installed Python client elasticsearch "
            f"{'.'.join(map(str, client))} only talks to {client[0]}.x servers: {client_install_hint(server[0])}"
            + (" (the 8.x client works with 8.18+ and 9.x servers)" if server[0] == 8 else ""))


def element_type(dtype: str, server: tuple[int, int, int]) -> str:
    """The ``rank_vectors`` ``element_type`` this server can store ``dtype`` in.

    >>> element_type("float16", (9, 3, 0)), element_type("float16", (9, 2, 4)), element_type("bits", (8, 18, 0))
    ('bfloat16', 'float', 'bit')
    """
    et = quantize.ES_ELEMENT_TYPES[quantize.check_dtype(dtype)]
    if et == "bfloat16" and server < BFLOAT16_SINCE:
        return "float"
    return et


ELEMENT_BYTES = {"float": 4.0, "bfloat16": 2.0, "bit": 1 / 8}


def source_with_vectors(server: tuple[int, int, int]) -> dict[str, Any] | bool:
    """The ``_source`` of a search that needs the vectors back.

    From 9.2 new indices leave vectors out of ``_source`` unless the request says
    ``exclude_vectors: false`` (PR #131907, #135444); that option exists from 8.19 (PR #128735).

    >>> source_with_vectors((9, 2, 0)), source_with_vectors((8, 18, 1))
    ({'exclude_vectors': False}, True)
    """
    return {"exclude_vectors": False} if server >= (8, 19, 0) else True


def error_type(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("type", "")) if isinstance(err, dict) else str(err or "")


def is_license_refusal(status: Any, body: Any) -> bool:
    """403 ``security_exception`` "current license is non-compliant for [Rank Vectors]" (LicenseUtils)."""
    text = json.dumps(body, default=str).lower() if body is not None else ""
    return (status == 403 or "security_exception" in text) and "non-compliant" in text


class ServerConnection:
    """Reads the server's version and licence once per index object (``client``, ``where`` are the index's)."""

    client: Any
    where: str
    _server: ServerInfo | None = None
    _license_ok: bool = False

    def server(self) -> ServerInfo:
        """Version and licence of the server, read once (``GET /``, ``GET /_license``); checks the client fits."""
        if self._server is not None:
            return self._server
        from elasticsearch import ApiError
        from elasticsearch import ConnectionError as TransportConnectionError

        from anchorprune.servers import ServerUnreachableError, connect_timeout_s

        budget = connect_timeout_s()
        try:
            # the first request gets the connect budget and no retries: a server that does not answer
            # fails in seconds, not after the client's retries (request_timeout 120 s, 3 retries)
            number = str(dict(self.client.options(request_timeout=budget, max_retries=0,
                                                  retry_on_timeout=False).info())["version"]["number"])
        except TransportConnectionError as exc:
            raise ServerUnreachableError(
                f"Elasticsearch at {self.where} does not answer ({type(exc).__name__} within {budget:g} s, "
                "ANCHORPRUNE_CONNECT_TIMEOUT_S): check ELASTICSEARCH_URL and that the server is up "
                "(curl it), or use the local backend (index.backend: local)") from None
        except ApiError as exc:
            if error_type(exc.body) != "media_type_header_exception":
                raise
            # an older server refuses the client's compatible-with header before it says its version
            m = re.search(r"either version (\d+)", json.dumps(exc.body, default=str))
            major = int(m.group(1)) if m else client_version()[0] - 1
            raise ElasticsearchVersionError(
                f"{self.where} is Elasticsearch {major}.x but the installed Python client elasticsearch "
                f"{'.'.join(map(str, client_version()))} only talks to {client_version()[0]}.x servers: "
                f"{client_install_hint(major)}") from None
        version = parse_version(number)
        check_client_server(client_version(), version, self.where)
        lic_type = lic_status = None
        try:
            lic = dict(self.client.license.get())["license"]
            lic_type, lic_status = str(lic.get("type", "?")).lower(), str(lic.get("status", "?")).lower()
        except ApiError as exc:      # e.g. serverless projects have no licence API; the mapping call will tell
            log.warning("could not read the licence of %s (%s); going on", self.where, exc.meta.status)
        self._server = ServerInfo(number, version, lic_type, lic_status)
        log.info("%s: Elasticsearch %s, %s licence (%s)", self.where, number, lic_type, lic_status)
        return self._server

    def element_type(self) -> str:
        """The ``rank_vectors`` element type a build on this server uses for :attr:`dtype`."""
        return element_type(self.dtype, self.server().version)


    def check_license(self) -> None:
        """Raise :class:`ElasticsearchLicenseError` unless the licence allows ``rank_vectors``."""
        if self._license_ok:
            return
        srv = self.server()
        if srv.license_type is None:        # no licence API: the mapping call will tell
            self._license_ok = True
            return
        kind, status = srv.license_type, srv.license_status
        if kind not in RANK_VECTORS_LICENSES or status != "active":
            raise ElasticsearchLicenseError(self._license_message(f"a {kind} licence ({status})"))
        self._license_ok = True

    def _license_message(self, what: str) -> str:
        return (f"{self.where} has {what}, but the rank_vectors field that stores page vectors needs an "
                "Enterprise licence or a trial (POST _license/start_trial?acknowledge=true starts a 30-day trial). "
                "The local backend (index.backend: local, the default) works without any licence.")
