"""The Elasticsearch backend: one index per version behind an alias, swapped in one ``update_aliases`` call.

Per version an index ``<alias>-v<N>`` holds one document per page (``_id`` = page id)::

    page_id       keyword
    content_hash  keyword
    n_vectors     integer
    mean_vector   dense_vector, cosine, HNSW      L2-normalised mean of the page vectors (first stage "mean")
    fde           dense_vector, max_inner_product, HNSW   MUVERA FDE of the stored page vectors (first stage
                                                  "muvera", or "auto" with target muvera; absent otherwise)
    tokens        nested, one object per stored page vector: first stage "token_ivf" (or "auto" with
      .vector     dense_vector, max_inner_product, HNSW     target token_ivf; absent otherwise)
    vectors       rank_vectors                    float | bfloat16 (our "float16") | bit (hex strings)

and the version's manifest in the mapping's ``_meta.anchorprune`` (dtype, dim,
counts, build meta, ``complete: true`` once verified). The serving version is the
index the alias points at.

Build: validate -> lock (a document ``<alias>-lock/_doc/build`` created with
``op_type=create``, naming pid, host and command, with a lease that each build step
renews by compare-and-set on ``_seq_no``; an expired lease or a dead pid on this host
is a stale lock, taken over with a warning; see :mod:`anchorprune.index.lifecycle`) ->
create the index with ``refresh_interval: -1`` and 0 replicas -> copy unchanged
pages server-side with ``_reindex`` (an ``ids`` query: nothing is re-encoded or
re-sent) -> ``helpers.streaming_bulk`` the new pages (small chunks, a byte cap,
retries on 429) -> restore refresh interval and replicas -> refresh -> count check
-> smoke search -> mark complete. Any failure deletes the new index; the alias never
moves during a build.

Search: exact ``script_score`` with ``maxSimDotProduct`` over every page when the
serving version holds at most ``exact_max_pages`` pages or the first stage is ``none``;
otherwise a ``rescorer`` retriever: kNN (``k = candidates``) on the first stage's field
(``mean_vector`` for ``mean``, ``fde`` for ``muvera``) rescored with the same script over a
window of all ``candidates`` pages (``query_weight: 0``, so the final score is the exact MaxSim
alone and the final ranking is exact MaxSim over the candidates). For ``token_ivf`` the child of the
``rescorer`` is a ``standard`` retriever whose query is a ``bool.should`` of one ``nested`` query per query
token (``path: tokens``, ``score_mode: max``) around a ``knn`` query on ``tokens.vector`` with that token
(``k = candidates``, ``num_candidates`` as above). :meth:`search_report` says which first stage answered;
a version built without the first stage's vectors (FDEs, token vectors) falls back, with a warning, to
what it has (muvera, else the mean vector).

token_ivf is the local backend's token-level first stage (:mod:`anchorprune.index.token_ivf`) with
Elasticsearch's HNSW in place of our inverted lists. Each nested kNN clause gives each of the ``k`` page
documents nearest to query token ``q_i`` the score of its best token (nested kNN "diversifies the top
results over the top-level document", query-dsl-knn-query.md "Knn query inside a nested query"; the knn
query exists from 8.12, its ``k`` from 8.15, PR #110233, so on every supported server); ``bool`` adds the
clause scores (bool-query.md: "the score from each matching must or should clause will be added
together"). So a page's first-stage score is ``sum_i f(max_j q_i · t_j)`` over the clauses that reached
it, with ``f`` max_inner_product's score transform (``ip + 1`` for ``ip >= 0``, ``1 / (1 - ip)`` below):
monotone per token, the same ranking per token as the local backend's ``s_i(p)``, but a sum of
transformed maxima, and a token clause that did not reach the page adds 0 (local token_ivf imputes the
smallest similarity seen). Nested kNN supports only ``score_mode: max`` (PR #125582; the server takes the
other modes and scores them as max, issue #122625); we say ``max``. ``similarity: max_inner_product``
because the stored vectors are not unit length after bfloat16 rounding (``dot_product`` refuses
``|‖v‖² − 1| > 1e-3``) and max_inner_product takes any vector, ranking by the raw inner product as
MaxSim does. For dtype ``bits`` the nested vectors are the decoded ``±1/sqrt(d)`` floats (the scale the
exact MaxSim is reported on, so the token kNN ranks by the same ``q · b``), at 32x the bits' size in the
HNSW graph: pick ``knn_index_options: bbq_hnsw`` (dims >= 64) for a large bit index. A page holds at most
10,000 vectors here (``index.mapping.nested_objects.limit``). token_ivf's ``first_stage_params``
(``centroids``, ``nprobe``, ``iters``, ``seed``) are local-only and ignored; the manifest records
``params: {}``. A query of ``m`` tokens is ``m`` clauses (far below the bool clause limit for query
lengths of ColPali-style models).

First stages (:mod:`anchorprune.index.first_stage`): the FDE is not unit length and its raw inner
product is what approximates MaxSim, so ``fde`` uses ``similarity: max_inner_product`` (8.11+;
``_score`` = ``ip + 1`` for ``ip >= 0``, ``1 / (1 - ip)`` below: monotone in ``ip``, so the kNN ranks
by the raw inner product, as the local backend does). ``dot_product`` would refuse non-unit vectors
and ``cosine`` would rank by ``ip / |FDE(page)|``, a different order. Both first-stage fields state
``index_options: {"type": "hnsw"}`` explicitly (float vectors in the graph, exact float kNN scores)
instead of the server's default, which is ``int8_hnsw`` on 8.14-9.0 and ``bbq_hnsw`` (dims >= 384)
on 9.1+: quantised scores would only be approximate (harmless for the candidates, which are rescored
exactly, but the candidate set would then differ between servers and from the local backend). The
cost is 4 bytes per FDE dimension of off-heap HNSW memory (16 KiB per page at 4,096 dims);
``knn_index_options`` picks ``int8_hnsw`` / ``bbq_hnsw`` for a large corpus. The manifest records
the choice. The FDE's random matrices are drawn from the recorded ``seed`` and params at build and
again at query time; the manifest keeps a sha256 of them and a search refuses a query encoder whose
matrices differ (:class:`FirstStageMismatchError`). Because
``script_score`` may not return negative scores, the script adds a per-query bound
``params.offset`` that is subtracted again from the returned scores. For bit pages
Elasticsearch's float-query kernel sums the query components where a bit is set
(``q · b``, ``b`` in {0, 1}); the returned score is mapped back to the local
backend's scale ``q · (2b - 1) / sqrt(d)`` (``(2 s - sum(q)) / sqrt(d)``, the same
per-query-token argmax), so both backends rank and score alike. ``hamming=True``
scores bit queries with ``maxSimInvHamming`` instead.

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

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import torch

from anchorprune.index import quantize
from anchorprune.index.base import (
    CorruptVersionError,
    Hit,
    IndexInputError,
    IndexLockedError,
    IndexStats,
    IndexStoreError,
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
    ES_MAX_DIMS,
    FirstStage,
    MuveraFirstStage,
    SearchReport,
    auto_stage,
    built_stage,
    make_first_stage,
    muvera_dims,
    resolve_first_stage,
    stage_record,
)
from anchorprune.index.lifecycle import ANY, Lifecycle, VersionHealth, describe_owner
from anchorprune.pruning.base import PrunedPage

log = logging.getLogger(__name__)

META_KEY = "anchorprune"
FORMAT = 1
#: licence types whose operation mode allows rank_vectors (Enterprise; a trial is Enterprise-level)
RANK_VECTORS_LICENSES = ("enterprise", "trial")
VECTORS_FIELD = "vectors"
MEAN_FIELD = "mean_vector"
FDE_FIELD = "fde"
#: first stage token_ivf: one nested object per stored page vector, its dense_vector sub-field
TOKENS_FIELD = "tokens"
TOKEN_VECTOR_FIELD = f"{TOKENS_FIELD}.vector"
#: nested objects one document may hold (index.mapping.nested_objects.limit, default 10000; DocumentParser:
#: "The number of nested documents has exceeded the allowed limit of [10000]")
NESTED_OBJECTS_LIMIT = 10_000
#: dense_vector index_options types (DenseVectorFieldMapper.VectorIndexType); bbq_disk from 9.2 (spec PR #5434)
KNN_INDEX_OPTIONS = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat",
                     "bbq_disk")
#: similarity of each first-stage field: FDEs rank by their raw inner product (not unit length)
FIRST_STAGE_FIELDS = {"mean": (MEAN_FIELD, "cosine"), "muvera": (FDE_FIELD, "max_inner_product"),
                      "token_ivf": (TOKEN_VECTOR_FIELD, "max_inner_product")}
#: the rank_vectors element type -> the quantize dtype whose decode gives what the server stores
_STORED_AS = {"float": "float32", "bfloat16": "bfloat16", "bit": "bits"}
_REINDEX_BATCH = 1000
#: oldest supported server: rank_vectors (PR #118183) and the rescorer retriever (PR #118585) are in 8.18.0
MIN_SERVER = (8, 18, 0)
#: rank_vectors element_type bfloat16 exists from 9.3 (PR #139463, docs/changelog/139463.yaml)
BFLOAT16_SINCE = (9, 3, 0)
#: kNN num_candidates limit (KnnSearchBuilder: "[num_candidates] cannot exceed [10000]")
KNN_MAX_CANDIDATES = 10_000
#: the client that talks to 8.x and 9.x servers (the 9.x client is "not compatible with Elasticsearch 8.x")
CLIENT_FOR_8X = "elasticsearch>=8.18,<9"


class ElasticsearchLicenseError(IndexStoreError, RuntimeError):
    """The cluster's licence does not allow ``rank_vectors``."""


class ElasticsearchVersionError(IndexStoreError, RuntimeError):
    """The server is too old, or the installed Python client cannot talk to it."""


class FirstStageMismatchError(IndexStoreError, RuntimeError):
    """A version's recorded first stage cannot be reproduced at query time (different FDE random matrices)."""


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
    anchorprune.index.elasticsearch.ElasticsearchVersionError: the server is Elasticsearch 8.19.0 but the installed Python client elasticsearch 9.5.1 only talks to 9.x servers: pip install 'elasticsearch>=8.18,<9' (the 8.x client works with 8.18+ and 9.x servers)
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


def num_candidates(c: int) -> int:
    """kNN ``num_candidates`` for ``k = c``: ``max(2c, 100)``, at most the server's 10,000 (and >= ``c``).

    >>> num_candidates(10), num_candidates(400), num_candidates(6000)
    (100, 800, 10000)
    """
    if not 1 <= c <= KNN_MAX_CANDIDATES:
        raise IndexInputError(f"kNN k={c} is outside [1, {KNN_MAX_CANDIDATES}] (Elasticsearch's num_candidates "
                              f"limit): lower index.candidates or the number of hits asked for")
    return min(max(2 * c, 100), KNN_MAX_CANDIDATES)


def source_with_vectors(server: tuple[int, int, int]) -> dict[str, Any] | bool:
    """The ``_source`` of a search that needs the vectors back.

    From 9.2 new indices leave vectors out of ``_source`` unless the request says
    ``exclude_vectors: false`` (PR #131907, #135444); that option exists from 8.19 (PR #128735).

    >>> source_with_vectors((9, 2, 0)), source_with_vectors((8, 18, 1))
    ({'exclude_vectors': False}, True)
    """
    return {"exclude_vectors": False} if server >= (8, 19, 0) else True


def _error_type(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("type", "")) if isinstance(err, dict) else str(err or "")


def _is_license_refusal(status: Any, body: Any) -> bool:
    """403 ``security_exception`` "current license is non-compliant for [Rank Vectors]" (LicenseUtils)."""
    text = json.dumps(body, default=str).lower() if body is not None else ""
    return (status == 403 or "security_exception" in text) and "non-compliant" in text


def redact_url(url: str) -> str:
    """The URL without user:password, for logs and messages.

    >>> redact_url("https://elastic:secret@es.example.com:9200/")
    'https://es.example.com:9200/'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def mapping(dim: int, dtype: str, manifest: dict[str, Any], element: str | None = None,
            fde_dims: int | None = None, index_options: str = "hnsw", tokens: bool = False) -> dict[str, Any]:
    """Index mappings of one version (see the module docstring); ``element`` overrides the element type,
    ``fde_dims`` adds the MUVERA ``fde`` field, ``tokens`` the nested ``tokens.vector`` field (token_ivf).

    >>> m = mapping(128, "bits", {}, fde_dims=4096)
    >>> m["properties"]["vectors"], m["properties"]["mean_vector"]["similarity"]
    ({'type': 'rank_vectors', 'dims': 128, 'element_type': 'bit'}, 'cosine')
    >>> m["properties"]["fde"]
    {'type': 'dense_vector', 'dims': 4096, 'index': True, 'similarity': 'max_inner_product', 'index_options': {'type': 'hnsw'}}
    >>> mapping(128, "float32", {}, tokens=True)["properties"]["tokens"]["properties"]["vector"]["dims"]
    128
    """
    quantize.check_dim(dtype, dim)
    props: dict[str, Any] = {
        "page_id": {"type": "keyword"},
        "content_hash": {"type": "keyword"},
        "n_vectors": {"type": "integer"},
        MEAN_FIELD: {"type": "dense_vector", "dims": dim, "index": True, "similarity": "cosine",
                     "index_options": {"type": index_options}},
        VECTORS_FIELD: {"type": "rank_vectors", "dims": dim,
                        "element_type": element or quantize.ES_ELEMENT_TYPES[dtype]},
    }
    if fde_dims is not None:
        props[FDE_FIELD] = {"type": "dense_vector", "dims": fde_dims, "index": True,
                            "similarity": FIRST_STAGE_FIELDS["muvera"][1], "index_options": {"type": index_options}}
    if tokens:
        # nested objects of one dense_vector each; kNN over them diversifies over the page documents
        props[TOKENS_FIELD] = {"type": "nested", "properties": {"vector": {
            "type": "dense_vector", "dims": dim, "index": True, "similarity": FIRST_STAGE_FIELDS["token_ivf"][1],
            "index_options": {"type": index_options}}}}
    return {"_meta": {META_KEY: manifest}, "dynamic": "strict", "properties": props}


def build_settings() -> dict[str, Any]:
    """Settings while a version is being built (no refresh, no replicas)."""
    return {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"}


def page_document(page_id: str, content_hash: str, vecs: np.ndarray, dtype: str,
                  fde: np.ndarray | None = None, tokens: np.ndarray | None = None) -> dict[str, Any]:
    """The ``_source`` of one page (``vecs`` is ``[k, d]`` float32; ``fde`` its ``[D]`` MUVERA FDE, ``tokens``
    its ``[k, d]`` stored vectors as floats for the nested ``tokens`` field (token_ivf), if any).

    >>> doc = page_document("p1", "h", np.array([[1.0, -1.0] * 4]), "bits")
    >>> doc["vectors"], doc["n_vectors"]
    (['aa'], 1)
    """
    stored: Any = (quantize.to_hex_rows(quantize.encode(vecs, "bits")) if dtype == "bits"
                   else np.asarray(vecs, dtype=np.float32).tolist())
    doc = {"page_id": page_id, "content_hash": content_hash, "n_vectors": int(vecs.shape[0]),
           MEAN_FIELD: normalized_mean(vecs).tolist(), VECTORS_FIELD: stored}
    if fde is not None:
        doc[FDE_FIELD] = np.asarray(fde, dtype=np.float32).tolist()
    if tokens is not None:
        doc[TOKENS_FIELD] = [{"vector": row} for row in np.asarray(tokens, dtype=np.float32).tolist()]
    return doc


def token_query(q: torch.Tensor, c: int) -> dict[str, Any]:
    """The token_ivf first stage of query ``q [m, d]``: one nested kNN clause per query token, summed.

    Each clause scores the page documents whose nearest ``tokens.vector`` (among the ``c`` pages nearest
    to that query token) it reaches, by that best child's score; ``bool.should`` adds the clauses up.

    >>> b = token_query(torch.eye(2, 4), 10)["bool"]["should"]
    >>> len(b), b[0]["nested"]["score_mode"], b[0]["nested"]["query"]["knn"]["k"], b[1]["nested"]["query"]["knn"]["query_vector"]
    (2, 'max', 10, [0.0, 1.0, 0.0, 0.0])
    """
    nc = num_candidates(c)
    return {"bool": {"should": [
        # nested kNN supports score_mode max only (query-dsl-knn-query.md "Knn query inside a nested query",
        # PR #125582); the server accepts the others but scores as max (issue #122625), so say max
        {"nested": {"path": TOKENS_FIELD, "score_mode": "max", "query": {"knn": {
            "field": TOKEN_VECTOR_FIELD, "query_vector": row, "k": c, "num_candidates": nc}}}}
        for row in q.to(torch.float32).tolist()]}}


def maxsim_script(query: torch.Tensor, dtype: str, hamming: bool = False,
                  page_norm: float = 1.0) -> tuple[dict[str, Any], float]:
    """The Painless script scoring one query ``[m, d]`` against ``vectors``, and the offset it adds.

    >>> s, off = maxsim_script(torch.tensor([[0.6, -0.8]]), "float32")
    >>> s["source"], s["params"]["offset"] == off, round(off, 3)
    ("maxSimDotProduct(params.query_vector, 'vectors') + params.offset", True, 1.0)
    """
    q = query.to(torch.float32)
    if hamming:
        if dtype != "bits":
            raise IndexInputError("hamming scoring needs a bit index (dtype: bits)")
        rows: Any = quantize.to_hex_rows(quantize.encode(q.numpy(), "bits"))
        fn, offset = "maxSimInvHamming", 0.0                       # in [0, m]: never negative
    elif dtype == "bits":
        rows, fn = q.tolist(), "maxSimDotProduct"
        offset = float(torch.clamp(-q, min=0).sum())               # q . b >= sum of negative components
    else:
        rows, fn = q.tolist(), "maxSimDotProduct"
        # |q_i . d_j| <= |q_i| |d_j| <= |q_i| * page_norm (the version's largest page-vector norm)
        offset = float(q.norm(dim=1).sum()) * page_norm
    return {"source": f"{fn}(params.query_vector, '{VECTORS_FIELD}') + params.offset",
            "params": {"query_vector": rows, "offset": offset}}, offset


class ElasticsearchIndex:
    """The :class:`~anchorprune.index.base.Index` contract on Elasticsearch (see the module docstring).

    Parameters
    ----------
    client
        An ``elasticsearch.Elasticsearch`` client (:meth:`from_env` builds one).
    alias
        The alias searches go to; versions are ``<alias>-v<N>``.
    dtype
        ``float32`` -> ``float``, ``float16`` -> ``bfloat16`` (9.3+; ``float`` before), ``bits`` -> ``bit``.
    two_stage, candidates, exact_max_pages
        kNN + rescore above ``exact_max_pages`` pages when a first stage is on; exact otherwise.
        ``candidates`` is at most 10,000 (the server's ``num_candidates`` limit).
    first_stage, first_stage_params, first_stage_threshold, first_stage_auto
        As :class:`~anchorprune.index.local.LocalIndex`: ``none`` | ``mean`` | ``muvera`` | ``token_ivf`` |
        ``auto`` (None: ``mean`` if ``two_stage`` else ``none``), MUVERA's parameters (its FDE must fit
        ``dense_vector``'s 4,096 dims), and ``auto``'s threshold (pages) and target. token_ivf's parameters
        (``centroids``, ``nprobe``, ``iters``, ``seed``) describe the local inverted lists; Elasticsearch's
        HNSW replaces them here, so they are accepted and ignored.
    knn_index_options
        ``index_options.type`` of the first-stage fields (default ``hnsw``: float vectors, exact kNN
        scores; see the module docstring).
    replicas
        ``number_of_replicas`` restored after the build.
    chunk_pages, max_chunk_bytes, max_retries
        ``streaming_bulk`` sizing (default: 32 float pages or 256 bit pages per request, 32 MiB cap).
    """

    backend = "elasticsearch"
    lock_breakable = True
    BUILD_STEPS = ("validate", "license", "lock", "create", "reuse", "bulk", "settings", "count", "verify",
                   "publish")

    def __init__(self, client: Any, alias: str, dtype: str = "float16", two_stage: bool = False,
                 candidates: int = 100, exact_max_pages: int = 5000, replicas: int = 1,
                 chunk_pages: int | None = None, max_chunk_bytes: int = 32 * 1024 * 1024, max_retries: int = 5,
                 hamming: bool = False, where: str = "Elasticsearch", lock_lease_s: float = 600.0,
                 first_stage: str | None = None, first_stage_params: dict[str, Any] | None = None,
                 first_stage_threshold: int | None = None, first_stage_auto: str = "token_ivf",
                 knn_index_options: str = "hnsw"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", alias):
            raise IndexInputError(f"Elasticsearch alias {alias!r} must be lowercase letters, digits, '_' or '-'")
        self.client = client
        self.name = alias
        self.dtype = quantize.check_dtype(dtype)
        self.first_stage = resolve_first_stage(first_stage, two_stage)
        self.first_stage_params = {k: v for k, v in (first_stage_params or {}).items() if k not in ("dim", "dims")}
        self.first_stage_threshold = first_stage_threshold
        self.first_stage_auto = built_stage(first_stage_auto)
        self.two_stage = self.first_stage != "none"
        if self._built_stage == "muvera":
            self._check_fde_dims(muvera_dims(None, self.first_stage_params))
        if knn_index_options not in KNN_INDEX_OPTIONS:
            raise IndexInputError(f"knn_index_options {knn_index_options!r} is not one of {', '.join(KNN_INDEX_OPTIONS)}")
        self.knn_index_options = knn_index_options
        self._encoders: dict[str, FirstStage] = {}
        if not 1 <= candidates <= KNN_MAX_CANDIDATES:
            raise IndexInputError(f"candidates={candidates} is outside [1, {KNN_MAX_CANDIDATES}]: Elasticsearch "
                                  f"refuses kNN num_candidates above {KNN_MAX_CANDIDATES}; lower index.candidates")
        self.candidates = candidates
        self.exact_max_pages = exact_max_pages
        self.replicas = replicas
        self.chunk_pages = chunk_pages or (256 if dtype == "bits" else 32)
        self.max_chunk_bytes = max_chunk_bytes
        self.max_retries = max_retries
        self.hamming = hamming
        self.where = where
        self._license_ok = False
        self._server: ServerInfo | None = None
        self._meta_cache: dict[str, dict[str, Any]] = {}
        self._lock_seq: tuple[Any, Any] = (None, None)
        self.life = Lifecycle(self, f"Elasticsearch index {alias!r} at {where}", lease_s=lock_lease_s)

    @classmethod
    def from_env(cls, alias: str, **kwargs: Any) -> ElasticsearchIndex:
        """Connect with ``ELASTICSEARCH_URL`` and optional ``ELASTICSEARCH_API_KEY`` (TLS verified for https)."""
        from elasticsearch import Elasticsearch

        url = os.environ.get("ELASTICSEARCH_URL")
        if not url:
            raise IndexStoreError("ELASTICSEARCH_URL is not set: export it (and ELASTICSEARCH_API_KEY if needed), "
                                  "or use the local backend (index.backend: local)")
        api_key = os.environ.get("ELASTICSEARCH_API_KEY") or None
        client = Elasticsearch(url, api_key=api_key, request_timeout=120, retry_on_timeout=True, max_retries=3)
        idx = cls(client, alias, where=redact_url(url), **kwargs)
        idx.server()            # version, licence and client fit, checked at connect
        return idx

    def __repr__(self) -> str:
        return f"ElasticsearchIndex({self.name!r} at {self.where}, dtype={self.dtype!r}, first_stage={self.first_stage!r})"

    @property
    def _built_stage(self) -> str:
        """The first stage whose vectors a build writes (``auto``: its target's)."""
        return built_stage(self.first_stage, self.first_stage_auto)

    @staticmethod
    def _check_fde_dims(dims: int | None) -> None:
        if dims is not None and dims > ES_MAX_DIMS:
            # DenseVectorFieldMapper.MAX_DIMS_COUNT = 4096: the server would refuse the mapping
            raise IndexInputError(f"the MUVERA FDE has {dims} dims, above Elasticsearch's dense_vector limit of "
                                  f"{ES_MAX_DIMS}: lower index.muvera reps, k_sim or d_proj, or set final_dim")

    def _new_encoder(self, dim: int) -> MuveraFirstStage | None:
        """The MUVERA encoder a build over ``dim``-dimensional vectors uses (None: not muvera)."""
        if self._built_stage != "muvera":
            return None
        self._check_fde_dims(muvera_dims(dim, self.first_stage_params))
        enc = make_first_stage("muvera", dim, self.first_stage_params)
        assert isinstance(enc, MuveraFirstStage)
        return enc

    def _stage_record(self, enc: MuveraFirstStage | None) -> dict[str, Any]:
        """The manifest's ``first_stage`` (before the page count is known; :meth:`build` adds ``auto``'s)."""
        stage = self._built_stage
        rec: dict[str, Any] = {"name": stage, "params": {}}
        if stage != "none":
            field, sim = FIRST_STAGE_FIELDS[stage]
            rec.update(field=field, similarity=sim, index_options=self.knn_index_options)
        if enc is not None:
            rec.update(params=enc.params(), dims=enc.dims, fingerprint=enc.fingerprint())
        return rec

    def query_encoder(self, number: int, record: dict[str, Any], dim: int) -> FirstStage:
        """The first-stage query encoder of version ``number`` from its recorded ``first_stage``: the MUVERA
        matrices drawn again from the recorded params and seed must hash to the recorded fingerprint."""
        key = f"{self.index_name(number)}:{record.get('name')}"
        if key in self._encoders:
            return self._encoders[key]
        if record.get("name") != "muvera":
            enc = make_first_stage("mean", dim)
        else:
            params = {k: v for k, v in record["params"].items() if k not in ("dim", "dims")}
            enc = make_first_stage("muvera", dim, params)
            assert isinstance(enc, MuveraFirstStage)
            if enc.fingerprint() != record.get("fingerprint"):
                raise FirstStageMismatchError(
                    f"{self.index_name(number)} was built with MUVERA FDEs whose random matrices (seed "
                    f"{params.get('seed')}, sha256 {str(record.get('fingerprint'))[:12]}) differ from the ones drawn "
                    f"here from the same seed and params (sha256 {enc.fingerprint()[:12]}; a different numpy?): "
                    "query FDEs would not match the stored ones. Rebuild the index here "
                    "(`anchorprune index build --force`) or search with the numpy that built it")
        assert enc is not None
        self._encoders[key] = enc
        return enc

    # ------------------------------------------------------------ names and versions
    def index_name(self, number: int) -> str:
        return f"{self.name}-v{number}"

    @property
    def lock_index(self) -> str:
        return f"{self.name}-lock"

    def _checkpoint(self, step: str) -> None:
        """Called as each build step starts; a no-op (tests patch it to inject failures)."""

    def server(self) -> ServerInfo:
        """Version and licence of the server, read once (``GET /``, ``GET /_license``); checks the client fits."""
        if self._server is not None:
            return self._server
        from elasticsearch import ApiError

        try:
            number = str(dict(self.client.info())["version"]["number"])
        except ApiError as exc:
            if _error_type(exc.body) != "media_type_header_exception":
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

    def _all_versions(self) -> dict[int, dict[str, Any]]:
        """``{N: manifest}`` of every ``<alias>-v<N>`` index (complete or not)."""
        resp = self.client.indices.get(index=f"{self.name}-v*", allow_no_indices=True, ignore_unavailable=True)
        pat = re.compile(rf"^{re.escape(self.name)}-v(\d+)$")
        out = {}
        for iname, body in dict(resp).items():
            m = pat.match(iname)
            if m:
                out[int(m.group(1))] = (body.get("mappings", {}).get("_meta", {}) or {}).get(META_KEY, {})
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
        m = re.match(rf"^{re.escape(self.name)}-v(\d+)$", names[0])
        if not m:
            raise CorruptVersionError(f"alias {self.name!r} points at {names[0]!r}, not a '{self.name}-v<N>' index")
        return int(m.group(1))

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

    def current(self) -> IndexVersion | None:
        n = self._serving_number()
        return None if n is None else self._info(n)

    def versions(self) -> list[IndexVersion]:
        return [self._info(n) for n in self._numbers()]

    def stats(self) -> IndexStats:
        cur = self.current()
        m = cur.manifest if cur else {}
        return IndexStats(name=self.name, backend=self.backend, dtype=m.get("dtype", self.dtype), dim=m.get("dim"),
                          current=cur, versions=tuple(self._numbers()), two_stage=self.two_stage)

    def existing_hashes(self) -> dict[str, str]:
        from elasticsearch import helpers

        n = self._serving_number()
        if n is None:
            return {}
        return {hit["_id"]: hit["_source"]["content_hash"] for hit in helpers.scan(
            self.client, index=self.index_name(n), query={"query": {"match_all": {}}},
            source_includes=["content_hash"], size=1000)}

    # ------------------------------------------------------------ licence and lock
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
            raise self.life._conflict(number, expected, self._serving_number()) from None
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

    @contextlib.contextmanager
    def rebuild(self, wait: bool = False) -> Iterator[int | None]:
        """Hold the build lock for a whole rebuild; yields the version it starts from (for ``swap(expected=)``)."""
        with self.life.locked(wait=wait):
            yield self._serving_number()

    def _step(self, name: str) -> None:
        self.life.renew()
        self._checkpoint(name)

    def damaged_pages(self, page_ids: Iterable[str]) -> list[str]:
        """Always empty: Elasticsearch checksums its own segment files (and refuses to open damaged ones)."""
        return []

    def verify(self, version: IndexVersion | int) -> IndexVersion:
        n = version_number(version)
        self.check_version(n, full=True)
        return self._info(n)

    def health(self, full: bool = False) -> list[VersionHealth]:
        return self.life.health(full)

    def unlock(self, force: bool = False) -> str:
        return self.life.unlock(force)

    # ------------------------------------------------------------ build
    def build(self, pages: Iterable[PrunedPage], meta: dict[str, Any], reuse: Iterable[str] = ()) -> IndexVersion:
        """Create, fill, verify and complete ``<alias>-v<N>`` (the alias does not move; see :meth:`swap`)."""
        self._checkpoint("validate")
        meta = check_meta(meta)
        reuse = list(reuse)
        if len(set(reuse)) != len(reuse):
            raise IndexInputError("reuse names a page twice")
        serving = self._serving_number()
        dim: int | None = None
        reused_norm = 0.0
        recompute = False
        if reuse:
            if serving is None:
                raise IndexInputError(f"reuse names {len(reuse)} pages but alias {self.name!r} serves no version "
                                      "to copy them from; pass every page in `pages` instead")
            sman = self._manifest(serving)
            dim = int(sman["dim"])
            reused_norm = float(sman.get("page_norm_max", 1.0))
            if sman.get("dtype") != self.dtype:
                raise IndexInputError(f"the serving version stores {sman.get('dtype')} vectors and this build "
                                      f"{self.dtype}: re-send every page (reuse=())")
            # _reindex copies the reused pages' first-stage vectors as they are: they must be this build's,
            # else the reused pages are read back and sent again with FDEs computed here
            have = {k: v for k, v in (sman.get("first_stage") or {"name": "mean"}).items()
                    if k in ("name", "params", "fingerprint")}
            want = {k: v for k, v in self._stage_record(self._new_encoder(dim)).items()
                    if k in ("name", "params", "fingerprint")}
            # ... and a source without this build's nested tokens (or with fields this build's strict mapping
            # lacks: fde, tokens) is re-sent too, with exactly this build's first-stage fields
            recompute = (want["name"] == "muvera" and have != want) or _stage_field(have) != _stage_field(want)
            if recompute:
                log.info("alias %s: the serving v%d has first stage %r %s, this build %r %s: the %d reused "
                         "pages are read back and re-sent with this build's first-stage vectors (not copied "
                         "server-side)", self.name, serving, have.get("name"), have.get("params") or "",
                         want["name"], want["params"], len(reuse))
            known = self.existing_hashes()
            missing = [r for r in reuse if r not in known]
            if missing:
                raise IndexInputError(f"reuse names pages not in the serving version v{serving}: {missing[:5]}; "
                                      "encode them and pass them in `pages`")
        if isinstance(pages, Sequence):
            dim = validate_pages(pages, dim)
            clash = {p.page_id for p in pages} & set(reuse)
            if clash:
                raise IndexInputError(f"pages {sorted(clash)[:5]} are both given and named in reuse; pass each once")
            if not pages and not reuse:
                raise IndexInputError("build() got no pages and nothing to reuse: an index needs at least one page")
        if dim is not None:
            quantize.check_dim(self.dtype, dim)

        self._checkpoint("license")
        self.check_license()
        self._checkpoint("lock")
        held = contextlib.ExitStack()
        held.enter_context(self.life.locked())         # re-entrant: a rebuild() around us already holds it
        iname = None
        created = False
        try:
            versions = self._all_versions()
            number = max(versions, default=0) + 1
            iname = self.index_name(number)
            element = self.element_type()
            if element != quantize.ES_ELEMENT_TYPES[self.dtype]:
                log.warning("%s is Elasticsearch %s, which has no rank_vectors element_type %s (9.3+): storing "
                            "dtype %s as %s", self.where, self.server().number, quantize.ES_ELEMENT_TYPES[self.dtype],
                            self.dtype, element)
            self._step("create")
            new_pages, stream = self._stream(pages, dim, set(reuse))
            first = next(stream, None)
            if dim is None and first is None and not reuse:
                raise IndexInputError("build() got no pages and nothing to reuse: an index needs at least one page")
            dim = dim if dim is not None else int(first[2].shape[1])        # type: ignore[index]
            quantize.check_dim(self.dtype, dim)
            encoder = self._new_encoder(dim)           # refuses an FDE above 4,096 dims before anything exists
            manifest = {"format": FORMAT, "backend": self.backend, "name": self.name, "version": number,
                        "dtype": self.dtype, "element_type": element, "server_version": self.server().number,
                        "first_stage": self._stage_record(encoder), "meta": meta, "complete": False,
                        "started_at": now_iso()}
            tokens = self._built_stage == "token_ivf"
            self._create(iname, dim, manifest, element, None if encoder is None else encoder.dims, tokens)
            created = True
            self._step("reuse")
            if reuse and recompute:
                self._resend_reused(self.index_name(serving), iname, reuse, encoder, element, dim,  # type: ignore[arg-type]
                                    tokens)
            elif reuse:
                self._copy_reused(self.index_name(serving), iname, reuse)    # type: ignore[arg-type]
            self._step("bulk")
            sent, vectors_sent = self._bulk(iname, first, stream, encoder, element, tokens)
            self._step("settings")
            self.client.indices.put_settings(index=iname, settings={
                "index": {"refresh_interval": None, "number_of_replicas": self.replicas}})
            self.client.indices.refresh(index=iname)
            self._step("count")
            want = sent + len(reuse)
            got = int(dict(self.client.count(index=iname))["count"])
            if got != want:
                raise CorruptVersionError(f"{iname} holds {got} documents after the build, expected {want}")
            vectors_total = vectors_sent + self._reused_vectors(iname, reuse)
            self._step("verify")
            self._smoke_search(iname, dim, _norm_bound(max(new_pages[1], reused_norm), element))
            self._step("publish")
            manifest = {**manifest, "complete": True, "created_at": now_iso(), "dim": dim, "pages": want,
                             "vectors": vectors_total, "new_pages": new_pages[0], "reused_pages": len(reuse),
                             "reused_from": serving if reuse else None,
                             "bytes_per_vector": ELEMENT_BYTES[element] * dim,
                             "page_norm_max": max(new_pages[1], reused_norm),
                             "first_stage": {**manifest["first_stage"], **stage_record(
                                 self.first_stage, self.first_stage_threshold, self.first_stage_auto, want)}}
            self.client.indices.put_mapping(index=iname, meta={META_KEY: manifest})
        except BaseException:
            if created:
                with contextlib.suppress(Exception):
                    self.client.indices.delete(index=iname, ignore_unavailable=True)
            raise
        finally:
            held.close()
        info = self._info(number)
        log.info("alias %s: built %s (%d pages, %d vectors); not serving until swap()", self.name, iname,
                 info.pages, info.vectors)
        return info

    def _stream(self, pages: Iterable[PrunedPage], dim: int | None,
                reuse: set[str]) -> tuple[list[Any], Iterator[tuple[str, str, np.ndarray]]]:
        """Validated ``(page_id, hash, [k, d] float32)`` per page; ``counter[0]`` counts them as they pass."""
        counter = [0, 0.0]       # pages, largest vector norm

        def gen() -> Iterator[tuple[str, str, np.ndarray]]:
            nonlocal dim
            seen: set[str] = set()
            for i, page in enumerate(pages):
                v = page_matrix(page, dim, where=f" (input item {i})")
                dim = v.shape[1] if dim is None else dim
                if page.page_id in seen or page.page_id in reuse:
                    raise IndexInputError(f"page id {page.page_id!r} is given twice (input item {i})")
                seen.add(page.page_id)
                counter[0] += 1
                counter[1] = max(counter[1], float(np.linalg.norm(v, axis=1).max()))
                yield page.page_id, page.content_hash, v

        return counter, gen()

    def _create(self, iname: str, dim: int, manifest: dict[str, Any], element: str,
                fde_dims: int | None = None, tokens: bool = False) -> None:
        from elasticsearch import ApiError

        try:
            self.client.indices.create(index=iname, settings=build_settings(),
                                       mappings=mapping(dim, self.dtype, manifest, element, fde_dims,
                                                        self.knn_index_options, tokens))
        except ApiError as exc:
            text = str(exc).lower()
            if _is_license_refusal(exc.meta.status, exc.body) or "license" in text:
                raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors")) from exc
            if "rank_vectors" in text and ("no handler" in text or "unknown" in text):
                raise IndexStoreError(f"{self.where} does not know the rank_vectors field type: it needs "
                                      "Elasticsearch 8.18 or later (9.x recommended), with bfloat16 for dtype "
                                      "float16 on the newest 9.x; or use the local backend") from exc
            raise

    def _copy_reused(self, source: str, dest: str, reuse: list[str]) -> None:
        for a in range(0, len(reuse), _REINDEX_BATCH):
            ids = reuse[a:a + _REINDEX_BATCH]
            resp = dict(self.client.reindex(source={"index": source, "query": {"ids": {"values": ids}}},
                                            dest={"index": dest, "op_type": "create"}, refresh=False,
                                            wait_for_completion=True))
            if any(_is_license_refusal(f.get("status"), f.get("cause")) for f in resp.get("failures", [])):
                raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors"))
            if resp.get("failures") or int(resp.get("created", 0)) != len(ids):
                raise CorruptVersionError(f"_reindex copied {resp.get('created')} of {len(ids)} unchanged pages "
                                          f"from {source} to {dest}; failures: {resp.get('failures', [])[:3]}")

    def _reused_vectors(self, iname: str, reuse: list[str]) -> int:
        if not reuse:
            return 0
        return int(self._serving_vector_count(iname, reuse))

    def _serving_vector_count(self, iname: str, ids: list[str]) -> float:
        total = 0.0
        for a in range(0, len(ids), _REINDEX_BATCH):
            resp = dict(self.client.search(index=iname, size=0, query={"ids": {"values": ids[a:a + _REINDEX_BATCH]}},
                                           aggs={"n": {"sum": {"field": "n_vectors"}}}))
            total += float(resp["aggregations"]["n"]["value"])
        return total

    def _resend_reused(self, source: str, dest: str, reuse: list[str], encoder: MuveraFirstStage | None,
                       element: str, dim: int, tokens: bool = False) -> None:
        """Copy reused pages through the client with this build's first-stage fields (``_reindex`` cannot
        compute them): the source's ``fde`` / ``tokens`` are dropped, the FDE (``encoder``) and the nested
        token vectors (``tokens``) of the stored page vectors added. The rest of each source is kept as stored."""
        from elasticsearch import helpers

        stored_as = _STORED_AS[element]

        def actions() -> Iterator[dict[str, Any]]:
            for a in range(0, len(reuse), _REINDEX_BATCH):
                for hit in helpers.scan(self.client, index=source, size=_REINDEX_BATCH, query={
                        "query": {"ids": {"values": reuse[a:a + _REINDEX_BATCH]}},
                        "_source": source_with_vectors(self.server().version)}):
                    src = dict(hit["_source"])
                    rows = src[VECTORS_FIELD]
                    if stored_as == "bits":     # hex strings as sent, or signed ints rehydrated from doc values
                        raw = np.stack([np.frombuffer(bytes.fromhex(r), np.uint8) if isinstance(r, str)
                                        else np.asarray(r, np.int64).astype(np.uint8) for r in rows])
                        v = quantize.decode(raw, "bits", dim)
                    else:
                        v = np.asarray(rows, np.float32)
                    src.pop(FDE_FIELD, None)
                    src.pop(TOKENS_FIELD, None)
                    if encoder is not None:
                        src[FDE_FIELD] = _stored_fde(encoder, v, stored_as).tolist()
                    if tokens:
                        src[TOKENS_FIELD] = page_document(hit["_id"], "", v, "float32",
                                                          tokens=_stored_tokens(v, stored_as, hit["_id"]))[TOKENS_FIELD]
                    yield {"_op_type": "create", "_index": dest, "_id": hit["_id"], "_source": src}

        sent = self._send(dest, actions(), f"re-send {dest}")
        if sent != len(reuse):
            raise CorruptVersionError(f"re-sent {sent} of {len(reuse)} unchanged pages from {source} to {dest}")

    def _bulk(self, iname: str, first: tuple[str, str, np.ndarray] | None,
              rest: Iterator[tuple[str, str, np.ndarray]], encoder: MuveraFirstStage | None = None,
              element: str = "float", tokens: bool = False) -> tuple[int, int]:
        vectors = [0]
        stored_as = _STORED_AS[element]

        def actions() -> Iterator[dict[str, Any]]:
            if first is None:
                return
            for pid, chash, v in _chain(first, rest):
                vectors[0] += int(v.shape[0])
                fde = None if encoder is None else _stored_fde(encoder, v, stored_as)
                tok = _stored_tokens(v, stored_as, pid) if tokens else None
                yield {"_op_type": "create", "_index": iname, "_id": pid,
                       "_source": page_document(pid, chash, v, self.dtype, fde, tok)}

        return self._send(iname, actions(), f"bulk {iname}"), vectors[0]

    def _send(self, iname: str, actions: Iterator[dict[str, Any]], desc: str) -> int:
        """``streaming_bulk`` the actions (consumed lazily, chunk by chunk); the number indexed."""
        from elasticsearch import helpers
        from tqdm.auto import tqdm

        sent = 0
        for ok, item in tqdm(helpers.streaming_bulk(
                self.client, actions, chunk_size=self.chunk_pages, max_chunk_bytes=self.max_chunk_bytes,
                # raise_on_error=False: with True the helper raises on a per-document 429 before it can
                # retry it; failures that survive the retries come back as ok=False and abort the build here
                max_retries=self.max_retries, initial_backoff=1, max_backoff=60, raise_on_error=False,
                raise_on_exception=True, refresh=False), desc=desc, unit="page", disable=None):
            if not ok:
                (res,) = item.values()
                if _is_license_refusal(res.get("status"), res.get("error")):
                    raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors"))
                raise CorruptVersionError(f"bulk indexing into {iname} failed: {item}")
            sent += 1
        return sent

    def _smoke_search(self, iname: str, dim: int, page_norm: float) -> None:
        resp = dict(self.client.search(index=iname, size=1, source=False, query={"match_all": {}}))
        hits = resp["hits"]["hits"]
        if not hits:
            raise CorruptVersionError(f"{iname} returned no documents in the smoke search")
        body = self._query_body(torch.zeros(1, dim) + 1.0 / np.sqrt(dim), 1, exact=True, page_norm=page_norm)
        out = dict(self.client.search(index=iname, **body))
        if not out["hits"]["hits"]:
            raise CorruptVersionError(f"{iname}: the MaxSim smoke search returned no hit")

    # ------------------------------------------------------------ serving (decided in lifecycle.py)
    def swap(self, version: IndexVersion | int, expected: Any = ANY) -> None:
        """Point the alias at ``<alias>-v<N>`` in ONE ``update_aliases`` call (remove old + add new); with
        ``expected``, only if the alias still names that version (else :class:`SwapConflictError`)."""
        self.life.swap(version_number(version), expected)

    def previous(self) -> IndexVersion | None:
        n = self.life.rollback_target()
        return None if n is None else self._info(n)

    def rollback(self) -> IndexVersion:
        return self._info(self.life.rollback())

    def delete_version(self, version: IndexVersion | int) -> None:
        self.life.delete(version_number(version))

    def prune_versions(self, keep: int = 2) -> list[int]:
        return self.life.prune(keep)

    def drop_all(self) -> None:
        """Delete every version and the lock index of this alias (tests, teardown)."""
        for n in self._all_versions():
            self.client.indices.delete(index=self.index_name(n), ignore_unavailable=True)
        self.client.indices.delete(index=self.lock_index, ignore_unavailable=True)

    # ------------------------------------------------------------ search
    def _query_body(self, q: torch.Tensor, k: int, exact: bool, dtype: str | None = None,
                    page_norm: float = 1.0, encoder: FirstStage | None = None,
                    stage: str | None = None) -> dict[str, Any]:
        dtype = dtype or self.dtype
        script, _ = maxsim_script(q, dtype, self.hamming, page_norm)
        score = {"script_score": {"query": {"match_all": {}}, "script": script}}
        if exact:
            return {"size": k, "source": False, "query": score}
        c = max(self.candidates, k)          # window_size >= size (CompoundRetrieverBuilder.validate)
        if stage == "token_ivf":
            first: dict[str, Any] = {"standard": {"query": token_query(q, c)}}
        else:
            field, qvec = MEAN_FIELD, normalized_mean(q.numpy())
            if encoder is not None:
                field, qvec = FIRST_STAGE_FIELDS[encoder.name][0], encoder.encode_query(q.numpy())
            first = {"knn": {"field": field, "query_vector": np.asarray(qvec, np.float32).tolist(),
                             "k": c, "num_candidates": num_candidates(c)}}
        return {"size": k, "source": False, "retriever": {"rescorer": {
            "retriever": first,
            "rescore": {"window_size": c, "query": {"rescore_query": score, "query_weight": 0.0,
                                                    "rescore_query_weight": 1.0}}}}}

    def _score_back(self, es_score: float, q: torch.Tensor, dtype: str, dim: int, page_norm: float) -> float:
        _, offset = maxsim_script(q, dtype, self.hamming, page_norm)
        s = es_score - offset
        if dtype == "bits" and not self.hamming:
            s = (2.0 * s - float(q.sum())) / float(np.sqrt(dim))
        return s

    def search(self, query_vectors: torch.Tensor, k: int = 10) -> list[Hit]:
        return self.search_many([query_vectors], k)[0]

    def search_many(self, queries: Sequence[torch.Tensor], k: int = 10) -> list[list[Hit]]:
        """Top-``k`` pages per query; one ``msearch`` request for all queries."""
        return self.search_report(queries, k)[0]

    def search_report(self, queries: Sequence[torch.Tensor], k: int = 10) -> tuple[list[list[Hit]], SearchReport]:
        """Like :meth:`search_many`, plus which first stage answered (and how many pages it handed on)."""
        if k < 1:
            raise IndexInputError(f"k must be >= 1, got {k}")
        n = self._serving_number()
        if n is None:
            raise NoServingVersionError(f"alias {self.name!r} has no serving version yet: run `anchorprune index "
                                        "build` (or build() then swap())")
        man = self._manifest(n)
        dim, dtype, pages = int(man["dim"]), man["dtype"], int(man["pages"])
        norm = _norm_bound(float(man.get("page_norm_max", 1.0)), man.get("element_type", "float"))
        qs = [query_matrix(q, dim, i) for i, q in enumerate(queries)]
        stage = auto_stage(self.first_stage, pages, self.first_stage_threshold, self.first_stage_auto)
        # versions built before first stages were recorded all carry mean_vector
        record = man.get("first_stage") or {"name": "mean", "params": {}}
        if stage == "muvera" and record.get("name") != "muvera":
            log.warning("alias %s: first stage 'muvera' asked for, but the serving v%d was built without FDEs; "
                        "using the mean vector (rebuild the index to use MUVERA)", self.name, n)
            stage, record = "mean", {"name": "mean", "params": {}}
        if stage == "token_ivf" and record.get("name") != "token_ivf":
            fallback = "muvera" if record.get("name") == "muvera" else "mean"
            log.warning("alias %s: first stage 'token_ivf' asked for, but the serving v%d was built without "
                        "token vectors (nested %s); using %s (rebuild the index to use token_ivf)", self.name, n,
                        TOKENS_FIELD, "its MUVERA FDEs" if fallback == "muvera" else "the mean vector")
            stage = fallback
            if fallback == "mean":
                record = {"name": "mean", "params": {}}
        exact = stage == "none" or pages <= self.exact_max_pages or pages <= self.candidates
        if not exact and k > KNN_MAX_CANDIDATES:
            raise IndexInputError(f"k={k} is above {KNN_MAX_CANDIDATES}, the most a two-stage (kNN) search can "
                                  "return; ask for fewer hits")
        encoder = None if exact or stage == "token_ivf" else self.query_encoder(n, {**record, "name": stage}, dim)
        used = "none" if exact else stage
        configured = self.first_stage if self.first_stage != used else None
        report = SearchReport(used, pages if exact else max(self.candidates, k), pages, n, configured)
        if not qs:
            return [], report
        iname = self.index_name(n)
        searches: list[dict[str, Any]] = []
        for q in qs:
            body = self._query_body(q, k, exact, dtype, norm, encoder, stage)
            body["_source"] = body.pop("source")
            searches += [{"index": iname}, body]
        resp = dict(self.client.msearch(searches=searches))
        out = []
        for q, r in zip(qs, resp["responses"], strict=True):
            if "error" in r:
                if _is_license_refusal(r.get("status"), r):
                    raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors"))
                raise IndexStoreError(f"search on {iname} failed: {r['error']}")
            hits = [Hit(h["_id"], self._score_back(float(h["_score"]), q, dtype, dim, norm)) for h in r["hits"]["hits"]]
            out.append(sorted(hits, key=lambda h: (-h.score, h.page_id)))     # ties by page id, as the metrics
        return out, report


def _as_stored(v: np.ndarray, stored_as: str) -> np.ndarray:
    """Page vectors ``[k, d]`` as the server stores them (bfloat16-rounded, or signs for bits), decoded to float32."""
    return quantize.decode(quantize.encode(v, stored_as), stored_as, v.shape[1])


def _stored_fde(encoder: MuveraFirstStage, v: np.ndarray, stored_as: str) -> np.ndarray:
    """The FDE of page vectors ``[k, d]`` as the server stores them."""
    return encoder.encode_document(_as_stored(v, stored_as))


def _stored_tokens(v: np.ndarray, stored_as: str, page_id: str = "?") -> np.ndarray:
    """Page vectors ``[k, d]`` as the server stores them (bfloat16-rounded; for bits the decoded
    ``±1/sqrt(d)`` floats), for the nested ``tokens`` field; at most :data:`NESTED_OBJECTS_LIMIT` rows."""
    if v.shape[0] > NESTED_OBJECTS_LIMIT:
        raise IndexInputError(
            f"page {page_id!r} has {v.shape[0]} vectors, above Elasticsearch's index.mapping.nested_objects.limit "
            f"of {NESTED_OBJECTS_LIMIT} nested token objects per document (first stage token_ivf): prune the page "
            "harder, or use index.first_stage muvera / mean")
    return _as_stored(v, stored_as)                                                            # [k, d] float32


def _stage_field(record: dict[str, Any]) -> str | None:
    """The first-stage field a version's documents carry besides ``mean_vector`` (``fde``, ``tokens``, or None)."""
    return {"muvera": FDE_FIELD, "token_ivf": TOKENS_FIELD}.get(str(record.get("name")))


def _norm_bound(page_norm_max: float, element: str) -> float:
    """An upper bound of the stored page-vector norms: float rounding, and bfloat16's 2^-9 relative rounding."""
    return page_norm_max * (1.0 + (2.0 ** -8 if element == "bfloat16" else 1e-3)) + 1e-6


def _chain(first: tuple[str, str, np.ndarray], rest: Iterator[tuple[str, str, np.ndarray]]):
    yield first
    yield from rest
