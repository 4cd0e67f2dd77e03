"""A strict, in-memory Elasticsearch for tests, parametrised by server version (test helper, imported by name).

It replaces ``elastic_transport.Transport.perform_request``, so the real client does everything a
client does (serialises bodies, rewrites ``Accept``/``Content-Type`` to ``compatible-with=<client
major>``, maps error bodies to ``BadRequestError``/``NotFoundError``/..., checks the
``X-Elastic-Product`` header) and the fake answers as a server of ``version`` would: what real
servers refuse, the fake refuses with the same status and error type.

Every rule cites the fact it comes from in `docs/elasticsearch-fidelity.md` as
``[N.x]`` (section N of that note) together with the Elasticsearch source the note names. Scores
are computed from those facts (float32, stored element type rounding, MSB-first bits), never with
the backend's helpers. Where the note marks a fact **[unconfirmed]**, the comment says so and the
fake takes the stricter reading.

Rules enforced (section of the note): [7] compatible-with header vs server major, X-Elastic-Product
on every response; [1] rank_vectors element types per version (bfloat16 from 9.3), dims ranges and
multiples, optional dims set by the first document, value shapes, licence at mapping creation, on
every document and on script access (403 security_exception; active enterprise/trial only),
exclude_source_vectors from 9.2 with exclude_vectors (8.19+) and _reindex rehydration; [2] maxSim
scores in float32 over the stored element type (bfloat16 round-to-even, MSB-first bits, float query
vs bit doc = Σ q_k over set bits), query-vector shape errors, missing field fails the search,
negative script scores refused; [3] dense_vector unit length for dot_product, zero magnitude for
cosine, kNN k / num_candidates bounds and order, knn retriever requires both, (1+cos)/2 and
max_inner_product scores; dense_vector dims in [1, 4096] and index_options (known types per version,
bbq_disk from 9.2, quantised types float-only, bbq >= 64 dims; DenseVectorFieldMapper), the version's
default index_options when the mapping has none, and scalar-quantised (int8 / int4) kNN scores
computed on quantised vectors (bbq scores are refused, not invented);
[3b] (not in the note; sources cited where used) nested mappings and documents (one hidden document per
object, index.mapping.nested_objects.limit 10000, strict inherited, nested vectors excluded from _source
on 9.2+ and rehydrated, PR #130382), the ``nested`` query (score_modes per NestedQueryBuilder; around a
``knn`` query every mode but none scores the best child, issue #122625, docs PR #125582), the ``knn``
query in the query DSL (k from PR #110233; bounds as 190_knn_query-with-k-param.yml: 400
x_content_parse_exception) diversified over parents for nested fields (query-dsl-knn-query.md), and
``bool.should`` summing clause scores (bool-query.md), the ``standard`` retriever under ``rescorer``;
[4] rescorer window_size >= size, no negative window, no empty rescore, no scroll; [5] alias removal
404 / partial success with action_results / must_exist; [6] bulk item errors, 409 on create;
optimistic concurrency (if_seq_no / if_primary_term); [8] refresh visibility (GET real-time),
scroll snapshot paged; [9] index exists / missing index errors; [10] request options: unknown ones
are the server's 400, known but unmodelled ones raise ``NotModelled`` (never ignored); kNN filter
and similarity, retriever filters, per-item bulk if_seq_no, partial updates keeping vectors, nested
children without the vector, the rescorer's total, the 8192-vector cap of rank_vectors.

Deliberate test knobs (not server behaviour): ``scroll_page`` caps scroll pages so that paging is
exercised with few documents; ``refresh=wait_for`` on an index whose ``refresh_interval`` is ``-1``
raises ``AssertionError`` (a real server would hang [8]).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import numpy as np
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig

#: the server versions the contract suite runs against (at least 8.18, 9.0, 9.2 and 9.3+)
VERSIONS = ("8.18.0", "9.0.0", "9.2.0", "9.3.0")

KNN_MAX_CANDIDATES = 10_000              # [3] KnnSearchBuilder: "[num_candidates] cannot exceed [10000]"
MAX_DIMS = 4096                          # [1] rank_vectors float/byte/bfloat16 dims in [1, 4096]; dense_vector the
                                         # same (DenseVectorFieldMapper.MAX_DIMS_COUNT = 4096; its tests expect "The
                                         # number of dimensions should be in the range [1, 4096] but was [5000]")
#: dense_vector index_options types (DenseVectorFieldMapper.VectorIndexType; spec DenseVectorIndexOptionsType).
#: hnsw 8.0, int8_hnsw 8.12, flat / int8_flat 8.13, int4_* 8.15, bbq_* 8.16 (PR #114439 behind a flag, GA by
#: 8.18): every one exists on the oldest server we support (8.18); bbq_disk only from 9.2 (spec PR #5434,
#: "Adding new bbq_disk index type", cherry-picked Oct 2025; docs-content: "Available in Elasticsearch 9.2+")
INDEX_OPTION_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat")
BBQ_DISK_SINCE = (9, 2, 0)
BBQ_MIN_DIMS = 64                        # DenseVectorFieldMapper.BBQ_MIN_DIMS
MAX_DIMS_BIT = 4096 * 8                  # [1] MAX_DIMS_COUNT_BIT
DOT_PRODUCT_TOLERANCE = 1e-3             # [3] |‖v‖² − 1| > 1e-3 is refused (1e-4 before PR #110240, ~8.15)
RANK_VECTORS_LICENCES = ("enterprise", "trial")
RANK_VECTORS_MAX_VECTORS = 8192          # [10] at most 8192 vectors per rank_vectors document and max-sim query
NESTED_OBJECTS_LIMIT = 10_000            # [3b] index.mapping.nested_objects.limit default (MapperService)   # [1] LicensedFeature.momentary(..., ENTERPRISE); trial works


def parse_version(v: str) -> tuple[int, int, int]:
    parts = [int(x) for x in re.findall(r"\d+", v)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))          # type: ignore[return-value]


class EsError(Exception):
    """An error response: HTTP ``status`` and the ``error`` object of the body."""

    def __init__(self, status: int, type_: str, reason: str, caused_by: dict[str, Any] | None = None,
                 **extra: Any):
        super().__init__(f"{status} {type_}: {reason}")
        self.status = status
        self.error: dict[str, Any] = {"root_cause": [{"type": type_, "reason": reason}], "type": type_,
                                      "reason": reason, **extra}
        if caused_by:
            self.error["caused_by"] = caused_by
            self.error["root_cause"] = [caused_by]

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "status": self.status}


class NotModelled(NotImplementedError):
    """A request option a real server accepts but the fake does not model: refused, never silently ignored [10]."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the fake Elasticsearch does not model {what}; a real server would apply it, so the fake "
                         "refuses it instead of ignoring it (docs/elasticsearch-fidelity.md [10])")


def _check_keys(where: str, spec: dict[str, Any], modelled: set[str], known: set[str],
                unknown_error: Any = None) -> None:
    """[10] keys of ``spec`` the real server does not know: its 400; known but not modelled: :class:`NotModelled`."""
    for key in spec:
        if key in modelled:
            continue
        if key in known:
            raise NotModelled(f"[{where}] option [{key}]")
        raise (unknown_error(key) if unknown_error else
               _bad(f"[{where}] unknown field [{key}]", "x_content_parse_exception"))


def _bad(reason: str, type_: str = "illegal_argument_exception") -> EsError:
    return EsError(400, type_, reason)


def _licence_error() -> EsError:
    # [1] LicenseUtils.newComplianceException("Rank Vectors"): 403 security_exception, header license.expired.feature
    return EsError(403, "security_exception", "current license is non-compliant for [Rank Vectors]",
                   **{"license.expired.feature": ["Rank Vectors"]})


def _index_not_found(name: str) -> EsError:
    # [9] IndexNotFoundException: 404, resource.type index_or_alias, index_uuid "_na_"
    return EsError(404, "index_not_found_exception", f"no such index [{name}]", **{
        "resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


def _search_phase(index: str, reason: dict[str, Any]) -> EsError:
    # [2] a script failure is a 400 search_phase_execution_exception; failed_shards[].reason carries the cause
    err = EsError(400, "search_phase_execution_exception", "all shards failed", phase="query", grouped=True,
                  failed_shards=[{"shard": 0, "index": index, "node": "fake", "reason": reason}])
    err.error["root_cause"] = [reason.get("caused_by", reason)]
    return err


def _script_error(index: str, reason: str) -> EsError:
    return _search_phase(index, {"type": "script_exception", "reason": "runtime error",
                                 "caused_by": {"type": "illegal_argument_exception", "reason": reason}})


def f32(x: float) -> float:
    """A float32 value as a JSON reader sees it (Elasticsearch prints floats, shortest repr)."""
    return float(str(np.float32(x)))


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, rounding to nearest even ([2] BFloat16.floatToBFloat16)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def _bits_msb_first(row: np.ndarray) -> np.ndarray:
    """Bytes -> bits, most significant bit first ([2] MSB-first: ``[0b10000000]`` selects ``q[0]``)."""
    return np.unpackbits(np.asarray(row, dtype=np.int8).view(np.uint8))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) or (isinstance(x, float) and x.is_integer())


@dataclass
class Call:
    endpoint: str
    method: str
    path: str
    params: dict[str, Any]
    body: Any
    headers: dict[str, str]


@dataclass
class Doc:
    source: dict[str, Any]                  # the stored _source (vectors removed when excluded [1])
    vectors: dict[str, np.ndarray]           # field -> parsed vectors (float32 / bf16-rounded / int8 bytes)
    seq_no: int
    primary_term: int = 1
    version: int = 1
    #: "<nested>.<sub>" -> the positions of the children that hold the vector (the rows of vectors[key], in order)
    children: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Index:
    name: str
    uuid: str
    mappings: dict[str, Any]
    settings: dict[str, Any]
    created_version: tuple[int, int, int]
    docs: dict[str, Doc] = field(default_factory=dict)          # live (GET by id is real-time [8])
    visible: dict[str, Doc] = field(default_factory=dict)       # what search sees: the last refresh [8]
    knn_types: dict[str, str] = field(default_factory=dict)     # dense_vector field -> index_options type in force

    @property
    def exclude_source_vectors(self) -> bool:
        # [1] index.mapping.exclude_source_vectors defaults to true for indices created on 9.2+;
        # only settable at creation; ignored with synthetic _source
        value = self.settings.get("index.mapping.exclude_source_vectors")
        if value is None:
            return self.created_version >= (9, 2, 0)
        return str(value).lower() == "true"


@dataclass
class FakeES:
    version: str = "9.3.0"
    license_type: str = "trial"
    license_status: str = "active"
    scroll_page: int = 3                     # test knob: at most this many hits per scroll page
    indices: dict[str, Index] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    scrolls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seq: int = 0

    @property
    def v(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    # ------------------------------------------------------------ transport
    def transport_perform_request(self, method: str, target: str, *, headers: Any = None, body: Any = None,
                                  **_: Any) -> tuple[ApiResponseMeta, Any]:
        """Stands in for ``elastic_transport.Transport.perform_request``: returns ``(meta, body)``."""
        path, _, query = target.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        hdrs = {k.lower(): v for k, v in dict(headers or {}).items()}
        if isinstance(body, bytes | str) and body:
            body = json.loads(body)
        elif isinstance(body, list | tuple):
            body = [json.loads(x) if isinstance(x, bytes | str) else x for x in body]
        body = copy.deepcopy(body)           # what went over the wire, not a live reference
        endpoint, handler, parts = self._route(method, path)
        self.calls.append(Call(endpoint, method, path, params, body, hdrs))
        try:
            self._check_compat(hdrs, body is not None)
            if handler is None:
                raise AssertionError(f"the fake Elasticsearch has no handler for {method} {path}")
            status, out = handler(parts, params, body)
        except EsError as exc:
            status, out = exc.status, exc.body()
        return self._meta(status), out

    def _meta(self, status: int) -> ApiResponseMeta:
        # [7] every response carries X-Elastic-Product: Elasticsearch; without it the client raises
        # UnsupportedProductError on a 2xx
        major = self.v[0]
        return ApiResponseMeta(status=status, http_version="1.1", duration=0.0,
                               node=NodeConfig("http", "localhost", 9200),
                               headers=HttpHeaders({"x-elastic-product": "Elasticsearch", "content-type":
                                                    f"application/vnd.elasticsearch+json;compatible-with={major}"}))

    def _check_compat(self, headers: dict[str, str], has_body: bool) -> None:
        # [7] the client sends compatible-with=<client major>; a server of major M accepts M or M-1
        # (RestCompatibleVersionHelper: "Accept version must be either version 8 or 7, but found 9"),
        # else 400 media_type_header_exception with a status_exception cause
        major = self.v[0]
        bad = []
        for name in ("accept", "content-type") if has_body else ("accept",):
            m = re.search(r"compatible-with=(\d+)", headers.get(name, ""))
            if m and int(m.group(1)) not in (major, major - 1):
                bad.append((name, int(m.group(1))))
        if bad:
            found = bad[0][1]
            raise EsError(400, "media_type_header_exception", "Invalid media-type value on headers [Accept, Content-Type]",
                          caused_by={"type": "status_exception", "reason": (
                              f"Accept version must be either version {major} or {major - 1}, but found {found}. "
                              f"Accept={headers.get('accept')}")})

    _ROUTES: tuple[tuple[str, str, str], ...] = (
        ("GET", r"/", "info"),
        ("GET", r"/_license", "license.get"),
        ("POST", r"/_aliases", "indices.update_aliases"),
        ("GET", r"/_alias/(?P<name>[^/]+)", "indices.get_alias"),
        ("POST", r"/_reindex", "reindex"),
        ("POST|PUT", r"/_bulk", "bulk"),
        ("POST|PUT", r"/(?P<index>[^/_][^/]*)/_bulk", "bulk"),
        ("POST|GET", r"/_msearch", "msearch"),
        ("POST|GET", r"/_search/scroll", "scroll"),
        ("DELETE", r"/_search/scroll", "clear_scroll"),
        ("POST|GET", r"/(?P<index>[^/_][^/]*)/_search", "search"),
        ("POST|GET", r"/(?P<index>[^/_][^/]*)/_count", "count"),
        ("POST|GET", r"/(?P<index>[^/_][^/]*)/_refresh", "indices.refresh"),
        ("GET", r"/(?P<index>[^/_][^/]*)/_mapping", "indices.get_mapping"),
        ("PUT|POST", r"/(?P<index>[^/_][^/]*)/_mapping", "indices.put_mapping"),
        ("PUT", r"/(?P<index>[^/_][^/]*)/_settings", "indices.put_settings"),
        ("GET", r"/(?P<index>[^/_][^/]*)/_stats(/(?P<metric>[^/]+))?", "indices.stats"),
        ("PUT|POST", r"/(?P<index>[^/_][^/]*)/_doc/(?P<id>[^/]+)", "index"),
        ("PUT|POST", r"/(?P<index>[^/_][^/]*)/_create/(?P<id>[^/]+)", "create"),
        ("POST", r"/(?P<index>[^/_][^/]*)/_update/(?P<id>[^/]+)", "update"),
        ("GET", r"/(?P<index>[^/_][^/]*)/_doc/(?P<id>[^/]+)", "get"),
        ("DELETE", r"/(?P<index>[^/_][^/]*)/_doc/(?P<id>[^/]+)", "delete"),
        ("PUT", r"/(?P<index>[^/_][^/]*)", "indices.create"),
        ("GET", r"/(?P<index>[^/_][^/]*)", "indices.get"),
        ("DELETE", r"/(?P<index>[^/_][^/]*)", "indices.delete"),
    )

    def _route(self, method: str, path: str):
        for methods, pattern, endpoint in self._ROUTES:
            m = re.fullmatch(pattern, path)
            if m and method in methods.split("|"):
                parts = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                return endpoint, getattr(self, "h_" + endpoint.replace(".", "_"), None), parts
        return f"? {method} {path}", None, {}

    def of(self, endpoint: str) -> list[Call]:
        return [c for c in self.calls if c.endpoint == endpoint]

    # ------------------------------------------------------------ helpers
    def _licensed(self) -> bool:
        return self.license_type in RANK_VECTORS_LICENCES and self.license_status == "active"

    def _resolve(self, name: str, single_index_op: bool = False) -> Index:
        held = self.aliases.get(name)
        if held:
            if len(held) > 1 and single_index_op:
                raise _bad(f"alias [{name}] has more than one index associated with it [{sorted(held)}], "
                           "can't execute a single index op")
            if len(held) > 1:
                raise AssertionError(f"the fake Elasticsearch does not model reads over several indices ({name})")
            (name,) = held
        if name not in self.indices:
            raise _index_not_found(name)
        return self.indices[name]

    def _resolve_write(self, name: str, auto_create: bool = True) -> Index:
        held = self.aliases.get(name)
        if held:
            if len(held) != 1:
                # [5] several indices, none marked as write index
                raise _bad(f"no write index is defined for alias [{name}]. The write index may be explicitly "
                           "disabled using is_write_index=false or the alias points to multiple indices without "
                           "one being designated as a write index")
            (name,) = held
        if name not in self.indices:
            if not auto_create:
                raise _index_not_found(name)
            # [9] writes auto-create a missing index (dynamic mapping)
            self.indices[name] = Index(name, uuid.uuid4().hex[:22], {"properties": {}}, {}, self.v)
        return self.indices[name]

    @staticmethod
    def _refresh(idx: Index) -> None:
        idx.visible = dict(idx.docs)

    def _after_write(self, idx: Index, params: dict[str, Any]) -> bool:
        # [8] refresh=false (default): invisible to search until a refresh; true refreshes; wait_for waits
        r = str(params.get("refresh", "false")).lower()
        if r in ("true", ""):
            self._refresh(idx)
            return True
        if r == "wait_for":
            if str(idx.settings.get("index.refresh_interval")) == "-1":
                raise AssertionError(f"refresh=wait_for on {idx.name} with refresh_interval -1 would wait "
                                     "indefinitely on a real server (refresh-parameter.md)")
            self._refresh(idx)
        return False

    # ------------------------------------------------------------ cluster
    def h_info(self, parts, params, body):
        major, minor, patch = self.v
        return 200, {"name": "fake-node", "cluster_name": "fake", "cluster_uuid": "fake-uuid",
                     "version": {"number": self.version, "build_flavor": "default",
                                 "minimum_wire_compatibility_version": f"{major - 1}.19.0",
                                 "minimum_index_compatibility_version": f"{major - 1}.0.0"},
                     "tagline": "You Know, for Search"}

    def h_license_get(self, parts, params, body):
        return 200, {"license": {"status": self.license_status, "uid": "fake", "type": self.license_type,
                                 "issued_to": "fake", "issuer": "elasticsearch"}}

    # ------------------------------------------------------------ mappings
    def _check_mapping(self, props: dict[str, Any], path: str = "") -> None:
        for name, spec in props.items():
            full = path + name
            kind = spec.get("type", "object")
            if kind in ("object", "nested"):
                self._check_mapping(spec.get("properties", {}), full + ".")
            elif kind == "rank_vectors":
                self._check_rank_vectors(full, spec)
            elif kind == "dense_vector":
                self._check_dense_vector(full, spec)
            elif kind not in ("keyword", "text", "integer", "long", "float", "double", "boolean", "date"):
                raise _bad(f"No handler for type [{kind}] declared on field [{full}]", "mapper_parsing_exception")

    def _check_rank_vectors(self, name: str, spec: dict[str, Any]) -> None:
        if self.v < (8, 18, 0):
            # [1] rank_vectors first shipped in 8.18.0 (PR #118183 / #118296)
            raise _bad(f"No handler for type [rank_vectors] declared on field [{name}]", "mapper_parsing_exception")
        if not self._licensed():
            # [1] checked in the TypeParser and Builder.build (mapping creation)
            raise _licence_error()
        # [1] element_type: float (default), byte, bit from the start; bfloat16 from 9.3 (PR #139463)
        allowed = ["float", "byte", "bit"] + (["bfloat16"] if self.v >= (9, 3, 0) else [])
        et = spec.get("element_type", "float")
        if et not in allowed:
            raise _bad(f"invalid element_type [{et}]; available types are {allowed}", "mapper_parsing_exception")
        dims = spec.get("dims")
        if dims is not None:
            self._check_dims(name, et, dims)
        extra = set(spec) - {"type", "element_type", "dims", "meta"}
        if extra:
            raise _bad(f"unknown parameter [{sorted(extra)[0]}] on mapper [{name}] of type [rank_vectors]",
                       "mapper_parsing_exception")

    @staticmethod
    def _check_dims(name: str, et: str, dims: Any) -> None:
        if et == "bit":
            # [1] bit: dims in [8, 32768] and a multiple of 8 (the source's message has the typo "for should")
            if not isinstance(dims, int) or not 8 <= dims <= MAX_DIMS_BIT:
                raise _bad(f"The number of dimensions should be in the range [8, {MAX_DIMS_BIT}] but was [{dims}]",
                           "mapper_parsing_exception")
            if dims % 8:
                raise _bad(f"The number of dimensions for should be a multiple of 8 but was [{dims}]",
                           "mapper_parsing_exception")
        elif not isinstance(dims, int) or not 1 <= dims <= MAX_DIMS:
            # [1] float, byte, bfloat16: dims in [1, 4096]
            raise _bad(f"The number of dimensions should be in the range [1, {MAX_DIMS}] but was [{dims}]",
                       "mapper_parsing_exception")

    def _check_dense_vector(self, name: str, spec: dict[str, Any]) -> None:
        et = spec.get("element_type", "float")
        allowed = ["float", "byte", "bit"] + (["bfloat16"] if self.v >= (9, 3, 0) else [])
        if et not in allowed:
            raise _bad(f"invalid element_type [{et}]; available types are {allowed}", "mapper_parsing_exception")
        if spec.get("dims") is not None:
            self._check_dims(name, et, spec["dims"])          # [1, 4096] (MAX_DIMS_COUNT), bit [8, 32768]
        # [3] dense_vector defaults; max_inner_product exists from 8.11, so on every server we model
        sim = spec.get("similarity", "l2_norm" if et == "bit" else "cosine")
        if sim not in ("cosine", "dot_product", "l2_norm", "max_inner_product"):
            raise _bad(f"Unknown value [{sim}] for field [similarity]", "mapper_parsing_exception")
        opts = spec.get("index_options")
        if opts is None:
            return
        if spec.get("index") is False:
            raise _bad(f"Field [index_options] can only be set when [index] is true on field [{name}]",
                       "mapper_parsing_exception")            # not in the note: index_options needs an indexed field
        kind = opts.get("type")
        if kind is None:
            # DenseVectorFieldMapper.parseIndexOptions
            raise _bad("[index_options] requires field [type] to be configured", "mapper_parsing_exception")
        known = INDEX_OPTION_TYPES + (("bbq_disk",) if self.v >= BBQ_DISK_SINCE else ())
        if kind not in known:
            # DenseVectorFieldMapper.parseIndexOptions: VectorIndexType.fromString(type) is empty
            raise _bad(f"Unknown vector index options type [{kind}] for field [{name}]", "mapper_parsing_exception")
        if kind != "hnsw" and kind != "flat" and et != "float":
            # IndexOptions.validateElementType: quantised types take float vectors only
            raise _bad(f"[element_type] cannot be [{et}] when using index type [{kind}]", "mapper_parsing_exception")
        dims = spec.get("dims")
        if kind.startswith("bbq") and dims is not None and dims < BBQ_MIN_DIMS:
            # BBQ*IndexOptions.validateDimension
            raise _bad(f"{kind} does not support dimensions fewer than {BBQ_MIN_DIMS}; provided={dims}",
                       "mapper_parsing_exception")

    @staticmethod
    def field_spec(idx: Index, fname: str) -> dict[str, Any]:
        """The mapping of a field by its full path (``tokens.vector``: ``vector`` under the ``tokens`` object)."""
        spec: dict[str, Any] = {"properties": idx.mappings.get("properties", {})}
        for part in fname.split("."):
            spec = spec.get("properties", {}).get(part, {})
        return spec

    def knn_index_type(self, idx: Index, fname: str) -> str:
        """The ``index_options.type`` a dense_vector field is indexed with: the mapping's, else the version's
        default ([3] dense-vector.md: float int8_hnsw on 8.14-9.0 (PR #106836); 9.1+ bbq_hnsw when dims >= 384,
        else int8_hnsw (PR #129825); 9.4+ bbq_disk "when the license allows" (PR #144885, Enterprise);
        byte and bit plain hnsw (PR #151557))."""
        if fname in idx.knn_types:
            return idx.knn_types[fname]
        spec = self.field_spec(idx, fname)
        if (spec.get("index_options") or {}).get("type"):
            return spec["index_options"]["type"]
        if spec.get("element_type", "float") != "float":
            return "hnsw"
        v = idx.created_version
        if v >= (9, 4, 0) and self._licensed():
            return "bbq_disk"
        if v >= (9, 1, 0) and int(spec.get("dims") or 0) >= 384:
            return "bbq_hnsw"
        return "int8_hnsw"

    # ------------------------------------------------------------ indices
    def h_indices_create(self, parts, params, body):
        name = parts["index"]
        body = body or {}
        if name != name.lower() or name.startswith(("-", "_", "+")):
            raise _bad(f"Invalid index name [{name}], must be lowercase", "invalid_index_name_exception")
        if name in self.indices or name in self.aliases:
            # [9] ResourceAlreadyExistsException: "index [name/uuid] already exists"
            idx = self.indices.get(name)
            raise EsError(400, "resource_already_exists_exception",
                          f"index [{name}/{idx.uuid if idx else '_na_'}] already exists", index=name,
                          index_uuid=idx.uuid if idx else "_na_")
        mappings = copy.deepcopy(body.get("mappings", {}))
        self._check_mapping(mappings.get("properties", {}))
        settings = self._flat_settings(body.get("settings", {}))
        if "index.mapping.exclude_source_vectors" in settings and self.v < (9, 2, 0):
            # [1] [unconfirmed] that the setting exists on 8.x: the stricter reading refuses it before 9.2
            raise _bad("unknown setting [index.mapping.exclude_source_vectors]")
        self.indices[name] = Index(name, uuid.uuid4().hex[:22], mappings, settings, self.v)
        for alias in (body.get("aliases") or {}):
            self.aliases.setdefault(alias, set()).add(name)
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    @staticmethod
    def _flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in settings.items():
            key = prefix + k
            if isinstance(v, dict):
                out.update(FakeES._flat_settings(v, key + "."))
            else:
                out[key if key.startswith("index.") else "index." + key] = v
        return out

    def _names(self, pattern: str, params: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for part in pattern.split(","):
            if "*" in part:
                out += [n for n in self.indices if fnmatch.fnmatch(n, part)]
            elif part in self.indices:
                out.append(part)
            elif part in self.aliases:
                out += sorted(self.aliases[part])
            elif params.get("ignore_unavailable") != "true":
                raise _index_not_found(part)
        return out

    def h_indices_get(self, parts, params, body):
        names = self._names(parts["index"], params)
        if not names and params.get("allow_no_indices") == "false":
            raise _index_not_found(parts["index"])
        return 200, {n: {"aliases": {a: {} for a, held in self.aliases.items() if n in held},
                         "mappings": copy.deepcopy(self.indices[n].mappings),
                         "settings": {"index": {k[6:]: v for k, v in self.indices[n].settings.items()}}}
                     for n in names}

    def h_indices_delete(self, parts, params, body):
        for name in self._names(parts["index"], params):
            del self.indices[name]
            for held in self.aliases.values():
                held.discard(name)
        self.aliases = {a: s for a, s in self.aliases.items() if s}
        return 200, {"acknowledged": True}

    def h_indices_get_alias(self, parts, params, body):
        name = parts["name"]
        held = self.aliases.get(name)
        if not held:
            return 404, {"error": f"alias [{name}] missing", "status": 404}
        return 200, {i: {"aliases": {name: {}}} for i in sorted(held)}

    def h_indices_put_settings(self, parts, params, body):
        idx = self._resolve(parts["index"])
        for k, v in self._flat_settings(body or {}).items():
            if k == "index.mapping.exclude_source_vectors":
                # [1] can only be set at index creation
                raise _bad("final index setting [index.mapping.exclude_source_vectors], not updateable")
            if v is None:
                idx.settings.pop(k, None)               # null restores the default (refresh_interval: 1s)
            else:
                idx.settings[k] = v
        return 200, {"acknowledged": True}

    def h_indices_refresh(self, parts, params, body):
        for name in self._names(parts["index"], params):
            self._refresh(self.indices[name])
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}

    def h_indices_put_mapping(self, parts, params, body):
        idx = self._resolve(parts["index"])
        self._check_mapping((body or {}).get("properties", {}))
        if "_meta" in body:
            idx.mappings["_meta"] = copy.deepcopy(body["_meta"])
        for k, spec in body.get("properties", {}).items():
            old = idx.mappings.setdefault("properties", {}).get(k)
            if old is not None and old != spec:
                raise _bad(f"mapper [{k}] cannot be changed from type [{old.get('type')}] to [{spec.get('type')}]")
            idx.mappings["properties"][k] = copy.deepcopy(spec)
        return 200, {"acknowledged": True}

    def h_indices_get_mapping(self, parts, params, body):
        return 200, {n: {"mappings": copy.deepcopy(self.indices[n].mappings)}
                     for n in self._names(parts["index"], params)}

    def h_indices_stats(self, parts, params, body):
        out = {}
        for n in self._names(parts["index"], params):
            size = len(json.dumps({i: d.source for i, d in self.indices[n].docs.items()})) + sum(
                v.nbytes for d in self.indices[n].docs.values() for v in d.vectors.values())
            out[n] = {"uuid": self.indices[n].uuid, "primaries": {"store": {"size_in_bytes": size}},
                      "total": {"store": {"size_in_bytes": size}}}
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}, "indices": out}

    #: [10] alias action options: modelled, and accepted by a real server but not modelled (AliasActions.PARSER)
    ALIAS_ACTION_KEYS = {
        "add": ({"index", "indices", "alias", "aliases"},
                {"filter", "routing", "index_routing", "search_routing", "is_write_index", "is_hidden"}),
        "remove": ({"index", "indices", "alias", "aliases", "must_exist"}, set()),
        "remove_index": ({"index", "indices", "must_exist"}, set()),
    }

    def h_indices_update_aliases(self, parts, params, body):
        # [5] all actions apply in one cluster-state update, or none of them
        new = {a: set(s) for a, s in self.aliases.items()}
        removed_indices: list[str] = []
        results: list[dict[str, Any]] = []
        changed = False
        missing: list[str] = []
        for action in body["actions"]:
            ((kind, spec),) = action.items()
            if kind in self.ALIAS_ACTION_KEYS:
                _check_keys(kind, spec, self.ALIAS_ACTION_KEYS[kind][0], self.ALIAS_ACTION_KEYS[kind][1])
            names = [spec["index"]] if "index" in spec else list(spec.get("indices", []))
            aliases = [spec["alias"]] if "alias" in spec else list(spec.get("aliases", []))
            if "must_exist" in spec and kind != "remove":
                raise _bad(f"[{kind}] unknown field [must_exist]", "x_content_parse_exception")   # [5] 400
            for n in names:
                if n not in self.indices:
                    raise _index_not_found(n)
            entry = {"action": {"type": kind, "indices": names, "aliases": aliases}, "status": 200}
            if kind == "add":
                for a in aliases:
                    for n in names:
                        new.setdefault(a, set()).add(n)
                changed = True
            elif kind == "remove":
                gone = [a for a in aliases if not any(n in new.get(a, set()) for n in names)]
                if gone and spec.get("must_exist") is True:
                    # [5] must_exist: true and a missing alias: the whole request fails with 404, nothing applied
                    raise EsError(404, "aliases_not_found_exception", f"aliases [{','.join(gone)}] missing",
                                  **{"resource.type": "aliases", "resource.id": ",".join(gone)})
                for a in aliases:
                    for n in names:
                        if n in new.get(a, set()):
                            new[a].discard(n)
                            changed = True
                if gone:
                    missing += gone
                    entry = {**entry, "status": 404, "error": {
                        "type": "aliases_not_found_exception", "reason": f"aliases [{','.join(gone)}] missing"}}
            elif kind == "remove_index":
                removed_indices += names
                changed = True
            else:
                raise _bad(f"Unknown action [{kind}]", "x_content_parse_exception")
            results.append(entry)
        if missing and not changed:
            # [5] removing a missing alias when no action changes anything: 404 aliases_not_found_exception
            raise EsError(404, "aliases_not_found_exception", f"aliases [{','.join(missing)}] missing",
                          **{"resource.type": "aliases", "resource.id": ",".join(missing)})
        for a, held in new.items():
            if any(n in removed_indices for n in held):
                new[a] = {n for n in held if n not in removed_indices}
        for n in removed_indices:
            self.indices.pop(n, None)
        self.aliases = {a: s for a, s in new.items() if s}
        out: dict[str, Any] = {"acknowledged": True, "errors": bool(missing)}
        if missing:
            # [5] 8.14+ (PR #106514): 200 with errors: true and action_results when other actions succeed
            out["action_results"] = results
        return 200, out

    # ------------------------------------------------------------ document parsing
    def _parse(self, idx: Index, doc_id: str, src: Any) -> Doc:
        if not isinstance(src, dict):
            raise _bad("failed to parse, document is empty", "document_parsing_exception")
        props = idx.mappings.setdefault("properties", {})
        strict = str(idx.mappings.get("dynamic", "true")) == "strict"
        vectors: dict[str, np.ndarray] = {}
        children: dict[str, list[int]] = {}
        stored = copy.deepcopy(src)
        for key, value in src.items():
            spec = props.get(key)
            if spec is None:
                if strict:
                    raise _bad(f"[1:2] mapping set to strict, dynamic introduction of [{key}] within [_doc] is "
                               "not allowed", "strict_dynamic_mapping_exception")
                continue                                      # dynamic: stored as is (not modelled further)
            kind = spec.get("type")
            if value is None:
                continue                                      # [1] null is ignored
            if kind == "rank_vectors":
                if not self._licensed():
                    raise _licence_error()                    # [1] checked in parse() for every document
                vectors[key] = self._parse_rank_vectors(key, spec, value, doc_id)
                if idx.exclude_source_vectors:
                    stored.pop(key)                           # [1] vectors removed from the stored _source
            elif kind == "dense_vector":
                vectors[key] = self._parse_dense_vector(key, spec, value, doc_id)
                if idx.exclude_source_vectors:
                    stored.pop(key)
            elif kind == "nested":
                stored[key] = self._parse_nested(idx, key, spec, value, doc_id, strict, vectors, children)
            elif kind in ("integer", "long"):
                if not _is_int(value):
                    raise self._doc_error(doc_id, key, kind, value, f'For input string: "{value}"')
            elif kind == "keyword" and not isinstance(value, str | int | float | bool):
                raise self._doc_error(doc_id, key, kind, value, "expected a value, not an object or array")
        return Doc(stored, vectors, seq_no=0, children=children)

    @staticmethod
    def _doc_error(doc_id: str, key: str, kind: str, value: Any, cause: str,
                   cause_type: str = "illegal_argument_exception") -> EsError:
        # [6] document_parsing_exception (since PR #92646) with the field and a preview of the value
        return EsError(400, "document_parsing_exception",
                       f"[1:2] failed to parse field [{key}] of type [{kind}] in document with id '{doc_id}'. "
                       f"Preview of field's value: '{str(value)[:40]}'",
                       caused_by={"type": cause_type, "reason": cause})

    def _parse_rank_vectors(self, key: str, spec: dict[str, Any], value: Any, doc_id: str) -> np.ndarray:
        et = spec.get("element_type", "float")

        def fail(reason: str) -> EsError:
            return self._doc_error(doc_id, key, "rank_vectors", value, reason)

        if not isinstance(value, list) or not value:
            raise fail(f"[rank_vectors] field [{key}] cannot be indexed with a single value")
        if not all(isinstance(row, list | str) for row in value):
            raise fail(f"[rank_vectors] field [{key}] cannot be indexed with a single value")        # [1]
        if len(value) > RANK_VECTORS_MAX_VECTORS:
            # [10] PR #158989: at most 8192 vectors per document; [unconfirmed] the release and the wording
            raise fail(f"[rank_vectors] field [{key}] cannot be indexed with more than [{RANK_VECTORS_MAX_VECTORS}] "
                       f"vectors, got [{len(value)}]")
        rows: list[np.ndarray] = []
        for row in value:
            if et in ("bit", "byte"):
                if isinstance(row, str):                                         # [1] hex string
                    try:
                        arr = np.frombuffer(bytes.fromhex(row), dtype=np.int8)
                    except ValueError:
                        raise fail(f"Failed to parse object: expecting a hex string, got [{row}]") from None
                else:
                    if not all(_is_int(x) and -128 <= x <= 127 for x in row):
                        raise fail(f"element_type [{et}] vectors only support integers between [-128, 127]")
                    arr = np.asarray(row, dtype=np.int8)
            else:
                if isinstance(row, str) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                   for x in row):
                    raise fail(f"element_type [{et}] vectors only support numbers")
                arr = np.asarray(row, dtype=np.float32)
                if not np.isfinite(arr).all():
                    raise fail(f"element_type [{et}] vectors do not support NaN or Infinity values")
                if et == "bfloat16":
                    arr = to_bfloat16(arr)                    # [2] stored as bf16, widened back on read
            rows.append(arr)
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise fail(f"[rank_vectors] field [{key}] cannot be indexed with vectors of different dimensions")  # [1]
        (width,) = widths
        n = width * 8 if et == "bit" else width
        if spec.get("dims") is None:
            self._check_dims(key, et, n)
            spec["dims"] = n                                  # [1] dims optional: the first document sets it
        elif n != spec["dims"]:
            raise fail(f"The [rank_vectors] field [{key}] in doc [{doc_id}] has a different number of dimensions "
                       f"[{n}] than defined in the mapping [{spec['dims']}]")
        return np.stack(rows)

    def _parse_nested(self, idx: Index, key: str, spec: dict[str, Any], value: Any, doc_id: str, strict: bool,
                      vectors: dict[str, np.ndarray], children: dict[str, list[int]]) -> list[dict[str, Any]]:
        """A ``nested`` field: an object or an array of objects, one hidden Lucene document each. Only
        dense_vector / keyword / integer sub-fields are modelled; their vectors go to ``vectors["<key>.<sub>"]``
        as ``[n, d]`` (children in order). Returns the stored ``_source`` value."""
        objs = value if isinstance(value, list) else [value]
        if len(objs) > NESTED_OBJECTS_LIMIT:
            # [3b] DocumentParser: index.mapping.nested_objects.limit, default 10000 (MapperService)
            raise EsError(400, "document_parsing_exception", (
                f"[1:2] The number of nested documents has exceeded the allowed limit of [{NESTED_OBJECTS_LIMIT}]. "
                "This limit can be set by changing the [index.mapping.nested_objects.limit] index level setting."))
        props = spec.get("properties", {})
        rows: dict[str, list[np.ndarray]] = {}
        stored = []
        for pos, obj in enumerate(objs):
            if not isinstance(obj, dict):
                raise self._doc_error(doc_id, key, "nested", value, f"object mapping for [{key}] tried to parse "
                                      "field as object, but found a concrete value", "mapper_parsing_exception")
            kept = dict(obj)
            for sub, val in obj.items():
                sspec = props.get(sub)
                if sspec is None:
                    if strict:                          # dynamic: strict is inherited by the nested object
                        raise _bad(f"[1:2] mapping set to strict, dynamic introduction of [{sub}] within [{key}] "
                                   "is not allowed", "strict_dynamic_mapping_exception")
                    continue
                if sspec.get("type") == "dense_vector" and val is not None:
                    rows.setdefault(sub, []).append(self._parse_dense_vector(f"{key}.{sub}", sspec, val, doc_id))
                    children.setdefault(f"{key}.{sub}", []).append(pos)     # [10] a child may lack the vector
                    if idx.exclude_source_vectors:
                        kept.pop(sub)                   # [1] PR #130382: nested vectors leave _source too
                elif sspec.get("type") not in ("keyword", "integer", "long"):
                    raise AssertionError(f"the fake Elasticsearch does not model {sspec.get('type')} inside nested")
            stored.append(kept)
        for sub, rs in rows.items():
            vectors[f"{key}.{sub}"] = np.stack(rs)
        return stored

    def _parse_dense_vector(self, key: str, spec: dict[str, Any], value: Any, doc_id: str) -> np.ndarray:
        def fail(reason: str) -> EsError:
            return self._doc_error(doc_id, key, "dense_vector", value, reason)

        if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                  for x in value):
            raise fail("dense_vector only supports a single array of numbers in this fake")
        v = np.asarray(value, dtype=np.float32)
        if spec.get("dims") is None:
            spec["dims"] = len(v)
        elif len(v) != spec["dims"]:
            raise fail(f"The [dense_vector] field [{key}] in doc [{doc_id}] has a different number of dimensions "
                       f"[{len(v)}] than defined in the mapping [{spec['dims']}]")
        self._check_similarity_input(spec.get("similarity", "cosine"), v, fail)
        return v

    @staticmethod
    def _check_similarity_input(sim: str, v: np.ndarray, fail) -> None:
        sq = float(np.dot(v.astype(np.float64), v.astype(np.float64)))
        if not math.isfinite(sq):
            raise fail("NaN or Infinite magnitude detected, this usually means the vector values are too extreme "
                       "to fit within a float.")                                                   # [3]
        if sim == "cosine" and sq == 0.0:
            raise fail("The [cosine] similarity does not support vectors with zero magnitude. Preview of invalid "
                       f"vector: {_preview(v)}")                                                    # [3]
        if sim == "dot_product" and abs(sq - 1.0) > DOT_PRODUCT_TOLERANCE:
            # [3] dot_product requires unit-length float vectors (|‖v‖² − 1| > 1e-3 refused, PR #110240)
            raise fail("The [dot_product] similarity can only be used with unit-length vectors. Preview of "
                       f"invalid vector: {_preview(v)}")

    # ------------------------------------------------------------ documents
    def _write(self, idx: Index, doc_id: str, src: Any, op: str, params: dict[str, Any]) -> tuple[int, dict]:
        old = idx.docs.get(doc_id)
        if op == "create" and old is not None:
            # [6] op_type create on an existing id: 409 version_conflict_engine_exception
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current version [{old.version}])",
                          index_uuid=idx.uuid, shard="0", index=idx.name)
        self._check_seq(idx, doc_id, params)
        doc = self._parse(idx, doc_id, src)
        self.seq += 1
        doc.seq_no, doc.version = self.seq, (old.version + 1 if old else 1)
        idx.docs[doc_id] = doc
        self._after_write(idx, params)
        return (201 if old is None else 200), {
            "_index": idx.name, "_id": doc_id, "_version": doc.version, "result": "created" if old is None else "updated",
            "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": doc.seq_no, "_primary_term": 1}

    @staticmethod
    def _check_seq(idx: Index, doc_id: str, params: dict[str, Any]) -> None:
        # Not in the note: optimistic concurrency control (elastic.co/docs/reference/elasticsearch/rest-apis/
        # optimistic-concurrency-control): index/update/delete with if_seq_no + if_primary_term that do not
        # match the current document are 409 version_conflict_engine_exception
        if "if_seq_no" not in params and "if_primary_term" not in params:
            return
        cur = idx.docs.get(doc_id)
        want_seq, want_term = params.get("if_seq_no"), params.get("if_primary_term")
        if cur is None:
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, required seqNo [{want_seq}], primary term [{want_term}] "
                          "but no document was found", index_uuid=idx.uuid, shard="0", index=idx.name)
        if int(want_seq) != cur.seq_no or int(want_term) != cur.primary_term:
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, required seqNo [{want_seq}], primary term [{want_term}]. "
                          f"current document has seqNo [{cur.seq_no}] and primary term [{cur.primary_term}]",
                          index_uuid=idx.uuid, shard="0", index=idx.name)

    def h_index(self, parts, params, body):
        idx = self._resolve_write(parts["index"])
        return self._write(idx, parts["id"], body, params.get("op_type", "index"), params)

    def h_create(self, parts, params, body):
        idx = self._resolve_write(parts["index"])
        return self._write(idx, parts["id"], body, "create", params)

    def h_update(self, parts, params, body):
        # partial update (docs: update API): {"doc": {...}} merged into the current _source; a missing
        # document is 404 document_missing_exception unless doc_as_upsert / upsert
        idx = self._resolve_write(parts["index"])
        doc_id = parts["id"]
        cur = idx.docs.get(doc_id)
        if cur is None and not (body.get("doc_as_upsert") or "upsert" in body):
            self._check_seq(idx, doc_id, params)
            raise EsError(404, "document_missing_exception", f"[{doc_id}]: document missing",
                          index_uuid=idx.uuid, shard="0", index=idx.name)
        if "doc" not in body and "upsert" not in body:
            raise AssertionError("the fake Elasticsearch only models doc / upsert updates, not scripts")
        # [10] the update rebuilds excluded vectors from doc values before merging (PR #130834, as for _reindex):
        # a partial update keeps the stored vectors
        base = self._source(idx, cur, exclude_vectors=False) if cur else body.get("upsert", {})
        merged = {**base, **body.get("doc", {})}
        status, out = self._write(idx, doc_id, merged, "index", params)
        return 200, {**out, "result": "updated" if cur else "created"}

    def h_get(self, parts, params, body):
        name = parts["index"]
        idx = self._resolve(name, single_index_op=True)
        doc = idx.docs.get(parts["id"])                 # [8] GET by id is real-time
        if doc is None:
            return 404, {"_index": idx.name, "_id": parts["id"], "found": False}
        return 200, {"_index": idx.name, "_id": parts["id"], "_version": doc.version, "_seq_no": doc.seq_no,
                     "_primary_term": doc.primary_term, "found": True,
                     "_source": self._source(idx, doc, params.get("_source_exclude_vectors"))}

    def h_delete(self, parts, params, body):
        idx = self._resolve_write(parts["index"], auto_create=False)
        doc_id = parts["id"]
        self._check_seq(idx, doc_id, params)
        if doc_id not in idx.docs:
            return 404, {"_index": idx.name, "_id": doc_id, "result": "not_found", "_version": 1}
        del idx.docs[doc_id]
        self.seq += 1
        self._after_write(idx, params)
        return 200, {"_index": idx.name, "_id": doc_id, "result": "deleted", "_seq_no": self.seq,
                     "_primary_term": 1}

    #: [10] bulk action metadata: what the fake models, and what a real server also accepts (BulkRequestParser)
    BULK_META_MODELLED = {"_index", "_id", "if_seq_no", "if_primary_term"}
    BULK_META_KNOWN = {"routing", "version", "version_type", "pipeline", "require_alias", "dynamic_templates",
                       "retry_on_conflict", "_source", "list_executed_pipelines", "require_data_stream", "op_type"}

    def h_bulk(self, parts, params, body):
        items = []
        touched: dict[str, Index] = {}
        lines = list(body)
        i = line = 0
        while i < len(lines):           # [10] the whole request is parsed before any item runs
            ((op, meta),) = lines[i].items()
            line += 1
            _check_keys(f"bulk {op}", meta, self.BULK_META_MODELLED, self.BULK_META_KNOWN, lambda key, n=line: _bad(
                f"Action/metadata line [{n}] contains an unknown parameter [{key}]"))
            i += 2 if op in ("index", "create") else 1
            line += 1 if op in ("index", "create") else 0
        i = 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            src = lines[i + 1] if op in ("index", "create") else None
            i += 2 if op in ("index", "create") else 1
            name = meta.get("_index", parts.get("index"))
            doc_id = meta.get("_id") or uuid.uuid4().hex
            # [10] per-item optimistic concurrency, as for single requests (409 per item)
            cas = {k: meta[k] for k in ("if_seq_no", "if_primary_term") if k in meta}
            try:
                if op not in ("index", "create", "delete"):
                    raise _bad(f"Malformed action/metadata line [{i}], expected one of [create, delete, index, "
                               f"update] but found [{op}]")
                idx = self._resolve_write(name)
                touched[idx.name] = idx
                if op == "delete":
                    status, out = self.h_delete({"index": idx.name, "id": doc_id}, cas, None)
                else:
                    status, out = self._write(idx, doc_id, src, op, cas)
                items.append({op: {**out, "status": status}})
            except EsError as exc:
                # [6] a failed item: {op: {_index, _id, status, error}}; the request itself is 200
                items.append({op: {"_index": name, "_id": doc_id, "status": exc.status,
                                   "error": {k: v for k, v in exc.error.items() if k != "root_cause"}}})
        for idx in touched.values():
            self._after_write(idx, params)
        return 200, {"took": 1, "errors": any("error" in next(iter(x.values())) for x in items), "items": items}

    def h_reindex(self, parts, params, body):
        src = self._resolve(body["source"]["index"])
        dest_name = body["dest"]["index"]
        op = body["dest"].get("op_type", "index")
        query = body["source"].get("query", {"match_all": {}})
        dest = self._resolve_write(dest_name)
        created, failures = 0, []
        # reindex reads with a scroll: it sees the source's last refresh [8]
        for doc_id in self._match(src, query, src.visible):
            doc = src.visible[doc_id]
            # [1] PR #130834: server-side _reindex rehydrates excluded vectors from doc values
            source = self._source(src, doc, exclude_vectors=False)
            try:
                self._write(dest, doc_id, source, op, {})
                created += 1
            except EsError as exc:
                failures.append({"index": dest.name, "id": doc_id, "cause": exc.error, "status": exc.status})
        if str(params.get("refresh")).lower() == "true":
            self._refresh(dest)
        return 200, {"took": 1, "timed_out": False, "total": created + len(failures), "created": created,
                     "updated": 0, "deleted": 0, "batches": 1, "version_conflicts": len(failures),
                     "failures": failures}

    # ------------------------------------------------------------ _source
    def _source(self, idx: Index, doc: Doc, exclude_vectors: Any = None, spec: Any = True) -> dict[str, Any] | None:
        if spec is False:
            return None
        out = copy.deepcopy(doc.source)
        want_vectors = exclude_vectors in (False, "false")
        if isinstance(spec, dict):
            includes = spec.get("includes") or spec.get("include")
            want_vectors = want_vectors or any(k in (includes or []) for k in doc.vectors)    # [1] PR #135444
        elif isinstance(spec, list):
            includes = spec
        else:
            includes = None
        if idx.exclude_source_vectors and want_vectors:
            for key, arr in doc.vectors.items():
                parent, _, sub = key.rpartition(".")
                if parent:          # [1] PR #130382 (240_source_synthetic_vectors.yml): nested vectors come back too,
                    # [10] each to the child that had it; children without the vector come back without it
                    for pos, row in zip(doc.children.get(key, range(len(arr))), arr, strict=True):
                        out[parent][pos][sub] = self._rehydrate(idx, key, row)
                else:
                    out[key] = self._rehydrate(idx, key, arr)
        if includes:
            out = {k: v for k, v in out.items() if any(fnmatch.fnmatch(k, p) for p in includes)}
        return out

    @staticmethod
    def _rehydrate(idx: Index, key: str, arr: np.ndarray) -> Any:
        # [1] rehydrated values come back at float32 precision (bfloat16 rounded); byte and bit as lists
        # of signed ints (copyVectorsAsList), so a bit vector indexed as hex returns as ints
        if arr.dtype == np.int8:
            return arr.astype(int).tolist()
        return [f32(x) for x in arr.ravel()] if arr.ndim == 1 else [[f32(x) for x in row] for row in arr]

    # ------------------------------------------------------------ search
    def _match(self, idx: Index, query: dict[str, Any], docs: dict[str, Doc]) -> list[str]:
        ((kind, spec),) = query.items()
        if kind == "match_all":
            return list(docs)
        if kind == "ids":
            return [i for i in spec["values"] if i in docs]
        if kind == "term":
            ((fname, val),) = spec.items()
            val = val["value"] if isinstance(val, dict) else val
            return [i for i, d in docs.items() if d.source.get(fname) == val]
        raise AssertionError(f"the fake Elasticsearch cannot evaluate the query {kind!r}")

    def _scores(self, idx: Index, query: dict[str, Any], docs: dict[str, Doc]) -> dict[str, float]:
        if "script_score" in query:
            ss = query["script_score"]
            inner = self._match(idx, ss.get("query", {"match_all": {}}), docs)
            return {i: self._script_score(idx, i, docs[i], ss["script"]) for i in inner}
        if "bool" in query:
            return self._bool(idx, query["bool"], docs)
        if "nested" in query:
            return self._nested(idx, query["nested"], docs)
        if "knn" in query:
            return self._knn_query(idx, query["knn"], docs, None)
        return dict.fromkeys(self._match(idx, query, docs), 1.0)

    def _bool(self, idx: Index, spec: dict[str, Any], docs: dict[str, Doc]) -> dict[str, float]:
        # [3b] bool-query.md: "the score from each matching must or should clause will be added together"; with
        # only should clauses at least one must match (minimum_should_match defaults to 1). Only should is modelled
        if set(spec) - {"should"}:
            raise AssertionError(f"the fake Elasticsearch only models bool.should, got {sorted(spec)}")
        should = spec["should"] if isinstance(spec["should"], list) else [spec["should"]]
        total: dict[str, float] = {}
        for clause in should:
            for i, sc in self._scores(idx, clause, docs).items():
                total[i] = float(np.float32(total.get(i, 0.0) + sc))      # Lucene sums clause scores in float
        return total

    #: [3b] NestedQueryBuilder.parseScoreMode: none, min, max, avg, sum (and its old name total); default avg
    NESTED_SCORE_MODES = ("none", "min", "max", "avg", "sum", "total")

    def _nested(self, idx: Index, spec: dict[str, Any], docs: dict[str, Doc]) -> dict[str, float]:
        path = spec["path"]
        pspec = self.field_spec(idx, path)
        if not pspec:
            # [3b] NestedQueryBuilder.doToQuery (ignore_unmapped false) [unconfirmed wording]
            raise _search_phase(idx.name, {"type": "query_shard_exception",
                                           "reason": f"[nested] failed to find nested object under path [{path}]"})
        if pspec.get("type") != "nested":
            raise _search_phase(idx.name, {"type": "query_shard_exception",
                                           "reason": f"[nested] nested object under path [{path}] is not of nested type"})
        mode = spec.get("score_mode", "avg")
        if mode not in self.NESTED_SCORE_MODES:
            # [3b] parseScoreMode [unconfirmed wording]
            raise _bad(f"No score mode for child query [{mode}] found", "x_content_parse_exception")
        inner = spec["query"]
        if set(inner) != {"knn"}:
            raise AssertionError(f"the fake Elasticsearch only models a knn query inside nested, got {sorted(inner)}")
        scores = self._knn_query(idx, inner["knn"], docs, path)
        # [3b] nested kNN hands each parent only its best child: every score_mode but none gives that child's score
        # (issue #122625: avg / min / sum score as max; none scores 0); the docs say only max is supported
        # (query-dsl-knn-query.md, PR #125582). The server does not refuse the others, so neither does the fake
        return {i: (0.0 if mode == "none" else sc) for i, sc in scores.items()}

    def _knn_query(self, idx: Index, knn: dict[str, Any], docs: dict[str, Doc], nested: str | None) -> dict[str, float]:
        """The ``knn`` query (query DSL, 8.12+; ``k`` from 8.15, PR #110233): the ``k`` best documents; inside a
        ``nested`` query on ``<path>.<field>`` the best parents by their best child vector ([3b])."""
        def bad(reason: str) -> EsError:
            # [3b] 190_knn_query-with-k-param.yml: 400 x_content_parse_exception caused by illegal_argument_exception
            return EsError(400, "x_content_parse_exception", "[1:2] [knn] failed to parse field",
                           caused_by={"type": "illegal_argument_exception", "reason": reason})

        _check_keys("knn", knn, self.KNN_MODELLED, self.KNN_KNOWN)
        if nested and "filter" in knn:
            raise NotModelled("a [filter] on a knn query inside a nested query")

        nc = knn.get("num_candidates")
        k = int(knn["k"]) if "k" in knn else int(nc if nc is not None else 15)   # [3b] no k: num_candidates per shard
        nc = int(nc) if nc is not None else round(min(KNN_MAX_CANDIDATES, 1.5 * k))
        # [3] KnnVectorQueryBuilder checks k, then the 10000 limit, then num_candidates < k
        if k < 1:
            raise bad("[k] must be greater than 0")
        if nc > KNN_MAX_CANDIDATES:
            raise bad(f"[num_candidates] cannot exceed [{KNN_MAX_CANDIDATES}]")
        if nc < k:
            raise bad("[num_candidates] cannot be less than [k]")
        fname = knn["field"]
        spec = self.field_spec(idx, fname)
        if spec.get("type") != "dense_vector":
            raise _bad(f"[knn] queries are only supported on [dense_vector] fields, got [{fname}]")
        parent = fname.rpartition(".")[0]
        if parent and self.field_spec(idx, parent).get("type") == "nested" and parent != nested:
            raise AssertionError(f"the fake Elasticsearch does not model a knn query on the nested field {fname!r} "
                                 "outside a nested query on its path")
        q, sim = self._knn_query_vector(spec, knn)
        docs = self._prefilter(idx, knn.get("filter"), docs)
        vecs = {i: doc.vectors[fname] for i, doc in docs.items() if fname in doc.vectors}
        return self._threshold(spec, sim, knn, self._knn_top(idx, fname, sim, q, vecs, k))

    _SCRIPT = re.compile(r"(maxSimDotProduct|maxSimInvHamming)\(params\.(\w+), '([\w.]+)'\)(?: \+ params\.(\w+))?")

    def _script_score(self, idx: Index, doc_id: str, doc: Doc, script: dict[str, Any]) -> float:
        m = self._SCRIPT.fullmatch(script.get("source", ""))
        if m is None:
            raise AssertionError(f"the fake Elasticsearch cannot evaluate the script {script.get('source')!r}")
        fn, qparam, fname, offset_param = m.groups()
        params = script.get("params", {})
        spec = idx.mappings.get("properties", {}).get(fname, {})
        if spec.get("type") != "rank_vectors":
            raise _script_error(idx.name, f"field [{fname}] is not a rank_vectors field")
        if not self._licensed():
            raise _licence_error()                 # [1] checked in fielddataBuilder (script/query access)
        if fname not in doc.vectors:
            # [2] a missing field fails the request; the document does not score 0
            raise _script_error(idx.name, "A document doesn't have a value for a multi-vector field!")
        et = spec.get("element_type", "float")
        if isinstance(params.get(qparam), list) and len(params[qparam]) > RANK_VECTORS_MAX_VECTORS:
            # [10] PR #158989 caps a max-sim query at 8192 vectors too; [unconfirmed] the wording
            raise _script_error(idx.name, f"The query vector has more than [{RANK_VECTORS_MAX_VECTORS}] vectors.")
        try:
            s = maxsim(fn, params[qparam], doc.vectors[fname], et, int(spec["dims"]))
        except ValueError as exc:
            raise _script_error(idx.name, str(exc)) from None
        score = float(np.float32(np.float64(s) + float(params[offset_param]))) if offset_param else s
        if score < 0 or math.isnan(score):
            # [2] ScriptScoreQuery: "... Must be a non-negative score!" (PR #52478, all 8.x and 9.x), HTTP 400
            raise _search_phase(idx.name, {"type": "illegal_argument_exception", "reason": (
                f"script_score script returned an invalid score [{f32(score)}] for doc [{doc_id}]. "
                "Must be a non-negative score!")})
        return score

    #: [10] kNN options (KnnSearchBuilder / KnnVectorQueryBuilder / KnnRetrieverBuilder): modelled, and known to a
    #: real server but not modelled; anything else is the server's 400 "[knn] unknown field [x]"
    KNN_MODELLED = {"field", "query_vector", "k", "num_candidates", "filter", "similarity"}
    KNN_KNOWN = {"boost", "_name", "inner_hits", "rescore_vector", "query_vector_builder", "visit_percentage"}

    def _prefilter(self, idx: Index, flt: Any, docs: dict[str, Doc]) -> dict[str, Doc]:
        """[10] a kNN / retriever ``filter`` (a query or a list of them, all must match) applied before the search."""
        if flt is None:
            return docs
        keep = set(docs)
        for clause in flt if isinstance(flt, list) else [flt]:
            keep &= set(self._match(idx, clause, docs))
        return {i: d for i, d in docs.items() if i in keep}

    @staticmethod
    def _similarity_floor(spec: dict[str, Any], sim: str, value: Any) -> float:
        """[3] kNN ``similarity`` is a threshold on the raw similarity; as a floor on ``_score`` (the score
        function is monotone in the similarity: a maximum distance for l2_norm, a minimum for the others)."""
        if spec.get("element_type", "float") != "float":
            raise NotModelled(f"kNN [similarity] on a {spec.get('element_type')} dense_vector")
        v = float(value)
        if sim == "l2_norm":
            return float(np.float32(1 / (1 + v * v)))
        if sim in ("cosine", "dot_product"):
            return float(np.float32((1 + v) / 2))
        return float(np.float32(1 / (1 - v) if v < 0 else v + 1))      # max_inner_product

    def _knn(self, idx: Index, knn: dict[str, Any], retriever: bool,
             docs: dict[str, Doc] | None = None) -> dict[str, float]:
        _check_keys("knn", knn, self.KNN_MODELLED, self.KNN_KNOWN)
        if retriever and ("k" not in knn or "num_candidates" not in knn):
            # [3] knn retriever: k and num_candidates are required (Retriever.ts @181f089)
            raise _bad(f"[knn] failed to parse: [{'k' if 'k' not in knn else 'num_candidates'}] is required",
                       "x_content_parse_exception")
        k = int(knn.get("k", 10))
        nc = int(knn.get("num_candidates", round(min(KNN_MAX_CANDIDATES, 1.5 * k))))
        # [3] KnnSearchBuilder checks, in this order (400 illegal_argument_exception)
        if k < 1:
            raise _bad("[k] must be greater than 0")
        if nc < k:
            raise _bad("[num_candidates] cannot be less than [k]")
        if nc > KNN_MAX_CANDIDATES:
            raise _bad(f"[num_candidates] cannot exceed [{KNN_MAX_CANDIDATES}]")
        fname = knn["field"]
        spec = idx.mappings.get("properties", {}).get(fname, {})
        if spec.get("type") != "dense_vector":
            raise _bad(f"[knn] queries are only supported on [dense_vector] fields, got [{fname}]")
        q, sim = self._knn_query_vector(spec, knn)
        pool = self._prefilter(idx, knn.get("filter"), idx.visible if docs is None else docs)
        vecs = {i: doc.vectors[fname] for i, doc in pool.items() if fname in doc.vectors}
        return self._threshold(spec, sim, knn, self._knn_top(idx, fname, sim, q, vecs, k))

    def _threshold(self, spec: dict[str, Any], sim: str, knn: dict[str, Any],
                   scores: dict[str, float]) -> dict[str, float]:
        if knn.get("similarity") is None:
            return scores
        floor = self._similarity_floor(spec, sim, knn["similarity"])
        return {i: sc for i, sc in scores.items() if sc >= floor}

    def _knn_query_vector(self, spec: dict[str, Any], knn: dict[str, Any]) -> tuple[np.ndarray, str]:
        """The query vector of a knn search / query (its dims must match the field's) and the field's similarity."""
        q = np.asarray(knn["query_vector"], dtype=np.float32)
        if spec.get("dims") is not None and len(q) != spec["dims"]:
            raise _bad(f"The query vector has a different number of dimensions [{len(q)}] than the document "
                       f"vectors [{spec['dims']}].")
        sim = spec.get("similarity", "cosine")
        self._check_similarity_input(sim, q, _bad)
        return q, sim

    def _knn_top(self, idx: Index, fname: str, sim: str, q: np.ndarray, docs: dict[str, np.ndarray],
                 k: int) -> dict[str, float]:
        """The ``k`` best documents by kNN ``_score``; a ``[n, d]`` entry (nested children) scores by its best row:
        [3b] kNN over nested dense_vectors "diversifies the top results over the top-level document"."""
        kind = self.knn_index_type(idx, fname)
        if kind.startswith("bbq"):
            # binary quantisation (+ its oversampled rescoring in 9.1+) is not modelled: refuse rather than invent
            raise AssertionError(f"the fake Elasticsearch does not model {kind} kNN scores (field {fname!r}); map the "
                                 "field with index_options hnsw / int8_hnsw / int4_hnsw / flat")
        if kind.startswith(("int8", "int4")) and docs:
            # Scalar-quantised graphs score with quantised query and document vectors (Lucene ScalarQuantizer:
            # per segment, each component clipped to the segment's quantiles and rounded to 2^bits - 1 levels):
            # the kNN _score is approximate. Modelled with the min / max of the visible vectors as the bounds
            # (confidence_interval 1.0: one segment), which is within Lucene's error for these tests.
            levels = 255 if kind.startswith("int8") else 15
            stacked = np.concatenate([d.reshape(-1) for d in docs.values()])
            lo, hi = float(stacked.min()), float(stacked.max())
            q = _scalar_quantise(q, lo, hi, levels)
            docs = {i: _scalar_quantise(d, lo, hi, levels) for i, d in docs.items()}
        # hnsw / flat: float vectors, exact float32 scores. The graph search itself is brute force here: a real
        # HNSW may miss a true neighbour (recall < 1), never adds a wrong score
        scores = {i: max(_knn_score(sim, q, row) for row in np.atleast_2d(d)) for i, d in docs.items()}
        return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k])

    #: [10] retriever options (StandardRetrieverBuilder, RescorerRetrieverBuilder): modelled / known, not modelled
    STANDARD_MODELLED = {"query", "filter"}
    STANDARD_KNOWN = {"search_after", "terminate_after", "sort", "min_score", "collapse", "_name"}
    RESCORER_MODELLED = {"retriever", "rescore", "filter"}
    RESCORER_KNOWN = {"min_score", "_name"}

    def _retriever(self, idx: Index, r: dict[str, Any], size: int | None, scroll: bool,
                   docs: dict[str, Doc] | None = None) -> tuple[dict[str, float], int]:
        """The retriever's ranked scores and its ``hits.total`` (a rescorer's total is its child's [10])."""
        ((kind, spec),) = r.items()
        docs = idx.visible if docs is None else docs
        if kind == "knn":
            scores = self._knn(idx, spec, retriever=True, docs=docs)
            return scores, len(scores)
        if kind == "standard":
            _check_keys("standard", spec, self.STANDARD_MODELLED, self.STANDARD_KNOWN)
            scores = self._scores(idx, spec.get("query", {"match_all": {}}),
                                  self._prefilter(idx, spec.get("filter"), docs))
            return scores, len(scores)
        if kind != "rescorer":
            raise AssertionError(f"the fake Elasticsearch cannot run the retriever {kind!r}")
        if self.v < (8, 18, 0):
            raise _bad("unknown retriever [rescorer]", "x_content_parse_exception")    # [4] first in 8.18 / 9.0
        rescore = spec.get("rescore")
        rescores = rescore if isinstance(rescore, list) else [rescore]
        if isinstance(rescore, list) and not rescore:
            raise _bad("Missing rescore definition")                                      # [4]
        if not all(isinstance(x, dict) for x in rescores):
            raise _bad(f"Unknown format for [rescorer.rescore], expects an object or an array of objects, got: "
                       f"{rescore}")                                                      # [4]
        windows = [int(x.get("window_size", 10)) for x in rescores]
        for w in windows:
            if w < 0:
                raise _bad(f"[window_size] parameter cannot be negative, found [{w}]")    # [4]
        window = min(windows)                     # [4] the retriever's window is the minimum window_size
        if scroll:
            raise _bad("cannot specify [rescorer] and [scroll]")                          # [4]
        if size is not None and window < size:
            # [4] CompoundRetrieverBuilder.validate; [unconfirmed] it does not fire when size is omitted
            raise _bad(f"[rescorer] requires [window_size: {window}] be greater than or equal to [size: {size}]")
        _check_keys("rescorer", spec, self.RESCORER_MODELLED, self.RESCORER_KNOWN)
        # [10] 30_rescorer_retriever.yml: the rescorer's filter pre-filters its child ("with pre-filters": total 6
        # of 10), and hits.total is the child's total, not the window (window_size 3: total 10)
        first, total = self._retriever(idx, spec["retriever"], None, scroll,
                                       self._prefilter(idx, spec.get("filter"), docs))
        ranked = sorted(first.items(), key=lambda kv: (-kv[1], kv[0]))[:window]
        scores = dict(ranked)
        for x in rescores:
            q = x["query"]
            qw, rw = float(q.get("query_weight", 1.0)), float(q.get("rescore_query_weight", 1.0))
            if q.get("score_mode", "total") != "total":
                raise AssertionError("the fake Elasticsearch only models score_mode total")
            top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: int(x.get("window_size", 10))]
            matched = self._scores(idx, q["rescore_query"], {i: idx.visible[i] for i, _ in top})
            for i, s0 in top:
                # [4] score_mode total: query_weight * score + rescore_query_weight * rescore score (in float)
                scores[i] = float(np.float32(qw * s0 + rw * matched.get(i, 0.0)))
        return scores, total

    _SEARCH_KEYS = {"query", "size", "from", "_source", "retriever", "aggs", "aggregations", "sort", "knn",
                    "track_total_hits", "fields", "stored_fields"}

    def _search(self, name: str, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        idx = self._resolve(name)
        body = dict(body or {})
        unknown = set(body) - self._SEARCH_KEYS
        if unknown:
            raise _bad(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].", "parsing_exception")
        size = body.get("size", params.get("size"))
        size = int(size) if size is not None else None
        scroll = "scroll" in params
        source_spec = body.get("_source", True)
        if "_source" in params:
            source_spec = params["_source"] not in ("false",)
        if "_source_includes" in params:
            source_spec = params["_source_includes"].split(",")
        exclude_vectors = params.get("_source_exclude_vectors")
        if isinstance(source_spec, dict) and "exclude_vectors" in source_spec:
            if self.v < (8, 19, 0):
                # [1] the per-request _source.exclude_vectors option exists from 8.19 (PR #128735 / #129142);
                # the error text is not from source
                raise _bad("[_source] unknown field [exclude_vectors]", "x_content_parse_exception")
            exclude_vectors = source_spec["exclude_vectors"]
        if "retriever" in body:
            if "query" in body or "knn" in body:
                raise _bad("cannot specify [retriever] and [query]")
            scores, total = self._retriever(idx, body["retriever"], size, scroll)
        elif "knn" in body:
            scores = self._knn(idx, body["knn"], retriever=False)
            total = len(scores)
        else:
            scores = self._scores(idx, body.get("query", {"match_all": {}}), idx.visible)
            total = len(scores)
        if body.get("sort") in ("_doc", ["_doc"]):
            order = list(scores.items())
        else:
            order = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        hits = [{"_index": idx.name, "_id": i, "_score": f32(s),
                 **({} if source_spec is False else
                    {"_source": self._source(idx, idx.visible[i], exclude_vectors, source_spec)})}
                for i, s in order]
        out: dict[str, Any] = {"took": 1, "timed_out": False,
                               "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                               "hits": {"total": {"value": total, "relation": "eq"},
                                        "max_score": f32(order[0][1]) if order else None, "hits": hits}}
        aggs = body.get("aggs") or body.get("aggregations")
        if aggs:
            out["aggregations"] = {}
            for aname, spec in aggs.items():
                ((atype, aspec),) = spec.items()
                if atype != "sum":
                    raise AssertionError(f"the fake Elasticsearch cannot run the aggregation {atype!r}")
                out["aggregations"][aname] = {"value": float(sum(
                    idx.visible[i].source.get(aspec["field"], 0) for i in scores))}
        page = (size if size is not None else 10)
        if scroll:
            sid = uuid.uuid4().hex
            page = max(1, min(page, self.scroll_page))
            self.scrolls[sid] = hits[page:]
            out["_scroll_id"] = sid
        out["hits"]["hits"] = hits[int(body.get("from", 0)):][:page]
        return out

    def h_search(self, parts, params, body):
        return 200, self._search(parts["index"], body, params)

    def h_count(self, parts, params, body):
        idx = self._resolve(parts["index"])
        query = (body or {}).get("query", {"match_all": {}})
        return 200, {"count": len(self._scores(idx, query, idx.visible)),
                     "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}

    def h_scroll(self, parts, params, body):
        # [8] results reflect the index at the initial search ("a snapshot in time"), paged
        sid = (body or {}).get("scroll_id") or params.get("scroll_id")
        if sid not in self.scrolls:
            raise EsError(404, "search_context_missing_exception", f"No search context found for id [{sid}]")
        rest = self.scrolls[sid]
        page, self.scrolls[sid] = rest[: self.scroll_page], rest[self.scroll_page:]
        return 200, {"_scroll_id": sid, "took": 1, "timed_out": False,
                     "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"hits": page}}

    def h_clear_scroll(self, parts, params, body):
        ids = (body or {}).get("scroll_id", [])
        ids = [ids] if isinstance(ids, str) else ids
        freed = sum(self.scrolls.pop(i, None) is not None for i in ids)
        return (200 if freed else 404), {"succeeded": True, "num_freed": freed}

    def h_msearch(self, parts, params, body):
        responses = []
        for head, b in zip(body[0::2], body[1::2], strict=True):
            try:
                responses.append({**self._search(head["index"], b, {}), "status": 200})
            except EsError as exc:
                responses.append(exc.body())
        return 200, {"took": 1, "responses": responses}


def _preview(v: np.ndarray) -> str:
    # [3] the preview shows the first 5 values then ", ..."
    vals = ", ".join(str(f32(x)) for x in v[:5])
    return f"[{vals}{', ...' if len(v) > 5 else ''}]"


def _scalar_quantise(v: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    """Clip to ``[lo, hi]``, round to ``levels`` steps, map back (scalar quantisation as scored)."""
    if hi <= lo:
        return v.astype(np.float32)
    step = (hi - lo) / levels
    return (np.round((np.clip(v, lo, hi) - lo) / step) * step + lo).astype(np.float32)


def _knn_score(sim: str, q: np.ndarray, d: np.ndarray) -> float:
    """kNN ``_score`` per similarity ([3] dense-vector.md), in float32."""
    q, d = q.astype(np.float32), d.astype(np.float32)
    dot = np.float32(np.dot(q, d))
    if sim == "cosine":
        cos = dot / (np.float32(np.linalg.norm(q)) * np.float32(np.linalg.norm(d)))
        return float(np.float32((1 + cos) / 2))
    if sim == "dot_product":
        return float(np.float32((1 + dot) / 2))
    if sim == "l2_norm":
        return float(np.float32(1 / (1 + np.float32(np.sum((q - d) ** 2)))))
    # max_inner_product: 1 / (1 - ip) below 0, ip + 1 from 0 (monotone in ip: ranks by the raw inner product)
    return float(np.float32(1 / (1 - dot) if dot < 0 else dot + 1))


def _query_rows(qv: Any, et: str) -> list[Any]:
    # [2] params.query_vector is a list of query vectors; byte/bit fields also take hex strings
    if not isinstance(qv, list) or not qv:
        raise ValueError("The query vector is empty.")
    if et in ("float", "bfloat16") and not all(isinstance(r, list) for r in qv):
        raise ValueError(f"Unsupported input object for float vectors: {type(qv[0]).__name__}")
    widths = {len(r) if isinstance(r, list) else len(r) // 2 for r in qv}
    if len(widths) != 1:
        raise ValueError("The query vector contains inner vectors which have inconsistent number of dimensions.")
    return qv


def maxsim(fn: str, qv: Any, docs: np.ndarray, et: str, dims: int) -> float:
    """``maxSimDotProduct`` / ``maxSimInvHamming`` as [2] describes them: ``Σ_i max_j sim(q_i, d_j)`` in float32.

    ``docs`` holds what the server stored: float32 rows (bfloat16 already rounded) or int8 bytes (byte, bit).
    """
    rows = _query_rows(qv, et)
    total = np.float32(0.0)
    if fn == "maxSimInvHamming":
        if et not in ("byte", "bit"):
            raise ValueError("hamming distance is only supported for byte or bit vectors")
        nbits = dims * 8 if et == "byte" else dims
        dbits = np.stack([_bits_msb_first(d) for d in docs])                     # [n, nbits]
        for r in rows:
            qb = _bits_msb_first(_byte_row(r))
            if len(qb) != dbits.shape[1]:
                raise ValueError(f"The query vector has a different number of dimensions [{len(qb)}] than the "
                                 f"document vectors [{dbits.shape[1]}].")
            ham = (dbits != qb[None, :]).sum(axis=1)
            # [2] per pair (bits − popcount(q XOR d)) / bits
            total = np.float32(total + np.float32(((nbits - ham) / np.float32(nbits)).astype(np.float32).max()))
        return float(total)
    if et in ("float", "bfloat16"):
        for r in rows:
            q = np.asarray(r, dtype=np.float32)              # the query stays float (also for bfloat16 docs [2])
            if len(q) != dims:
                raise ValueError(f"The query vector has a different number of dimensions [{len(q)}] than the "
                                 f"document vectors [{dims}].")
            if not np.isfinite(q).all():
                raise ValueError("The query vector contains non-finite values")
            total = np.float32(total + (docs.astype(np.float32) @ q).max())
        return float(total)
    if et == "byte":
        for r in rows:
            q = _byte_row(r)
            if len(q) != dims:
                raise ValueError(f"The query vector has a different number of dimensions [{len(q)}] than the "
                                 f"document vectors [{dims}].")
            total = np.float32(total + np.float32((docs.astype(np.int32) @ q.astype(np.int32)).max()))
        return float(total)
    # bit docs: MaxSimBitDotProduct [2]
    dbits = np.stack([_bits_msb_first(d) for d in docs]).astype(np.float32)     # [n, N] in {0, 1}
    for r in rows:
        if isinstance(r, str) or len(r) == dims // 8:
            qb = _bits_msb_first(_byte_row(r)).astype(np.float32)
            s = (dbits @ qb).max()                                           # popcount(q AND d)
        elif len(r) == dims:
            # ipByteBit (all integers in [-128, 127]) and ipFloatBit (any other value) both sum q_k over the
            # bits set in d: not a ±1 dot product
            s = (dbits @ np.asarray(r, dtype=np.float32)).max()
        else:
            raise ValueError(f"The query vector has an incorrect number of dimensions. Must be [{dims // 8}] for "
                             f"bitwise operations, or [{dims}] for byte wise operations: provided [{len(r)}].")
        total = np.float32(total + np.float32(s))
    return float(total)


def _byte_row(r: Any) -> np.ndarray:
    if isinstance(r, str):
        return np.frombuffer(bytes.fromhex(r), dtype=np.int8)
    for k, x in enumerate(r):
        if not _is_int(x):
            raise ValueError(f"element_type [byte] vectors only support non-decimal values but found decimal value "
                             f"[{x}] at dim [{k}].")
        if not -128 <= x <= 127:
            # [2] every dimension is validated (older builds validated only the last one, issue #158309)
            raise ValueError(f"element_type [byte] vectors only support integers between [-128, 127] but found "
                             f"[{float(x)}] at dim [{k}]; Preview of invalid vector: [{float(r[0])}]")
    return np.asarray(r, dtype=np.int8)


def install(monkeypatch, fake: FakeES) -> FakeES:
    """Route every ``elastic_transport.Transport`` request of this test to ``fake``."""
    from elastic_transport import Transport

    monkeypatch.setattr(Transport, "perform_request",
                        lambda self, method, target, **kw: fake.transport_perform_request(method, target, **kw))
    return fake
