"""Request shapes of the Elasticsearch backend, recorded from the real client (transport replaced).

Shapes follow Elastic's docs: rank_vectors / dense_vector mappings, NDJSON bulk actions,
one ``_aliases`` call with remove + add, ``script_score`` with ``maxSimDotProduct`` and the
``rescorer`` retriever over a ``knn`` retriever (docs/elasticsearch-fidelity.md, A4-A6).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from elasticsearch import Elasticsearch
from elasticsearch.helpers import actions as helper_actions
from fake_es import FakeES, install
from index_helpers import make_pages, planted_query

from anchorprune.config import IndexConfig
from anchorprune.index import IndexInputError, IndexLockedError, open_index
from anchorprune.index.elasticsearch import (
    ElasticsearchIndex,
    ElasticsearchLicenseError,
    ElasticsearchVersionError,
    client_version,
    element_type,
    redact_url,
    source_with_vectors,
)
from anchorprune.pruning.base import PrunedPage


@pytest.fixture
def fake(monkeypatch):
    f = install(monkeypatch, FakeES())
    monkeypatch.setattr(helper_actions.time, "sleep", lambda s: None)      # bulk retry back-off
    return f


def es_index(dtype="float16", **kw) -> ElasticsearchIndex:
    return ElasticsearchIndex(Elasticsearch("http://localhost:9200"), "pages", dtype=dtype, **kw)


def test_mapping_and_build_settings(fake):
    idx = es_index("float16")
    idx.build(make_pages(n=3, dim=32), {"config_hash": "c"})
    (create,) = fake.of("indices.create")
    assert create.method == "PUT" and create.path == "/pages-v1"
    assert create.body["settings"] == {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"}
    props = create.body["mappings"]["properties"]
    assert props["mean_vector"] == {"type": "dense_vector", "dims": 32, "index": True, "similarity": "cosine",
                                    "index_options": {"type": "hnsw"}}
    assert props["vectors"] == {"type": "rank_vectors", "dims": 32, "element_type": "bfloat16"}
    assert props["page_id"] == {"type": "keyword"} and props["content_hash"] == {"type": "keyword"}
    assert create.body["mappings"]["_meta"]["anchorprune"]["complete"] is False


@pytest.mark.parametrize(("dtype", "element"), [("float32", "float"), ("bits", "bit")])
def test_element_types(fake, dtype, element):
    es_index(dtype).build(make_pages(n=2, dim=16), {})
    assert fake.of("indices.create")[0].body["mappings"]["properties"]["vectors"]["element_type"] == element


def test_build_sequence_settings_restored_and_count_checked(fake):
    es_index(replicas=2).build(make_pages(n=5), {})
    order = [c.endpoint for c in fake.calls]
    want = ["license.get", "index", "indices.create", "bulk", "indices.put_settings", "indices.refresh", "count",
            "search", "indices.put_mapping", "delete"]
    pos = [order.index(e) for e in want]
    assert pos == sorted(pos), order
    (settings,) = fake.of("indices.put_settings")
    assert settings.body == {"index": {"refresh_interval": None, "number_of_replicas": 2}}
    lock = fake.of("index")[0]
    assert lock.path == "/pages-lock/_doc/build" and lock.params["op_type"] == "create"
    assert lock.body["pid"] == os.getpid() and lock.body["host"] == socket.gethostname()
    meta = fake.of("indices.put_mapping")[-1].body["_meta"]["anchorprune"]
    assert meta["complete"] is True and meta["pages"] == 5 and meta["dtype"] == "float16"


def test_bulk_actions_are_ndjson_create_pairs_in_small_chunks(fake):
    pages = make_pages(n=5, dim=16)
    es_index("float32", chunk_pages=2).build(pages, {})
    bulks = fake.of("bulk")
    assert [len(b.body) // 2 for b in bulks] == [2, 2, 1]
    head, src = bulks[0].body[0], bulks[0].body[1]
    assert head == {"create": {"_index": "pages-v1", "_id": "p000"}}
    assert set(src) == {"page_id", "content_hash", "n_vectors", "mean_vector", "vectors"}
    assert np.allclose(src["vectors"], pages[0].vectors.numpy()) and src["n_vectors"] == pages[0].vectors.shape[0]
    assert np.linalg.norm(src["mean_vector"]) == pytest.approx(1.0, abs=1e-5)


def test_bulk_splits_by_bytes_and_retries_429(fake, monkeypatch):
    pages = make_pages(n=6, dim=16)
    one_doc = len(json.dumps({"create": {"_index": "pages-v1", "_id": "p000"}})) + 2000
    rejected = {"n": 0}
    orig = fake.h_bulk

    def flaky(parts, params, body):
        if rejected["n"] == 0:
            rejected["n"] += 1
            first = body[0]["create"]["_id"]
            status, out = orig(parts, params, body[2:])
            out["items"].insert(0, {"create": {"_id": first, "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution"}}})
            out["errors"] = True
            return status, out
        return orig(parts, params, body)

    monkeypatch.setattr(fake, "h_bulk", flaky)
    v = es_index("float32", chunk_pages=100, max_chunk_bytes=2 * one_doc).build(pages, {})
    assert v.pages == 6
    assert len(fake.of("bulk")) >= 3                   # split by bytes, not by the 100-page chunk size
    sent = [b.body[i]["create"]["_id"] for b in fake.of("bulk") for i in range(0, len(b.body), 2)]
    assert sent.count("p000") == 2                     # the 429-rejected page was sent again


def test_bits_go_as_hex_strings(fake):
    pages = [PrunedPage("a", "h", torch.tensor([[1.0, -1.0] * 8, [-1.0] * 16]), None)]
    es_index("bits").build(pages, {})
    src = fake.of("bulk")[0].body[1]
    assert src["vectors"] == ["aaaa", "0000"]


def test_swap_is_one_update_aliases_call_remove_then_add(fake):
    idx = es_index()
    idx.swap(idx.build(make_pages(n=2), {}))
    first = fake.of("indices.update_aliases")
    assert [c.body for c in first] == [{"actions": [{"add": {"index": "pages-v1", "alias": "pages"}}]}]
    idx.swap(idx.build(make_pages(n=2, seed=3), {}))
    calls = fake.of("indices.update_aliases")
    assert len(calls) == 2 and calls[1].path == "/_aliases"
    assert calls[1].body == {"actions": [{"remove": {"index": "pages-v1", "alias": "pages"}},
                                         {"add": {"index": "pages-v2", "alias": "pages"}}]}
    idx.rollback()
    # a rollback is a compare-and-swap: must_exist makes the cluster apply nothing if v2 no longer serves
    assert fake.of("indices.update_aliases")[-1].body == {"actions": [
        {"remove": {"index": "pages-v2", "alias": "pages", "must_exist": True}},
        {"add": {"index": "pages-v1", "alias": "pages"}}]}


def test_exact_search_body_is_script_score_maxsim(fake):
    idx = es_index("float32")
    pages = make_pages(n=4)
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[1], m=2)
    hits = idx.search(q, k=3)
    (ms,) = fake.of("msearch")
    header, body = ms.body
    assert header == {"index": "pages-v1"}
    assert body["size"] == 3 and body["_source"] is False
    script = body["query"]["script_score"]["script"]
    assert body["query"]["script_score"]["query"] == {"match_all": {}}
    assert script["source"] == "maxSimDotProduct(params.query_vector, 'vectors') + params.offset"
    assert np.allclose(script["params"]["query_vector"], q.numpy())
    assert script["params"]["offset"] >= float(q.norm(dim=1).sum())
    assert hits[0].page_id == "p001"


def test_two_stage_body_is_knn_retriever_rescored_by_maxsim(fake):
    idx = es_index("float32", two_stage=True, candidates=3)
    pages = make_pages(n=6)
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[2], m=3)
    assert idx.search(q, k=2)[0].page_id == "p002"
    body = fake.of("msearch")[0].body[1]
    r = body["retriever"]["rescorer"]
    knn = r["retriever"]["knn"]
    assert knn["field"] == "mean_vector" and knn["k"] == 3 and knn["num_candidates"] >= 3
    assert np.linalg.norm(knn["query_vector"]) == pytest.approx(1.0, abs=1e-5)
    assert r["rescore"]["window_size"] == 3
    rq = r["rescore"]["query"]
    assert rq["query_weight"] == 0.0 and rq["rescore_query_weight"] == 1.0
    assert rq["rescore_query"]["script_score"]["script"]["source"].startswith("maxSimDotProduct(")


def test_a_small_corpus_under_auto_is_searched_exactly(fake):
    idx = es_index("float32", first_stage="auto", first_stage_auto="mean", first_stage_threshold=100, candidates=3)
    idx.swap(idx.build(make_pages(n=6), {}))
    idx.search(torch.ones(1, 16), k=2)
    assert "query" in fake.of("msearch")[0].body[1] and "retriever" not in fake.of("msearch")[0].body[1]


def test_bit_pages_float_query_and_hamming_query(fake):
    pages = make_pages(n=4, dim=32)
    idx = es_index("bits")
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[3], m=2)
    hits = idx.search(q, k=4)
    params = fake.of("msearch")[0].body[1]["query"]["script_score"]["script"]["params"]
    assert len(params["query_vector"][0]) == 32 and isinstance(params["query_vector"][0][0], float)
    # scores come back on the local backend's scale: q . sign(d) / sqrt(d)
    signs = torch.where(pages[3].vectors > 0, 1.0, -1.0) / np.sqrt(32)
    want = float((q @ signs.T).max(dim=1).values.sum())
    assert {h.page_id: h.score for h in hits}["p003"] == pytest.approx(want, abs=1e-4)
    ham = ElasticsearchIndex(idx.client, "pages", dtype="bits", hamming=True)
    ham.search(q, k=2)
    script = fake.of("msearch")[1].body[1]["query"]["script_score"]["script"]
    assert script["source"].startswith("maxSimInvHamming(") and len(script["params"]["query_vector"][0]) == 8


def test_incremental_build_reindexes_unchanged_pages_server_side(fake):
    idx = es_index("float32")
    pages = make_pages(n=5)
    idx.swap(idx.build(pages, {}))
    sent_before = len(fake.of("bulk"))
    changed = [PrunedPage("p001", "new-hash", make_pages(n=1, seed=8)[0].vectors, None)]
    v2 = idx.build(changed, {}, reuse=["p002", "p003", "p004"])
    (rx,) = fake.of("reindex")
    assert rx.body == {"source": {"index": "pages-v1", "query": {"ids": {"values": ["p002", "p003", "p004"]}}},
                       "dest": {"index": "pages-v2", "op_type": "create"}}
    new_bulk = fake.of("bulk")[sent_before:]
    assert [b.body[0]["create"]["_id"] for b in new_bulk] == ["p001"]
    assert v2.pages == 4 and v2.vectors == sum(p.vectors.shape[0] for p in pages[2:]) + changed[0].vectors.shape[0]


def test_basic_licence_is_refused_with_a_clear_message_before_anything_is_created(fake):
    fake.license_type = "basic"
    with pytest.raises(ElasticsearchLicenseError) as err:
        es_index().build(make_pages(n=2), {})
    msg = str(err.value)
    assert "basic licence" in msg and "Enterprise" in msg and "trial" in msg and "local backend" in msg
    assert not fake.of("indices.create") and not fake.of("index")


def test_licence_refusal_at_index_creation_is_named(fake, monkeypatch):
    monkeypatch.setattr(fake, "h_license_get", lambda *a: (200, {"license": {"type": "enterprise",
                                                                            "status": "active"}}))
    fake.license_type = "basic"           # what the mapping call sees
    with pytest.raises(ElasticsearchLicenseError, match="Enterprise licence or a trial"):
        es_index().build(make_pages(n=2), {})
    assert fake.of("indices.create") and not fake.indices.get("pages-v1")
    assert "build" not in fake.indices["pages-lock"].docs          # lock released


@pytest.mark.parametrize("step", ElasticsearchIndex.BUILD_STEPS)
def test_failure_at_each_build_step_leaves_the_alias_and_serving_index(fake, step):
    idx = es_index("float32")
    pages = make_pages(n=4)
    idx.swap(idx.build(pages, {}))

    def fail(self, name):
        if name == step:
            raise RuntimeError(f"injected at {name}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ElasticsearchIndex, "_checkpoint", fail)
        with pytest.raises(RuntimeError, match="injected"):
            idx.build(make_pages(n=3, seed=5, prefix="q"), {}, reuse=["p000"])
    assert set(fake.indices) <= {"pages-v1", "pages-lock"} and fake.aliases["pages"] == {"pages-v1"}
    assert "build" not in fake.indices["pages-lock"].docs
    assert idx.search(planted_query(pages[2]), k=1)[0].page_id == "p002"


def test_concurrent_build_refused_and_stale_lock_taken_over(fake):
    idx = es_index()
    status, _ = fake.h_index({"index": "pages-lock", "id": "build"}, {"op_type": "create"},
                             {"pid": 1, "host": "other-host", "started_at": "t", "token": "x"})
    assert status == 201
    with pytest.raises(IndexLockedError, match="other-host"):
        idx.build(make_pages(n=2), {})
    assert not fake.of("indices.create")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake.h_index({"index": "pages-lock", "id": "build"}, {},
                 {"pid": dead.pid, "host": socket.gethostname(), "started_at": "t", "token": "y"})
    assert idx.build(make_pages(n=2), {}).number == 1


def test_credentials_only_from_env_and_never_logged(fake, monkeypatch, caplog):
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://elastic:hunter2@es.example.com:9243")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "c2VjcmV0LWtleQ==")
    with caplog.at_level(logging.DEBUG):
        idx = open_index(IndexConfig(backend="elasticsearch", name="pages", dtype="bits"), "unused")
        idx.swap(idx.build(make_pages(n=2, dim=16), {}))
    assert isinstance(idx, ElasticsearchIndex) and idx.dtype == "bits"
    assert idx.client._headers["authorization"] == "ApiKey c2VjcmV0LWtleQ=="
    node = idx.client.transport.node_pool.all()[0]
    assert node.config.scheme == "https" and node.config.verify_certs is True
    text = caplog.text + repr(idx) + str(idx.stats().as_dict())
    assert "hunter2" not in text and "c2VjcmV0LWtleQ" not in text
    assert redact_url("https://elastic:hunter2@es.example.com:9243") == "https://***@es.example.com:9243"


# ------------------------------------------------------------ version matrix
def _speaks(server: str) -> bool:
    from fake_es import parse_version

    major = parse_version(server)[0]
    return client_version()[0] in (major, major - 1)


@pytest.mark.parametrize(("server", "dtype", "element"), [
    ("8.18.0", "float16", "float"), ("9.0.0", "float16", "float"), ("9.2.0", "float16", "float"),
    ("9.3.0", "float16", "bfloat16"), ("9.4.1", "float16", "bfloat16"),
    ("8.18.0", "bits", "bit"), ("9.3.0", "bits", "bit"), ("8.19.0", "float32", "float"), ("9.3.0", "float32", "float")])
def test_element_type_follows_the_server_version(fake, caplog, server, dtype, element):
    if not _speaks(server):
        pytest.skip(f"client {client_version()} cannot talk to {server} (see test_client_server_mismatch_...)")
    fake.version = server
    with caplog.at_level(logging.WARNING):
        v = es_index(dtype).build(make_pages(n=2, dim=16), {})
    props = fake.of("indices.create")[0].body["mappings"]["properties"]
    assert props["vectors"]["element_type"] == element
    assert v.manifest["element_type"] == element and v.manifest["server_version"] == server
    assert v.manifest["bytes_per_vector"] == {"float": 64, "bfloat16": 32, "bit": 2}[element]
    assert ("no rank_vectors element_type bfloat16" in caplog.text) is (dtype == "float16" and element == "float")


def test_element_type_choice_is_a_plain_function():
    assert [element_type("float16", v) for v in [(8, 18, 0), (9, 2, 9), (9, 3, 0)]] == ["float", "float", "bfloat16"]


def test_client_server_mismatch_is_one_clear_error(fake):
    major = client_version()[0]
    fake.version = "8.19.0" if major >= 9 else "10.0.0"
    with pytest.raises(ElasticsearchVersionError) as err:
        es_index().build(make_pages(n=2), {})
    msg = str(err.value)
    assert "\n" not in msg and f"only talks to {major}.x servers" in msg
    assert ("pip install 'elasticsearch>=8.18,<9'" in msg) if major >= 9 else ("pip install 'elasticsearch>=9.0,<11'"
                                                                                in msg)
    assert not fake.of("indices.create") and [c.endpoint for c in fake.calls] == ["info"]


def test_a_server_older_than_8_18_is_refused(fake):
    fake.version = "8.17.4"
    if not _speaks(fake.version):
        pytest.skip("the installed client cannot talk to 8.x servers")
    with pytest.raises(ElasticsearchVersionError, match=r"8\.17\.4.*need 8\.18 or later"):
        es_index().search(torch.ones(1, 16))


def test_knn_num_candidates_never_exceeds_the_server_limit(fake):
    idx = es_index("float32", two_stage=True, candidates=3)
    idx.swap(idx.build(make_pages(n=4), {}))
    assert len(idx.search(torch.ones(1, 16), k=6000)) == 4             # k above candidates: k = 6000 kNN
    knn = fake.of("msearch")[0].body[1]["retriever"]["rescorer"]["retriever"]["knn"]
    assert knn["k"] == 6000 and knn["num_candidates"] == 10_000          # was max(2c, 100) = 12000: refused
    window = fake.of("msearch")[0].body[1]["retriever"]["rescorer"]["rescore"]["window_size"]
    assert window >= fake.of("msearch")[0].body[1]["size"]
    with pytest.raises(IndexInputError, match=r"above 10000"):
        idx.search(torch.ones(1, 16), k=10_001)
    with pytest.raises(IndexInputError, match=r"candidates=10001 is outside \[1, 10000\].*index.candidates"):
        es_index(candidates=10_001)


def test_config_bounds_index_candidates_by_the_knn_limit():
    from pydantic import ValidationError

    assert IndexConfig(candidates=10_000).candidates == 10_000
    with pytest.raises(ValidationError, match="above 10000, the most kNN candidates"):
        IndexConfig(candidates=10_001)


def test_expired_trial_is_refused_before_anything_is_created(fake):
    fake.license_status = "expired"
    with pytest.raises(ElasticsearchLicenseError, match="trial licence \\(expired\\)"):
        es_index().build(make_pages(n=2), {})
    assert not fake.of("indices.create")


def test_licence_refusals_after_creation_are_named(fake, monkeypatch):
    idx = es_index("float32")
    idx.swap(idx.build(make_pages(n=3), {}))

    def expire(self, step):
        if step == "bulk":
            fake.license_status = "expired"       # the trial runs out between index creation and the bulk

    monkeypatch.setattr(ElasticsearchIndex, "_checkpoint", expire)
    with pytest.raises(ElasticsearchLicenseError, match="Enterprise licence or a trial"):
        es_index("float32").build(make_pages(n=2, seed=4, prefix="q"), {})
    assert set(fake.indices) == {"pages-v1", "pages-lock"}
    with pytest.raises(ElasticsearchLicenseError):
        idx.search(torch.ones(1, 16), k=2)


@pytest.mark.parametrize("server", ["9.0.0", "9.3.0"])
def test_incremental_bit_build_scores_reused_pages_alike(fake, server):
    """On 9.2+ vectors leave _source; _reindex rehydrates bit vectors as signed ints, which score the same."""
    fake.version = server
    pages = make_pages(n=4, dim=16)
    idx = es_index("bits")
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[2], m=2)
    before = {h.page_id: h.score for h in idx.search(q, k=4)}
    idx.swap(idx.build([PrunedPage("p000", "h2", pages[1].vectors, None)], {}, reuse=["p001", "p002", "p003"]))
    stored = fake.indices["pages-v2"].docs["p002"]
    assert ("vectors" in stored.source) is (server < "9.2")
    after = {h.page_id: h.score for h in idx.search(q, k=4)}
    for pid in ("p001", "p002", "p003"):
        assert after[pid] == pytest.approx(before[pid], abs=1e-5)


def test_every_search_body_asks_for_no_source_and_no_unknown_keys(fake):
    idx = es_index("float16", two_stage=True, candidates=3)
    idx.swap(idx.build(make_pages(n=6), {}))
    idx.search_many([torch.ones(2, 16), torch.ones(1, 16)], k=2)
    for c in fake.of("msearch"):
        for body in c.body[1::2]:
            assert body["_source"] is False and set(body) <= {"size", "_source", "retriever", "query"}
    assert source_with_vectors((8, 18, 0)) is True and source_with_vectors((9, 3, 0)) == {"exclude_vectors": False}


def test_score_offset_covers_bfloat16_rounding(fake):
    """bfloat16 rounds a stored value by up to 2^-9 of itself: the offset must cover the grown norm.

    Every component of this page vector rounds *up* by almost 2^-8 (0.25 * (1 + 1.01 / 256) -> 0.25 * (1 + 1 / 128)),
    so ``q = -d`` scores below ``-|d| * 1.001``: the old margin made the script score negative and the server
    refuse the search ([2] ScriptScoreQuery).
    """
    a = 0.25 * (1 + 1.01 / 256)
    d = torch.full((1, 16), a)
    idx = es_index("float16")
    idx.swap(idx.build([PrunedPage("p", "h", d, None)], {}))
    assert fake.indices["pages-v1"].mappings["properties"]["vectors"]["element_type"] == "bfloat16"
    (hit,) = idx.search(-d / d.norm(), k=1)
    assert hit.score == pytest.approx(-4 * 0.25 * (1 + 1 / 128), abs=1e-5)


# ------------------------------------------------------------ first stages
FS_PARAMS = {"k_sim": 3, "d_proj": 8, "reps": 4, "seed": 7}


def test_muvera_body_is_knn_on_the_fde_field_rescored_exactly(fake):
    from anchorprune.index.first_stage import make_first_stage

    idx = es_index("float32", first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    pages = make_pages(n=12)
    idx.swap(idx.build(pages, {}))
    (create,) = fake.of("indices.create")
    assert create.body["mappings"]["properties"]["fde"] == {
        "type": "dense_vector", "dims": 256, "index": True, "similarity": "max_inner_product",
        "index_options": {"type": "hnsw"}}
    doc = fake.indices["pages-v1"].docs["p003"]
    enc = make_first_stage("muvera", 16, FS_PARAMS)
    np.testing.assert_allclose(doc.vectors["fde"], enc.encode_document(pages[3].vectors.numpy()), rtol=1e-6)
    q = planted_query(pages[5], m=3)
    hits, report = idx.search_report([q], k=2)
    assert hits[0][0].page_id == "p005" and (report.first_stage, report.candidates) == ("muvera", 4)
    r = fake.of("msearch")[-1].body[1]["retriever"]["rescorer"]
    knn = r["retriever"]["knn"]
    assert knn["field"] == "fde" and knn["k"] == 4 and knn["num_candidates"] == 100
    np.testing.assert_allclose(knn["query_vector"], enc.encode_query(q.numpy()), rtol=1e-6)
    assert r["rescore"]["window_size"] == 4 and r["rescore"]["query"]["query_weight"] == 0.0


def test_fde_dims_above_the_dense_vector_limit_are_refused_before_anything_exists(fake):
    with pytest.raises(IndexInputError, match="8192 dims, above Elasticsearch's dense_vector limit of 4096"):
        es_index(first_stage="muvera", first_stage_params={"k_sim": 4, "d_proj": 16, "reps": 32})
    # without an inner projection the dims depend on d: refused at build, before the index is created
    idx = es_index("float32", first_stage="muvera", first_stage_params={"k_sim": 8, "d_proj": None, "reps": 2})
    with pytest.raises(IndexInputError, match="8192 dims"):
        idx.build(make_pages(n=3), {})                                          # 2 * 256 * 16 = 8192
    assert not fake.of("indices.create") and not [n for n in fake.indices if n.startswith("pages-v")]
    assert IndexConfig(first_stage="muvera", muvera={"reps": 32}).muvera.reps == 32      # local: no limit


def test_a_query_encoder_with_other_matrices_is_refused(fake, monkeypatch):
    from anchorprune.index import first_stage as fs_mod
    from anchorprune.index.elasticsearch import FirstStageMismatchError

    idx = es_index("float32", first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    pages = make_pages(n=12)
    idx.swap(idx.build(pages, {}))
    real = fs_mod.MuveraFirstStage.create.__func__

    def other_numpy(cls, dim, seed=0, **kw):       # the same seed drawing other numbers (another numpy release)
        return real(cls, dim, seed=seed + 1, **kw)

    monkeypatch.setattr(fs_mod.MuveraFirstStage, "create", classmethod(other_numpy))
    fresh = es_index("float32", first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    with pytest.raises(FirstStageMismatchError, match=r"pages-v1 was built with MUVERA FDEs .*seed 7.*differ"):
        fresh.search(planted_query(pages[1]), k=2)


def test_reuse_copies_fdes_server_side_from_a_version_with_the_same_first_stage(fake):
    pages = make_pages(n=10)
    idx = es_index("float32", first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    idx.swap(idx.build(pages, {}))                                        # v1: every page, with FDEs
    v2 = idx.build(pages[:2], {}, reuse=[p.page_id for p in pages[2:]])   # v2: 8 pages copied by _reindex
    assert len(fake.of("reindex")) == 1
    docs1, docs2 = fake.indices["pages-v1"].docs, fake.indices["pages-v2"].docs
    assert all(np.array_equal(docs2[i].vectors["fde"], docs1[i].vectors["fde"]) for i in docs1)
    idx.swap(v2)
    q = planted_query(pages[7], m=3)
    assert idx.search(q, k=3)[0].page_id == "p007"


@pytest.mark.parametrize("version", ["8.18.0", "9.3.0"])       # vectors kept in _source / rehydrated (9.2+)
@pytest.mark.parametrize("dtype", ["float16", "bits"])
def test_reuse_from_a_version_without_matching_fdes_resends_the_pages_with_new_ones(monkeypatch, version, dtype):
    """A switch to muvera (or new MUVERA params) with an incremental rebuild: _reindex would copy pages without
    (matching) FDEs, so the reused pages are read back and re-sent with the FDE of their stored vectors."""
    fake = install(monkeypatch, FakeES(version=version))
    pages = make_pages(n=10, dim=32)
    reuse = [p.page_id for p in pages[2:]]
    old = es_index(dtype, first_stage="mean", candidates=4)
    old.swap(old.build(pages, {}))
    idx = es_index(dtype, first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    v2 = idx.build(pages[:2], {}, reuse=reuse)
    assert not fake.of("reindex") and v2.pages == 10 and v2.manifest["first_stage"]["name"] == "muvera"
    idx.swap(v2)
    fresh = es_index(dtype, first_stage="muvera", first_stage_params=FS_PARAMS, candidates=4)
    v3 = fresh.build(pages, {})
    docs2, docs3 = fake.indices["pages-v2"].docs, fake.indices[f"pages-v{v3.number}"].docs
    for i in docs3:       # every page: the same stored vectors, mean and FDE as a build that sent it afresh
        for f in ("vectors", "mean_vector", "fde"):
            np.testing.assert_allclose(docs2[i].vectors[f], docs3[i].vectors[f], rtol=1e-6, atol=1e-7, err_msg=(i, f))
        assert docs2[i].source["content_hash"] == docs3[i].source["content_hash"]
    q = planted_query(pages[7], m=3)
    assert idx.search(q, k=3)[0].page_id == "p007"


def test_quantised_knn_still_returns_exact_maxsim_scores(fake):
    """int8_hnsw kNN scores are approximate; the rescored hits still carry the exact MaxSim."""
    from index_helpers import brute_maxsim

    idx = es_index("float32", first_stage="muvera", first_stage_params=FS_PARAMS, candidates=6,
                   knn_index_options="int8_hnsw")
    pages = make_pages(n=20)
    v = idx.build(pages, {})
    idx.swap(v)
    assert v.manifest["first_stage"]["index_options"] == "int8_hnsw"
    q = planted_query(pages[11], m=3)
    hits = idx.search(q, k=3)
    by_id = {p.page_id: p for p in pages}
    assert hits[0].page_id == "p011"
    assert all(h.score == pytest.approx(brute_maxsim(q, by_id[h.page_id].vectors), abs=1e-4) for h in hits)
    with pytest.raises(IndexInputError, match="knn_index_options 'pq' is not one of"):
        es_index(knn_index_options="pq")


def test_open_index_passes_the_first_stage_to_elasticsearch(fake, monkeypatch):
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://localhost:9200")
    idx = open_index(IndexConfig(backend="elasticsearch", first_stage="auto", first_stage_threshold=500, first_stage_auto="muvera",
                                 muvera={"k_sim": 3, "d_proj": 8, "reps": 4}), "/nonexistent")
    assert (idx.first_stage, idx.first_stage_threshold, idx.first_stage_auto) == ("auto", 500, "muvera")
    assert idx.first_stage_params["reps"] == 4


# ---------------------------------------------------------------- first stage token_ivf
TOKEN_PARAMS = {"centroids": None, "nprobe": 8, "iters": 8, "seed": 0}      # local-only: Elasticsearch ignores them


def token_index(dtype="float32", **kw) -> ElasticsearchIndex:
    return es_index(dtype, first_stage="token_ivf", first_stage_params=TOKEN_PARAMS, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bits"])
def test_token_ivf_maps_one_nested_vector_per_stored_page_vector(fake, dtype):
    from anchorprune.index import quantize

    pages = make_pages(n=6, dim=16)
    v = token_index(dtype).build(pages, {})
    props = fake.of("indices.create")[0].body["mappings"]["properties"]
    assert props["tokens"] == {"type": "nested", "properties": {"vector": {
        "type": "dense_vector", "dims": 16, "index": True, "similarity": "max_inner_product",
        "index_options": {"type": "hnsw"}}}}
    assert "fde" not in props
    assert {k: v.manifest["first_stage"][k] for k in ("name", "params", "field", "similarity", "index_options")} == {
        "name": "token_ivf", "params": {}, "field": "tokens.vector", "similarity": "max_inner_product",
        "index_options": "hnsw"}
    stored_as = {"float32": "float32", "float16": "bfloat16", "bits": "bits"}[dtype]      # the 9.3 double
    for p in pages:           # the vectors as the server stores them: bfloat16-rounded, or ±1/sqrt(d) for bits
        want = quantize.decode(quantize.encode(p.vectors.numpy(), stored_as), stored_as, 16)      # [k, d]
        np.testing.assert_array_equal(fake.indices["pages-v1"].docs[p.page_id].vectors["tokens.vector"], want)


def test_token_ivf_body_is_one_nested_knn_per_query_token_rescored_exactly(fake):
    from index_helpers import brute_maxsim

    from anchorprune.index.elasticsearch import num_candidates

    idx = token_index(candidates=5)
    pages = make_pages(n=20)
    idx.swap(idx.build(pages, {}))
    q = planted_query(pages[9], m=3)
    hits, report = idx.search_report([q], k=3)
    assert (report.first_stage, report.candidates) == ("token_ivf", 5)
    r = fake.of("msearch")[-1].body[1]["retriever"]["rescorer"]
    should = r["retriever"]["standard"]["query"]["bool"]["should"]
    assert len(should) == 3
    for row, clause in zip(q.tolist(), should, strict=True):
        nested = clause["nested"]
        assert (nested["path"], nested["score_mode"]) == ("tokens", "max")
        knn = nested["query"]["knn"]
        assert (knn["field"], knn["k"], knn["num_candidates"]) == ("tokens.vector", 5, num_candidates(5))
        np.testing.assert_allclose(knn["query_vector"], row, rtol=1e-7)
    assert r["rescore"]["window_size"] == 5 and r["rescore"]["query"]["query_weight"] == 0.0
    by_id = {p.page_id: p for p in pages}
    assert hits[0][0].page_id == "p009"
    assert all(h.score == pytest.approx(brute_maxsim(q, by_id[h.page_id].vectors), abs=1e-4) for h in hits[0])


def test_a_page_whose_one_token_matches_one_query_token_is_a_candidate(fake):
    """The point of a token-level first stage: a page that matches a single query token strongly, with a
    mean far from the query's, is handed on (the mean first stage drops it)."""
    g = torch.Generator().manual_seed(5)
    pages = make_pages(n=40, dim=16, seed=2)
    q = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)             # [m=4, d]
    # the needle: q[2] itself, plus 7 vectors pointing away from the query's mean
    away = torch.nn.functional.normalize(-q.mean(0, keepdim=True) + 0.3 * torch.randn(7, 16, generator=g), dim=1)
    needle = PrunedPage("needle", "h", torch.cat([q[2:3], away]), None)
    for stage, found in (("token_ivf", True), ("mean", False)):
        idx = ElasticsearchIndex(Elasticsearch("http://localhost:9200"), f"pages-{stage.replace('_', '')}",
                                 dtype="float32", first_stage=stage, candidates=4)
        idx.swap(idx.build([*pages, needle], {}))
        hits = idx.search(q, k=4)                            # k = candidates: every candidate comes back
        assert ("needle" in {h.page_id for h in hits}) is found, (stage, hits)


def test_token_ivf_ignores_local_params_and_refuses_pages_above_the_nested_limit(fake):
    idx = token_index()
    assert idx.first_stage == "token_ivf" and idx.first_stage_params == TOKEN_PARAMS
    big = PrunedPage("big", "h", torch.nn.functional.normalize(torch.randn(10_001, 16), dim=1), None)
    with pytest.raises(IndexInputError, match="10001 vectors, above Elasticsearch's index.mapping.nested_objects"):
        idx.build([*make_pages(n=2), big], {})
    assert not [n for n in fake.indices if n.startswith("pages-v")]


def test_a_version_without_token_vectors_falls_back_with_a_warning(fake, caplog):
    pages = make_pages(n=12)
    old = es_index("float32", first_stage="mean", candidates=4)
    old.swap(old.build(pages, {}))
    with caplog.at_level(logging.WARNING):
        hits, report = token_index(candidates=4).search_report([planted_query(pages[3], m=3)], k=2)
    assert report.first_stage == "mean" and hits[0][0].page_id == "p003"
    assert "'token_ivf' asked for, but the serving v1 was built without token_ivf token vectors; using mean" in caplog.text
    assert "knn" in fake.of("msearch")[-1].body[1]["retriever"]["rescorer"]["retriever"]


@pytest.mark.parametrize("version", ["8.18.0", "9.3.0"])       # vectors kept in _source / rehydrated (9.2+)
@pytest.mark.parametrize("dtype", ["float16", "bits"])
def test_an_incremental_rebuild_onto_token_ivf_resends_the_reused_pages_with_tokens(monkeypatch, version, dtype):
    """mean -> token_ivf: _reindex would copy pages without nested tokens, so they are re-sent with the tokens of
    their stored vectors; token_ivf -> token_ivf copies server-side; token_ivf -> mean drops the tokens (the new
    strict mapping has no such field)."""
    fake = install(monkeypatch, FakeES(version=version))
    pages = make_pages(n=10, dim=32)
    reuse = [p.page_id for p in pages[2:]]
    old = es_index(dtype, first_stage="mean", candidates=4)
    old.swap(old.build(pages, {}))
    idx = token_index(dtype, candidates=4)
    v2 = idx.build(pages[:2], {}, reuse=reuse)
    assert not fake.of("reindex") and v2.pages == 10 and v2.manifest["first_stage"]["name"] == "token_ivf"
    idx.swap(v2)
    fresh = token_index(dtype, candidates=4)
    v3 = fresh.build(pages, {})                                   # every page sent afresh
    docs2, docs3 = fake.indices["pages-v2"].docs, fake.indices[f"pages-v{v3.number}"].docs
    for i in docs3:
        for f in ("vectors", "mean_vector", "tokens.vector"):
            np.testing.assert_allclose(docs2[i].vectors[f], docs3[i].vectors[f], rtol=1e-6, atol=1e-7, err_msg=(i, f))
    assert idx.search(planted_query(pages[7], m=3), k=3)[0].page_id == "p007"
    v4 = idx.build(pages[:2], {}, reuse=reuse)                    # token_ivf -> token_ivf: server-side copy
    assert len(fake.of("reindex")) == 1
    docs4 = fake.indices[f"pages-v{v4.number}"].docs
    assert all(np.array_equal(docs4[i].vectors["tokens.vector"], docs2[i].vectors["tokens.vector"]) for i in reuse)
    idx.swap(v4)
    back = es_index(dtype, first_stage="mean", candidates=4)
    v5 = back.build(pages[:2], {}, reuse=reuse)                   # token_ivf -> mean: re-sent without tokens
    assert all("tokens.vector" not in d.vectors for d in fake.indices[f"pages-v{v5.number}"].docs.values())
