"""The strict Elasticsearch double refuses what real servers refuse (one test per rule).

Each test names the fact of `docs/elasticsearch-fidelity.md` it checks as ``[N]``.
Most tests talk to the double directly with the headers a client of the server's own major sends,
so that every server version can be tested whichever client major is installed; the tests marked
"client" go through the real ``elasticsearch`` client to show how it surfaces the answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from elasticsearch import (
    BadRequestError,
    ConflictError,
    Elasticsearch,
    NotFoundError,
    UnsupportedProductError,
    helpers,
)
from fake_es import VERSIONS, FakeES, install, parse_version, to_bfloat16

from anchorprune.index.elasticsearch import client_version


def call(fake: FakeES, method: str, path: str, body=None, compat: int | None = None, **params):
    """One request as a client of major ``compat`` (default: the server's) sends it: ``(status, body)``."""
    major = compat or parse_version(fake.version)[0]
    mime = f"application/vnd.elasticsearch+json; compatible-with={major}"
    query = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
    meta, out = fake.transport_perform_request(method, path + (f"?{query}" if query else ""), body=body,
                                               headers={"accept": mime, "content-type": mime})
    return meta.status, out


def err_type(out) -> str:
    return out["error"]["type"]


def rv_index(fake, name="i", element="float", dims=4, **settings):
    status, out = call(fake, "PUT", f"/{name}", {
        "settings": settings,
        "mappings": {"dynamic": "strict", "properties": {
            "v": {"type": "rank_vectors", "element_type": element, **({"dims": dims} if dims else {})},
            "n": {"type": "integer"}}}})
    assert status == 200, out
    return name


def bulk(fake, index, docs, op="index", **params):
    lines = []
    for i, src in docs.items():
        lines += [{op: {"_index": index, "_id": i}}, src]
    return call(fake, "POST", "/_bulk", lines, **params)


# ------------------------------------------------------------ [7] headers
def test_every_response_carries_the_product_header_and_the_client_checks_it(monkeypatch):
    """client: [7] X-Elastic-Product on every response; without it a 2xx is UnsupportedProductError."""
    major = client_version()[0]
    fake = install(monkeypatch, FakeES(version=f"{major}.3.0" if major == 9 else "8.19.0"))
    es = Elasticsearch("http://localhost:9200")
    assert es.info().meta.headers["x-elastic-product"] == "Elasticsearch"
    orig = fake._meta

    def no_product(status):
        meta = orig(status)
        return meta.__class__(status=meta.status, http_version="1.1", headers=type(meta.headers)({}),
                              duration=0.0, node=meta.node)

    monkeypatch.setattr(fake, "_meta", no_product)
    with pytest.raises(UnsupportedProductError):
        Elasticsearch("http://localhost:9200").info()


@pytest.mark.parametrize(("server", "client", "ok"), [("8.19.0", 9, False), ("8.19.0", 8, True), ("8.18.0", 7, True),
                                                     ("9.3.0", 8, True), ("9.3.0", 9, True), ("9.3.0", 7, False)])
def test_compatible_with_header_must_be_the_server_major_or_one_below(server, client, ok):
    """[7] RestCompatibleVersionHelper: an 8.x server answers compatible-with=9 with 400 media_type_header_exception."""
    fake = FakeES(version=server)
    status, out = call(fake, "GET", "/", compat=client)
    if ok:
        assert status == 200 and out["version"]["number"] == server
    else:
        assert status == 400 and err_type(out) == "media_type_header_exception"
        major = parse_version(server)[0]
        assert f"either version {major} or {major - 1}, but found {client}" in out["error"]["caused_by"]["reason"]


def test_the_installed_client_meets_the_compat_check_with_bad_request(monkeypatch):
    """client: [7] the wrong major surfaces as BadRequestError(400, 'media_type_header_exception')."""
    major = client_version()[0]
    install(monkeypatch, FakeES(version="8.19.0" if major >= 9 else "10.0.0"))
    with pytest.raises(BadRequestError) as e:
        Elasticsearch("http://localhost:9200").info()
    assert e.value.meta.status == 400 and e.value.message == "media_type_header_exception"


# ------------------------------------------------------------ [1] rank_vectors mapping
@pytest.mark.parametrize("version", VERSIONS)
def test_bfloat16_element_type_exists_only_from_9_3(version):
    """[1] element_type bfloat16 came in 9.3 (PR #139463); float, byte and bit everywhere."""
    fake = FakeES(version=version)
    for element in ("float", "byte", "bit"):
        assert call(fake, "PUT", f"/ok-{element}", {"mappings": {"properties": {
            "v": {"type": "rank_vectors", "element_type": element, "dims": 8}}}})[0] == 200
    status, out = call(fake, "PUT", "/bf", {"mappings": {"properties": {
        "v": {"type": "rank_vectors", "element_type": "bfloat16", "dims": 8}}}})
    if parse_version(version) >= (9, 3, 0):
        assert status == 200
    else:
        assert status == 400 and err_type(out) == "mapper_parsing_exception"
        assert "invalid element_type [bfloat16]" in out["error"]["reason"]


@pytest.mark.parametrize(("element", "dims", "ok"), [
    ("float", 0, False), ("float", 1, True), ("float", 4096, True), ("float", 4097, False),
    ("bit", 8, True), ("bit", 12, False), ("bit", 32768, True), ("bit", 32776, False), ("byte", 4097, False)])
def test_dims_ranges(element, dims, ok):
    """[1] float/byte/bfloat16 dims in [1, 4096]; bit dims in [8, 32768] and a multiple of 8."""
    status, out = call(FakeES(), "PUT", "/i", {"mappings": {"properties": {
        "v": {"type": "rank_vectors", "element_type": element, "dims": dims}}}})
    assert (status == 200) is ok, out
    if element == "bit" and dims == 12:
        assert "multiple of 8 but was [12]" in out["error"]["reason"]


def test_dims_optional_first_document_sets_it_and_later_documents_must_match():
    """[1] dims optional: the first document sets it; a different length is refused."""
    fake = FakeES()
    rv_index(fake, dims=None)
    assert bulk(fake, "i", {"a": {"v": [[1.0, 2.0, 3.0]]}})[1]["errors"] is False
    _, out = bulk(fake, "i", {"b": {"v": [[1.0, 2.0]]}})
    item = out["items"][0]["index"]
    assert out["errors"] and item["status"] == 400 and item["error"]["type"] == "document_parsing_exception"


@pytest.mark.parametrize(("value", "reason"), [
    ([1.0, 2.0, 3.0, 4.0], "cannot be indexed with a single value"),
    ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], "cannot be indexed with vectors of different dimensions"),
    ([[1.0, 2.0]], "different number of dimensions [2] than defined in the mapping [4]")])
def test_rank_vectors_value_errors(value, reason):
    """[1] a single value, vectors of different lengths in one document, and a dims mismatch are refused."""
    fake = FakeES()
    rv_index(fake)
    _, out = bulk(fake, "i", {"a": {"v": value}})
    item = out["items"][0]["index"]
    assert item["status"] == 400 and reason in item["error"]["caused_by"]["reason"]


def test_bit_vectors_take_hex_or_signed_ints_and_byte_values_must_fit():
    """[1] bit: dims/8 bytes per vector as hex or int array; [2] byte values in [-128, 127]."""
    fake = FakeES()
    rv_index(fake, element="bit", dims=16)
    assert bulk(fake, "i", {"a": {"v": ["80ff", [-128, 1]]}})[1]["errors"] is False
    _, out = bulk(fake, "i", {"b": {"v": [[128, 1]]}})
    assert out["items"][0]["index"]["status"] == 400
    _, out = bulk(fake, "i", {"c": {"v": ["80"]}})             # 8 bits, mapping says 16
    assert out["items"][0]["index"]["status"] == 400


# ------------------------------------------------------------ [1] licence
@pytest.mark.parametrize(("kind", "state"), [("basic", "active"), ("trial", "expired"), ("gold", "active")])
def test_rank_vectors_mapping_needs_an_active_enterprise_or_trial_licence(kind, state):
    """[1] RANK_VECTORS_FEATURE is ENTERPRISE: 403 security_exception at mapping creation."""
    fake = FakeES(license_type=kind, license_status=state)
    status, out = call(fake, "PUT", "/i", {"mappings": {"properties": {"v": {"type": "rank_vectors"}}}})
    assert status == 403 and err_type(out) == "security_exception"
    assert out["error"]["reason"] == "current license is non-compliant for [Rank Vectors]"
    assert call(fake, "PUT", "/plain", {"mappings": {"properties": {"k": {"type": "keyword"}}}})[0] == 200


def test_licence_is_checked_again_on_every_document_and_query():
    """[1] parse() and fielddataBuilder check the licence too: a trial that expires after creation."""
    fake = FakeES()
    rv_index(fake)
    bulk(fake, "i", {"a": {"v": [[1.0, 0.0, 0.0, 0.0]]}}, refresh="true")
    fake.license_status = "expired"
    _, out = bulk(fake, "i", {"b": {"v": [[1.0, 0.0, 0.0, 0.0]]}})
    assert out["items"][0]["index"]["status"] == 403
    assert out["items"][0]["index"]["error"]["type"] == "security_exception"
    status, out = call(fake, "POST", "/i/_search", {"query": {"script_score": {"query": {"match_all": {}}, "script": {
        "source": "maxSimDotProduct(params.query_vector, 'v')", "params": {"query_vector": [[1, 0, 0, 0]]}}}}})
    assert status == 403 and err_type(out) == "security_exception"


# ------------------------------------------------------------ [3] dense_vector and kNN
def test_dot_product_needs_unit_length_vectors():
    """[3] |‖v‖² − 1| > 1e-3 is refused with document_parsing_exception at index time."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"m": {"type": "dense_vector", "dims": 2,
                                                               "similarity": "dot_product"}}}})
    _, out = bulk(fake, "d", {"ok": {"m": [0.6, 0.8002]}, "bad": {"m": [1.2, 1.6]}})
    ok, bad = (x["index"] for x in out["items"])
    assert ok["status"] == 201 and bad["status"] == 400
    assert "can only be used with unit-length vectors" in bad["error"]["caused_by"]["reason"]


@pytest.mark.parametrize(("k", "nc", "reason"), [(0, 10, "[k] must be greater than 0"),
                                                 (10, 5, "[num_candidates] cannot be less than [k]"),
                                                 (10, 10_001, "[num_candidates] cannot exceed [10000]")])
def test_knn_bounds(k, nc, reason):
    """[3] KnnSearchBuilder: k > 0, num_candidates >= k, num_candidates <= 10000 (400)."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"m": {"type": "dense_vector", "dims": 2}}}})
    status, out = call(fake, "POST", "/d/_search", {"retriever": {"knn": {
        "field": "m", "query_vector": [1.0, 0.0], "k": k, "num_candidates": nc}}})
    assert status == 400 and out["error"]["reason"] == reason


def test_knn_retriever_requires_k_and_num_candidates():
    """[3] the knn retriever declares k and num_candidates required (Retriever.ts)."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"m": {"type": "dense_vector", "dims": 2}}}})
    status, _ = call(fake, "POST", "/d/_search", {"retriever": {"knn": {"field": "m", "query_vector": [1.0, 0.0],
                                                                        "k": 3}}})
    assert status == 400


def test_knn_cosine_score_is_one_plus_cos_over_two_in_float32():
    """[3] cosine _score = (1 + cos) / 2 (float hnsw: the default int8_hnsw would score quantised vectors)."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"m": {"type": "dense_vector", "dims": 2,
                                                               "index_options": {"type": "hnsw"}}}}})
    bulk(fake, "d", {"a": {"m": [0.6, 0.8]}}, refresh="true")
    _, out = call(fake, "POST", "/d/_search", {"retriever": {"knn": {"field": "m", "query_vector": [1.0, 0.0],
                                                                     "k": 1, "num_candidates": 10}}})
    assert out["hits"]["hits"][0]["_score"] == pytest.approx(0.8, abs=1e-7)


def _dense(fake, spec, name="d"):
    return call(fake, "PUT", f"/{name}", {"mappings": {"properties": {"m": {"type": "dense_vector", **spec}}}})


@pytest.mark.parametrize(("spec", "reason"), [
    ({"dims": 4097}, "The number of dimensions should be in the range [1, 4096] but was [4097]"),
    ({"dims": 8, "index_options": {"type": "hnsw_plus"}}, "Unknown vector index options type [hnsw_plus] for field [m]"),
    ({"dims": 8, "index_options": {"m": 16}}, "[index_options] requires field [type] to be configured"),
    ({"dims": 8, "element_type": "byte", "index_options": {"type": "int8_hnsw"}},
     "[element_type] cannot be [byte] when using index type [int8_hnsw]"),
    ({"dims": 32, "index_options": {"type": "bbq_hnsw"}}, "bbq_hnsw does not support dimensions fewer than 64; provided=32"),
])
def test_dense_vector_mapping_refusals(spec, reason):
    """DenseVectorFieldMapper: dims <= MAX_DIMS_COUNT (4096), known index_options types, quantised types
    float-only (validateElementType), bbq >= BBQ_MIN_DIMS (64); all 400 mapper_parsing_exception."""
    fake = FakeES()
    status, out = _dense(fake, spec)
    assert status == 400 and err_type(out) == "mapper_parsing_exception" and out["error"]["reason"] == reason
    assert "d" not in fake.indices
    assert _dense(fake, {"dims": 4096, "similarity": "max_inner_product", "index_options": {"type": "hnsw"}})[0] == 200


@pytest.mark.parametrize("version", ["9.0.0", "9.2.0"])
def test_bbq_disk_exists_from_9_2(version):
    """bbq_disk index type: spec PR #5434 (9.2); an older server does not know the type."""
    status, out = _dense(FakeES(version=version), {"dims": 64, "index_options": {"type": "bbq_disk"}})
    assert status == (200 if version == "9.2.0" else 400), out


@pytest.mark.parametrize(("version", "dims", "want"), [
    ("8.18.0", 16, "int8_hnsw"), ("8.18.0", 4096, "int8_hnsw"), ("9.0.0", 4096, "int8_hnsw"),
    ("9.2.0", 16, "int8_hnsw"), ("9.2.0", 384, "bbq_hnsw"), ("9.3.0", 4096, "bbq_hnsw"),
])
def test_default_index_options_per_version(version, dims, want):
    """[3] float dense_vector without index_options: int8_hnsw on 8.14-9.0, bbq_hnsw from 9.1 for dims >= 384;
    an explicit type always wins."""
    fake = FakeES(version=version)
    _dense(fake, {"dims": dims})
    _dense(fake, {"dims": dims, "index_options": {"type": "hnsw"}}, name="e")
    assert fake.knn_index_type(fake.indices["d"], "m") == want
    assert fake.knn_index_type(fake.indices["e"], "m") == "hnsw"


def test_knn_max_inner_product_scores_rank_by_the_raw_inner_product():
    """[3] max_inner_product: _score = ip + 1 for ip >= 0, 1 / (1 - ip) below; vectors need not be unit length
    (dot_product would refuse them)."""
    fake = FakeES()
    _dense(fake, {"dims": 2, "similarity": "max_inner_product", "index_options": {"type": "hnsw"}})
    bulk(fake, "d", {"a": {"m": [2.0, 1.0]}, "b": {"m": [-1.0, 0.0]}, "c": {"m": [0.5, 0.0]}}, refresh="true")
    _, out = call(fake, "POST", "/d/_search", {"knn": {"field": "m", "query_vector": [1.0, 0.0], "k": 3,
                                                       "num_candidates": 10}})
    assert [(h["_id"], h["_score"]) for h in out["hits"]["hits"]] == [("a", 3.0), ("c", 1.5), ("b", 0.5)]
    _dense(fake, {"dims": 2, "similarity": "dot_product"}, name="u")
    status, out = bulk(fake, "u", {"a": {"m": [2.0, 1.0]}})
    assert out["items"][0]["index"]["status"] == 400


def test_int8_hnsw_knn_scores_are_approximate_and_hnsw_scores_exact():
    """Scalar-quantised graphs score quantised vectors: close to, not equal to, the float score; hnsw is exact."""
    rng = np.random.default_rng(0)
    docs = {f"p{i}": {"m": rng.standard_normal(64).round(4).tolist()} for i in range(30)}
    q = rng.standard_normal(64).tolist()
    scores = {}
    for kind in ("hnsw", "int8_hnsw"):
        fake = FakeES()
        _dense(fake, {"dims": 64, "similarity": "max_inner_product", "index_options": {"type": kind}})
        bulk(fake, "d", docs, refresh="true")
        _, out = call(fake, "POST", "/d/_search", {"size": 30, "knn": {"field": "m", "query_vector": q, "k": 30,
                                                           "num_candidates": 100}})
        scores[kind] = {h["_id"]: h["_score"] for h in out["hits"]["hits"]}
    ip = {i: float(np.dot(np.float32(d["m"]), np.float32(q))) for i, d in docs.items()}
    exact = {i: (v + 1 if v >= 0 else 1 / (1 - v)) for i, v in ip.items()}
    assert all(scores["hnsw"][i] == pytest.approx(exact[i], rel=1e-5) for i in docs)
    diffs = [abs(scores["int8_hnsw"][i] - exact[i]) for i in docs]
    assert max(diffs) > 1e-4                                   # quantised: not the float score
    assert max(diffs) < 0.05 * max(abs(v) for v in exact.values())    # but within a few percent of it


# ------------------------------------------------------------ [4] rescorer retriever
def _rescorer(window, size, rescore=None):
    knn = {"knn": {"field": "m", "query_vector": [1.0, 0.0], "k": 5, "num_candidates": 10}}
    return {"size": size, "retriever": {"rescorer": {"retriever": knn, "rescore": rescore if rescore is not None else {
        "window_size": window, "query": {"rescore_query": {"match_all": {}}}}}}}


@pytest.mark.parametrize(("window", "size", "rescore", "reason"), [
    (3, 5, None, "[rescorer] requires [window_size: 3] be greater than or equal to [size: 5]"),
    (-1, None, None, "[window_size] parameter cannot be negative, found [-1]"),
    (None, 5, [], "Missing rescore definition")])
def test_rescorer_rules(window, size, rescore, reason):
    """[4] window_size >= size; no negative window; an empty rescore array."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"m": {"type": "dense_vector", "dims": 2}}}})
    body = _rescorer(window, size, rescore)
    if size is None:
        body.pop("size")
    status, out = call(fake, "POST", "/d/_search", body)
    assert status == 400 and out["error"]["reason"] == reason


# ------------------------------------------------------------ [2] script_score and MaxSim
def _score(fake, index, qv, fn="maxSimDotProduct", extra=""):
    return call(fake, "POST", f"/{index}/_search", {"query": {"script_score": {"query": {"match_all": {}}, "script": {
        "source": f"{fn}(params.query_vector, 'v'){extra}", "params": {"query_vector": qv, "offset": 10.0}}}}})


def test_negative_script_scores_are_refused():
    """[2] ScriptScoreQuery: "... Must be a non-negative score!" (400); maxSimDotProduct can be negative."""
    fake = FakeES()
    rv_index(fake)
    bulk(fake, "i", {"a": {"v": [[1.0, 0.0, 0.0, 0.0]]}}, refresh="true")
    status, out = _score(fake, "i", [[-1.0, 0.0, 0.0, 0.0]])
    assert status == 400 and err_type(out) == "search_phase_execution_exception"
    assert "Must be a non-negative score!" in out["error"]["failed_shards"][0]["reason"]["reason"]
    status, out = _score(fake, "i", [[-1.0, 0.0, 0.0, 0.0]], extra=" + params.offset")
    assert status == 200 and out["hits"]["hits"][0]["_score"] == 9.0


def test_a_document_without_the_field_fails_the_search():
    """[2] "A document doesn't have a value for a multi-vector field!": the request fails, no score 0."""
    fake = FakeES()
    rv_index(fake)
    bulk(fake, "i", {"a": {"v": [[1.0, 0.0, 0.0, 0.0]]}, "b": {"n": 1}}, refresh="true")
    status, out = _score(fake, "i", [[1.0, 0.0, 0.0, 0.0]])
    assert status == 400
    assert out["error"]["root_cause"][0]["reason"] == "A document doesn't have a value for a multi-vector field!"


def test_query_vector_shape_errors():
    """[2] an empty query vector, and inner vectors of different lengths, are refused."""
    fake = FakeES()
    rv_index(fake)
    bulk(fake, "i", {"a": {"v": [[1.0, 0.0, 0.0, 0.0]]}}, refresh="true")
    assert "The query vector is empty." in str(_score(fake, "i", [])[1])
    assert "inconsistent number of dimensions" in str(_score(fake, "i", [[1.0] * 4, [1.0] * 3])[1])


def test_float_maxsim_sums_per_query_token_maxima_in_float32():
    """[2] Σ_i max_j q_i · d_j, returned as a float32."""
    fake = FakeES()
    rv_index(fake, dims=2)
    bulk(fake, "i", {"a": {"v": [[0.1, 0.2], [0.3, -0.7]]}}, refresh="true")
    _, out = _score(fake, "i", [[1.0, 0.0], [0.0, -1.0]])
    want = np.float32(np.float32(0.3) + np.float32(0.7))
    assert out["hits"]["hits"][0]["_score"] == float(str(want))


@pytest.mark.parametrize(("element", "want"), [("float", 1.0039062), ("bfloat16", 1.0)])
def test_bfloat16_documents_are_rounded_to_nearest_even(element, want):
    """[2] bfloat16 doc values are rounded (floatToBFloat16, ties to even); float prints as float32 (1.0039062)."""
    fake = FakeES(version="9.3.0")
    rv_index(fake, element=element, dims=1)
    bulk(fake, "i", {"a": {"v": [[1.00390625]]}}, refresh="true")      # 1 + 2^-8: a tie between bf16 1 and 1+2^-7
    assert _score(fake, "i", [[1.0]])[1]["hits"]["hits"][0]["_score"] == want
    assert float(to_bfloat16(np.array([1.01171875]))[0]) == 1.015625   # 1 + 3*2^-8: tie, rounds up to even


def test_bit_documents_float_query_sums_components_at_set_bits_msb_first():
    """[2] MaxSimBitDotProduct: float query -> Σ q_k over set bits (not ±1), MSB first; bytes -> popcount(q AND d)."""
    fake = FakeES()
    rv_index(fake, element="bit", dims=8)
    bulk(fake, "i", {"a": {"v": ["81"]}}, refresh="true")                 # bits 0 and 7 set
    q = [0.5, 0.25, 0.125, 0.0, 0.0, 0.0, 0.0, -0.0625]
    assert _score(fake, "i", [q])[1]["hits"]["hits"][0]["_score"] == 0.4375
    assert _score(fake, "i", ["ff"])[1]["hits"]["hits"][0]["_score"] == 2.0
    status, out = _score(fake, "i", [[0.5, 0.5]])
    assert status == 400 and "Must be [1] for bitwise operations, or [8] for byte wise" in str(out)


def test_inv_hamming_on_bits_and_refused_on_floats():
    """[2] maxSimInvHamming: (bits − popcount(q XOR d)) / bits; float fields refuse it."""
    fake = FakeES()
    rv_index(fake, element="bit", dims=8)
    rv_index(fake, name="f", dims=8)
    bulk(fake, "i", {"a": {"v": ["81"]}}, refresh="true")
    bulk(fake, "f", {"a": {"v": [[1.0] * 8]}}, refresh="true")
    assert _score(fake, "i", ["80", "7e"], "maxSimInvHamming")[1]["hits"]["hits"][0]["_score"] == 0.875
    assert "only supported for byte or bit vectors" in str(_score(fake, "f", [[1.0] * 8], "maxSimInvHamming")[1])


# ------------------------------------------------------------ [5] aliases
def test_removing_a_missing_alias_alone_is_404():
    """[5] no action changes anything: 404 aliases_not_found_exception."""
    fake = FakeES()
    call(fake, "PUT", "/a")
    status, out = call(fake, "POST", "/_aliases", {"actions": [{"remove": {"index": "a", "alias": "x"}}]})
    assert status == 404 and err_type(out) == "aliases_not_found_exception" and out["error"]["resource.id"] == "x"


def test_removing_a_missing_alias_next_to_a_change_is_a_partial_success():
    """[5] 8.14+: 200, errors: true, action_results; the successful actions are applied."""
    fake = FakeES()
    call(fake, "PUT", "/a")
    status, out = call(fake, "POST", "/_aliases", {"actions": [{"remove": {"index": "a", "alias": "x"}},
                                                              {"add": {"index": "a", "alias": "y"}}]})
    assert status == 200 and out["errors"] is True and out["action_results"][0]["status"] == 404
    assert fake.aliases == {"y": {"a"}}


def test_must_exist_fails_the_whole_request():
    """[5] must_exist: true and a missing alias: 404, nothing applied; must_exist on add is a 400."""
    fake = FakeES()
    call(fake, "PUT", "/a")
    status, _ = call(fake, "POST", "/_aliases", {"actions": [
        {"remove": {"index": "a", "alias": "x", "must_exist": True}}, {"add": {"index": "a", "alias": "y"}}]})
    assert status == 404 and fake.aliases == {}
    assert call(fake, "POST", "/_aliases", {"actions": [
        {"add": {"index": "a", "alias": "y", "must_exist": True}}]})[0] == 400


# ------------------------------------------------------------ [6] bulk, create, seq_no
def test_bulk_item_errors_and_create_conflicts():
    """[6] per-item document_parsing_exception / strict mapping (400) and create on an existing id (409)."""
    fake = FakeES()
    rv_index(fake)
    _, out = bulk(fake, "i", {"a": {"n": 1}, "b": {"n": "x"}, "c": {"zzz": 1}}, op="create")
    assert [next(iter(x.values()))["status"] for x in out["items"]] == [201, 400, 400]
    assert out["items"][1]["create"]["error"]["type"] == "document_parsing_exception"
    assert out["items"][2]["create"]["error"]["type"] == "strict_dynamic_mapping_exception"
    _, out = bulk(fake, "i", {"a": {"n": 2}}, op="create")
    item = out["items"][0]["create"]
    assert item["status"] == 409 and item["error"]["type"] == "version_conflict_engine_exception"
    assert "document already exists (current version [1])" in item["error"]["reason"]


def test_create_and_seq_no_conflicts_through_the_client(monkeypatch):
    """client: [6] op_type=create on an existing id -> ConflictError(409); if_seq_no/if_primary_term CAS."""
    major = client_version()[0]
    install(monkeypatch, FakeES(version="9.3.0" if major == 9 else "8.19.0"))
    es = Elasticsearch("http://localhost:9200")
    first = es.index(index="lock", id="build", document={"host": "h"}, op_type="create")
    with pytest.raises(ConflictError) as e:
        es.index(index="lock", id="build", document={"host": "h2"}, op_type="create")
    assert e.value.message == "version_conflict_engine_exception"
    with pytest.raises(ConflictError):
        es.index(index="lock", id="build", document={"host": "h3"}, if_seq_no=first["_seq_no"] + 7,
                 if_primary_term=first["_primary_term"])
    second = es.index(index="lock", id="build", document={"host": "h3"}, if_seq_no=first["_seq_no"],
                      if_primary_term=first["_primary_term"])
    assert second["_seq_no"] > first["_seq_no"] and es.get(index="lock", id="build")["_source"] == {"host": "h3"}
    with pytest.raises(ConflictError):
        es.delete(index="lock", id="build", if_seq_no=first["_seq_no"], if_primary_term=1)
    cur = es.get(index="lock", id="build")
    renewed = es.update(index="lock", id="build", doc={"expires": 2}, if_seq_no=cur["_seq_no"],
                        if_primary_term=cur["_primary_term"])
    assert es.get(index="lock", id="build")["_source"] == {"host": "h3", "expires": 2}
    with pytest.raises(ConflictError):                 # a lease renewal against a stale seq_no
        es.update(index="lock", id="build", doc={"expires": 3}, if_seq_no=cur["_seq_no"],
                  if_primary_term=cur["_primary_term"])
    assert renewed["_seq_no"] > cur["_seq_no"]
    with pytest.raises(NotFoundError):
        es.update(index="lock", id="nope", doc={"x": 1})
    with pytest.raises(NotFoundError):
        es.indices.get_alias(name="nope")


# ------------------------------------------------------------ [8] refresh and scroll
def test_writes_are_invisible_to_search_until_a_refresh_but_get_is_real_time():
    """[8] refresh defaults to false; GET by id is real-time; _refresh or refresh=true makes writes visible."""
    fake = FakeES()
    rv_index(fake, refresh_interval="-1")
    bulk(fake, "i", {"a": {"n": 1}})
    assert call(fake, "POST", "/i/_count")[1]["count"] == 0
    assert call(fake, "POST", "/i/_search", {"query": {"match_all": {}}})[1]["hits"]["hits"] == []
    assert call(fake, "GET", "/i/_doc/a")[1]["found"] is True
    call(fake, "POST", "/i/_refresh")
    assert call(fake, "POST", "/i/_count")[1]["count"] == 1
    bulk(fake, "i", {"b": {"n": 2}}, refresh="true")
    assert call(fake, "POST", "/i/_count")[1]["count"] == 2
    with pytest.raises(AssertionError, match="indefinitely"):
        bulk(fake, "i", {"c": {"n": 3}}, refresh="wait_for")


def test_scroll_pages_a_snapshot_in_small_pages(monkeypatch):
    """client: [8] helpers.scan follows _scroll_id page by page; results are the index at the first search."""
    major = client_version()[0]
    fake = install(monkeypatch, FakeES(version="9.3.0" if major == 9 else "8.19.0", scroll_page=2))
    rv_index(fake)
    bulk(fake, "i", {f"d{k}": {"n": k} for k in range(7)}, refresh="true")
    es = Elasticsearch("http://localhost:9200")
    seen = []
    for hit in helpers.scan(es, index="i", query={"query": {"match_all": {}}}, size=1000):
        if not seen:
            bulk(fake, "i", {"late": {"n": 99}}, refresh="true")      # after the initial search: not in the scroll
        seen.append(hit["_id"])
    assert sorted(seen) == [f"d{k}" for k in range(7)]
    assert len(fake.of("scroll")) == 4 and len(fake.of("clear_scroll")) == 1      # 2+2+2+1, then an empty page
    assert fake.scrolls == {}


# ------------------------------------------------------------ [1] exclude_source_vectors
@pytest.mark.parametrize("version", VERSIONS)
def test_vectors_leave_source_on_9_2_indices_unless_asked_for(version):
    """[1] exclude_source_vectors defaults to true for 9.2+ indices; exclude_vectors: false (8.19+) brings them back."""
    fake = FakeES(version=version)
    rv_index(fake, element="bit", dims=8)
    bulk(fake, "i", {"a": {"v": ["81"], "n": 1}}, refresh="true")
    plain = call(fake, "POST", "/i/_search", {})[1]["hits"]["hits"][0]["_source"]
    status, asked = call(fake, "POST", "/i/_search", {"_source": {"exclude_vectors": False}})
    if parse_version(version) >= (9, 2, 0):
        assert plain == {"n": 1}
        assert asked["hits"]["hits"][0]["_source"]["v"] == [[-127]]          # rehydrated as signed ints
    else:
        assert plain == {"v": ["81"], "n": 1}
    if parse_version(version) < (8, 19, 0):
        assert status == 400                                               # the option does not exist yet
    else:
        assert status == 200


def test_reindex_rehydrates_vectors():
    """[1] PR #130834: server-side _reindex copies the vectors even when _source leaves them out."""
    fake = FakeES(version="9.3.0")
    rv_index(fake, name="src", element="bfloat16")
    rv_index(fake, name="dst", element="bfloat16")
    bulk(fake, "src", {"a": {"v": [[1.00390625, 0.0, 0.0, 0.0]]}}, refresh="true")
    _, out = call(fake, "POST", "/_reindex", {"source": {"index": "src", "query": {"ids": {"values": ["a"]}}},
                                             "dest": {"index": "dst", "op_type": "create"}}, refresh="true")
    assert out["created"] == 1 and not out["failures"]
    assert _score(fake, "dst", [[1.0, 0.0, 0.0, 0.0]])[1]["hits"]["hits"][0]["_score"] == 1.0


# ------------------------------------------------------------ [9] index errors
def test_index_exists_and_missing_index_errors():
    """[9] 400 resource_already_exists_exception; 404 index_not_found_exception."""
    fake = FakeES()
    call(fake, "PUT", "/a")
    status, out = call(fake, "PUT", "/a")
    assert status == 400 and err_type(out) == "resource_already_exists_exception"
    status, out = call(fake, "POST", "/nope/_search", {})
    assert status == 404 and err_type(out) == "index_not_found_exception" and out["error"]["index_uuid"] == "_na_"


# ---------------------------------------------------------------- nested kNN (first stage token_ivf, [3b])
def _nested_index(fake, dims=2, name="n"):
    status, out = call(fake, "PUT", f"/{name}", {"mappings": {"dynamic": "strict", "properties": {
        "tokens": {"type": "nested", "properties": {"vector": {
            "type": "dense_vector", "dims": dims, "index": True, "similarity": "max_inner_product",
            "index_options": {"type": "hnsw"}}}}}}})
    return status, out


def _nested_knn(q, score_mode="max", k=3, nc=10, **extra):
    return {"query": {"nested": {"path": "tokens", "score_mode": score_mode, "query": {"knn": {
        "field": "tokens.vector", "query_vector": q, "k": k, "num_candidates": nc, **extra}}}}}


@pytest.mark.parametrize("version", ["8.18.0", "9.3.0"])
def test_nested_knn_scores_a_parent_by_its_best_child_and_bool_should_sums(version):
    """[3b] kNN over nested dense_vectors diversifies over the parents (each parent: its best child's score);
    bool.should adds the clause scores; max_inner_product scores ip + 1 (ip >= 0) or 1 / (1 - ip)."""
    fake = FakeES(version=version)
    assert _nested_index(fake)[0] == 200
    docs = {"a": [[1.0, 0.0], [0.0, 0.5]], "b": [[0.6, 0.0]], "c": [[-1.0, 0.0], [0.0, 2.0]]}
    for i, rows in docs.items():
        assert call(fake, "PUT", f"/n/_doc/{i}", {"tokens": [{"vector": r} for r in rows]}, refresh="true")[0] == 201
    status, out = call(fake, "POST", "/n/_search", _nested_knn([1.0, 0.0]))
    assert status == 200
    assert {h["_id"]: h["_score"] for h in out["hits"]["hits"]} == {"a": 2.0, "b": pytest.approx(1.6), "c": 1.0}
    # k = 1: only the best parent matches (diversified top k of parents, not of children)
    assert [h["_id"] for h in call(fake, "POST", "/n/_search", _nested_knn([1.0, 0.0], k=1))[1]["hits"]["hits"]] == ["a"]
    two = {"query": {"bool": {"should": [_nested_knn([1.0, 0.0], k=1)["query"],
                                         _nested_knn([0.0, 1.0], k=2)["query"]]}}}
    hits = {h["_id"]: h["_score"] for h in call(fake, "POST", "/n/_search", two)[1]["hits"]["hits"]}
    # a: 2.0 (token 1) + 1.5 (token 2); c: 3.0 (token 2 only); b matches neither top k
    assert hits == {"a": pytest.approx(3.5), "c": pytest.approx(3.0)}


def test_nested_knn_takes_other_score_modes_but_scores_them_as_max():
    """[3b] nested kNN supports score_mode max only (PR #125582); the server does not refuse avg / min / sum but
    scores them as max (issue #122625: only one child per parent is visible); none scores 0."""
    fake = FakeES()
    _nested_index(fake)
    call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [1.0, 0.0]}, {"vector": [0.5, 0.0]}]}, refresh="true")
    score = {m: call(fake, "POST", "/n/_search", _nested_knn([1.0, 0.0], m))[1]["hits"]["hits"][0]["_score"]
             for m in ("max", "avg", "min", "sum", "none")}
    assert score == {"max": 2.0, "avg": 2.0, "min": 2.0, "sum": 2.0, "none": 0.0}
    status, out = call(fake, "POST", "/n/_search", _nested_knn([1.0, 0.0], "median"))
    assert status == 400 and "No score mode for child query [median]" in json.dumps(out)


@pytest.mark.parametrize(("k", "nc", "reason"), [(0, 10, "[k] must be greater than 0"),
                                                  (5, 3, "[num_candidates] cannot be less than [k]"),
                                                  (5, 10_001, "[num_candidates] cannot exceed [10000]")])
def test_knn_query_bounds_are_parse_errors(k, nc, reason):
    """[3] the knn query (not the top-level knn) checks k, the 10000 limit, then num_candidates >= k; a 400
    x_content_parse_exception caused by illegal_argument_exception (190_knn_query-with-k-param.yml)."""
    fake = FakeES()
    _nested_index(fake)
    call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [1.0, 0.0]}]}, refresh="true")
    status, out = call(fake, "POST", "/n/_search", _nested_knn([1.0, 0.0], k=k, nc=nc))
    assert status == 400 and err_type(out) == "x_content_parse_exception"
    assert out["error"]["caused_by"] == {"type": "illegal_argument_exception", "reason": reason}


def test_nested_mapping_and_document_refusals():
    fake = FakeES()
    status, out = _nested_index(fake, dims=5000)              # [1] dense_vector dims in [1, 4096], nested too
    assert status == 400 and "should be in the range [1, 4096] but was [5000]" in out["error"]["reason"]
    _nested_index(fake)
    status, out = call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [1.0, 0.0], "x": 1}]})
    assert status == 400 and err_type(out) == "strict_dynamic_mapping_exception"      # strict is inherited
    status, out = call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [1.0, 0.0, 0.0]}]})
    assert status == 400 and "different number of dimensions [3]" in json.dumps(out)
    status, out = call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [1.0, 0.0]}] * 10_001})
    assert status == 400 and "exceeded the allowed limit of [10000]" in out["error"]["reason"]
    status, out = call(fake, "POST", "/n/_search", {"query": {"nested": {"path": "nope", "query": {"knn": {
        "field": "nope.vector", "query_vector": [1.0, 0.0], "k": 1}}}}})
    assert status == 400 and "failed to find nested object under path [nope]" in json.dumps(out)


@pytest.mark.parametrize("version", ["8.18.0", "9.3.0"])
def test_nested_vectors_leave_the_stored_source_from_9_2_and_come_back_on_request(version):
    """[1] exclude_source_vectors (9.2+) covers nested dense_vectors; exclude_vectors: false and _reindex
    rehydrate them (PR #130382, 240_source_synthetic_vectors.yml)."""
    fake = FakeES(version=version)
    _nested_index(fake)
    call(fake, "PUT", "/n/_doc/a", {"tokens": [{"vector": [0.5, 0.25]}, {"vector": [1.0, 0.0]}]}, refresh="true")
    stored = fake.indices["n"].docs["a"].source["tokens"]
    assert stored == ([{}, {}] if version >= "9.2" else [{"vector": [0.5, 0.25]}, {"vector": [1.0, 0.0]}])
    ask = {"_source": {"exclude_vectors": False}} if version >= "8.19" else {}      # the option exists from 8.19
    out = call(fake, "POST", "/n/_search", ask)[1]
    assert out["hits"]["hits"][0]["_source"]["tokens"] == [{"vector": [0.5, 0.25]}, {"vector": [1.0, 0.0]}]


# ---------------------------------------------------------------- [10] what the double models, what it refuses
from fake_es import RANK_VECTORS_MAX_VECTORS, NotModelled  # noqa: E402


def _knn_docs(fake, **extra_props):
    call(fake, "PUT", "/d", {"mappings": {"properties": {
        "m": {"type": "dense_vector", "dims": 2, "similarity": "cosine", "index_options": {"type": "hnsw"}},
        "g": {"type": "keyword"}, **extra_props}}})
    bulk(fake, "d", {"a": {"m": [1.0, 0.0], "g": "x"}, "b": {"m": [0.8, 0.6], "g": "y"},
                     "c": {"m": [0.0, 1.0], "g": "x"}}, refresh="true")


def _ids(out):
    return [h["_id"] for h in out["hits"]["hits"]]


@pytest.mark.parametrize("where", ["top", "retriever", "query"])
def test_knn_filter_and_similarity_are_applied(where):
    """[10] kNN ``filter`` pre-filters the candidates; [3] ``similarity`` is a floor on the raw similarity."""
    fake = FakeES()
    _knn_docs(fake)

    def search(**extra):
        knn = {"field": "m", "query_vector": [1.0, 0.0], "k": 3, "num_candidates": 10, **extra}
        body = {"top": {"knn": knn}, "retriever": {"retriever": {"knn": knn}}, "query": {"query": {"knn": knn}}}[where]
        status, out = call(fake, "POST", "/d/_search", body)
        assert status == 200, out
        return out

    assert _ids(search()) == ["a", "b", "c"]
    assert _ids(search(filter={"term": {"g": "x"}})) == ["a", "c"]
    assert _ids(search(filter=[{"term": {"g": "x"}}, {"ids": {"values": ["c"]}}])) == ["c"]
    assert _ids(search(similarity=0.7)) == ["a", "b"]            # cos 1, 0.8 pass; cos 0 does not
    assert search(similarity=0.7)["hits"]["total"]["value"] == 2


@pytest.mark.parametrize("option", ["rescore_vector", "inner_hits", "query_vector_builder"])
def test_knn_options_a_server_accepts_but_the_double_does_not_model_are_refused(option):
    """[10] known to the server, not modelled: NotModelled names the option (never silently ignored)."""
    fake = FakeES()
    _knn_docs(fake)
    with pytest.raises(NotModelled, match=option):
        call(fake, "POST", "/d/_search", {"knn": {"field": "m", "query_vector": [1.0, 0.0], "k": 1,
                                                  "num_candidates": 10, option: {}}})


def test_unknown_knn_and_retriever_options_are_the_servers_400():
    """[10] unknown fields are parse errors naming the field."""
    fake = FakeES()
    _knn_docs(fake)
    status, out = call(fake, "POST", "/d/_search", {"knn": {"field": "m", "query_vector": [1.0, 0.0], "k": 1,
                                                            "num_candidates": 10, "fliter": {}}})
    assert status == 400 and err_type(out) == "x_content_parse_exception" and "[fliter]" in out["error"]["reason"]
    status, out = call(fake, "POST", "/d/_search", {"retriever": {"standard": {"query": {"match_all": {}},
                                                                               "colapse": {}}}})
    assert status == 400 and "[colapse]" in out["error"]["reason"]
    with pytest.raises(NotModelled, match="min_score"):
        call(fake, "POST", "/d/_search", {"retriever": {"standard": {"query": {"match_all": {}}, "min_score": 1}}})


def test_rescorer_total_is_the_child_total_and_its_filter_prefilters():
    """[10] 30_rescorer_retriever.yml: hits.total is the child retriever's (window 3 of 10 docs: total 10), and
    the rescorer's filter pre-filters the child (total 6 of 10)."""
    fake = FakeES()
    call(fake, "PUT", "/d", {"mappings": {"properties": {"g": {"type": "keyword"}}}})
    bulk(fake, "d", {str(i): {"g": "x" if i % 2 else "y"} for i in range(10)}, refresh="true")
    body = {"size": 2, "retriever": {"rescorer": {"retriever": {"standard": {"query": {"match_all": {}}}},
                                                  "rescore": {"window_size": 3, "query": {
                                                      "rescore_query": {"match_all": {}}}}}}}
    status, out = call(fake, "POST", "/d/_search", body)
    assert status == 200 and out["hits"]["total"]["value"] == 10 and len(out["hits"]["hits"]) == 2
    body["retriever"]["rescorer"]["filter"] = {"term": {"g": "x"}}
    out = call(fake, "POST", "/d/_search", body)[1]
    assert out["hits"]["total"]["value"] == 5 and {h["_id"] for h in out["hits"]["hits"]} <= {"1", "3", "5", "7", "9"}
    body["retriever"]["rescorer"]["retriever"]["standard"]["filter"] = {"ids": {"values": ["1", "3"]}}
    assert call(fake, "POST", "/d/_search", body)[1]["hits"]["total"]["value"] == 2


@pytest.mark.parametrize("option", ["filter", "routing", "search_routing", "index_routing", "is_write_index"])
def test_alias_options_not_modelled_are_refused(option):
    """[10] alias filters and routing change what the alias returns or where it writes: refused, not ignored."""
    fake = FakeES()
    call(fake, "PUT", "/a")
    with pytest.raises(NotModelled, match=option):
        call(fake, "POST", "/_aliases", {"actions": [{"add": {"index": "a", "alias": "al", option: "x"}}]})
    assert "al" not in fake.aliases
    status, out = call(fake, "POST", "/_aliases", {"actions": [{"add": {"index": "a", "alias": "al", "bogus": 1}}]})
    assert status == 400 and "[bogus]" in out["error"]["reason"]


def test_bulk_item_if_seq_no_is_checked_per_item_and_unknown_metadata_fails_the_request():
    """[10] bulk items carry if_seq_no / if_primary_term (409 per item); an unknown metadata key is a 400 for the
    whole request; routing (known, not modelled) is refused."""
    fake = FakeES()
    call(fake, "PUT", "/i", {"mappings": {"properties": {"n": {"type": "integer"}}}})
    seq = call(fake, "PUT", "/i/_doc/x", {"n": 1})[1]["_seq_no"]
    status, out = call(fake, "POST", "/_bulk", [
        {"index": {"_index": "i", "_id": "x", "if_seq_no": seq + 5, "if_primary_term": 1}}, {"n": 2},
        {"index": {"_index": "i", "_id": "x", "if_seq_no": seq, "if_primary_term": 1}}, {"n": 3}])
    assert status == 200 and out["errors"] is True
    first, second = (next(iter(x.values())) for x in out["items"])
    assert first["status"] == 409 and first["error"]["type"] == "version_conflict_engine_exception"
    assert second["status"] == 200
    status, out = call(fake, "POST", "/_bulk", [{"delete": {"_index": "i", "_id": "x", "if_seq_no": 0,
                                                            "if_primary_term": 1}}])
    assert next(iter(out["items"][0].values()))["status"] == 409 and "x" in fake.indices["i"].docs
    status, out = call(fake, "POST", "/_bulk", [{"index": {"_index": "i", "_id": "y", "iff_seq_no": 1}}, {"n": 1}])
    assert status == 400 and "unknown parameter [iff_seq_no]" in out["error"]["reason"]
    assert "y" not in fake.indices["i"].docs
    with pytest.raises(NotModelled, match="routing"):
        call(fake, "POST", "/_bulk", [{"index": {"_index": "i", "_id": "y", "routing": "r"}}, {"n": 1}])


@pytest.mark.parametrize("version", ["9.0.0", "9.3.0"])
def test_partial_update_keeps_the_stored_vectors(version):
    """[10] an update rebuilds excluded vectors from doc values before merging (PR #130834): a partial update of
    another field keeps them (9.2+ excludes them from _source; before that they are in _source anyway)."""
    fake = FakeES(version=version)
    rv_index(fake)
    call(fake, "PUT", "/i/_doc/a", {"v": [[1.0, 0.0, 0.0, 0.0]], "n": 1}, refresh="true")
    status, _ = call(fake, "POST", "/i/_update/a", {"doc": {"n": 2}}, refresh="true")
    assert status == 200
    doc = fake.indices["i"].docs["a"]
    assert "v" in doc.vectors and doc.source.get("n") == 2
    out = call(fake, "GET", "/i/_doc/a", _source_exclude_vectors="false")[1]
    assert out["_source"]["v"] == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("version", ["9.0.0", "9.3.0"])
def test_nested_read_back_with_children_lacking_the_vector(version):
    """[10] PR #130382: nested vectors come back to the children that had them; a child without one stays so."""
    fake = FakeES(version=version)
    _nested_index(fake)
    src = {"tokens": [{"vector": [1.0, 0.0]}, {}, {"vector": [0.0, 1.0]}]}
    assert call(fake, "PUT", "/n/_doc/a", src, refresh="true")[0] == 201
    out = call(fake, "GET", "/n/_doc/a", _source_exclude_vectors="false")[1]
    assert out["_source"] == src
    status, out = call(fake, "POST", "/n/_search", {"_source": {"exclude_vectors": False}})
    assert status == 200 and out["hits"]["hits"][0]["_source"] == src


def test_rank_vectors_caps_vectors_per_document_and_per_query():
    """[10] PR #158989: at most 8192 vectors per rank_vectors document and per max-sim query."""
    fake = FakeES()
    rv_index(fake, dims=2)
    ok = {"v": [[1.0, 0.0]] * RANK_VECTORS_MAX_VECTORS}
    assert call(fake, "PUT", "/i/_doc/a", ok, refresh="true")[0] == 201
    status, out = call(fake, "PUT", "/i/_doc/b", {"v": [[1.0, 0.0]] * (RANK_VECTORS_MAX_VECTORS + 1)})
    assert status == 400 and err_type(out) == "document_parsing_exception"
    assert "8192" in json.dumps(out)
    script = {"source": "maxSimDotProduct(params.q, 'v')", "params": {"q": [[1.0, 0.0]] * (RANK_VECTORS_MAX_VECTORS + 1)}}
    status, out = call(fake, "POST", "/i/_search", {"query": {"script_score": {"query": {"match_all": {}},
                                                                               "script": script}}})
    assert status == 400 and "8192" in json.dumps(out)
