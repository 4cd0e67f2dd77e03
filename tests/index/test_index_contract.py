"""One contract, both backends: build aside, swap, search, incremental rebuild, rollback, prune.

Runs against: the local backend; the Elasticsearch backend over the strict in-memory double
(``fake_es``, always, at server versions 8.18, 9.0, 9.2 and 9.3); and the Elasticsearch backend against a live cluster with an
Enterprise or trial licence at ``ELASTICSEARCH_URL`` (see .github/workflows/elasticsearch.yml),
skipped when that variable is unset.
"""

from __future__ import annotations

import os
import uuid

import pytest
import torch
from fake_es import VERSIONS
from index_helpers import brute_maxsim, make_pages, planted_query, unit

from anchorprune.index import IndexInputError, LocalIndex, NoServingVersionError, VersionNotFoundError
from anchorprune.pruning.base import PrunedPage

ES_URL = os.environ.get("ELASTICSEARCH_URL")

#: the strict double at every server version of the matrix (8.18, 9.0, 9.2, 9.3)
FAKE_VERSIONS = VERSIONS

BACKENDS = [
    "local",
    *[f"es-fake-{v}" for v in FAKE_VERSIONS],
    pytest.param("elasticsearch", marks=[
        pytest.mark.elasticsearch,
        pytest.mark.skipif(not ES_URL, reason="ELASTICSEARCH_URL is not set (no live Elasticsearch to test against)"),
    ]),
]


@pytest.fixture(params=BACKENDS)
def make_index(request, tmp_path, monkeypatch):
    """A factory of fresh, empty indexes of the parametrised backend."""
    from anchorprune.index.elasticsearch import ElasticsearchIndex

    made = []
    recorded = request.param.startswith("es-fake-")
    if recorded:
        from elasticsearch import Elasticsearch
        from fake_es import FakeES, install, parse_version

        from anchorprune.index.elasticsearch import client_install_hint, client_version

        server = request.param.removeprefix("es-fake-")
        if client_version()[0] not in (parse_version(server)[0], parse_version(server)[0] - 1):
            pytest.skip(f"the installed elasticsearch client {client_version()} cannot talk to a {server} server "
                        f"(test_es_requests checks the error); {client_install_hint(parse_version(server)[0])}")
        install(monkeypatch, FakeES(version=server))

    def factory(dtype: str = "float32", two_stage: bool = False, candidates: int = 100):
        if request.param == "local":
            return LocalIndex(tmp_path / "indexes", f"t-{len(made)}", dtype=dtype, two_stage=two_stage,
                              candidates=candidates)
        if recorded:
            return ElasticsearchIndex(Elasticsearch("http://localhost:9200"), f"t-{len(made)}", dtype=dtype,
                                      two_stage=two_stage, candidates=candidates, exact_max_pages=0)

        idx = ElasticsearchIndex.from_env(f"anchorprune-test-{uuid.uuid4().hex[:8]}", dtype=dtype,
                                          two_stage=two_stage, candidates=candidates, exact_max_pages=0)
        made.append(idx)
        return idx

    yield factory
    for idx in made:
        idx.drop_all()


def test_build_does_not_serve_until_swap(make_index):
    idx = make_index()
    pages = make_pages()
    v = idx.build(pages, {"config_hash": "c1"})
    assert v.number == 1 and v.pages == len(pages) and v.vectors == sum(p.vectors.shape[0] for p in pages)
    assert idx.current() is None
    with pytest.raises(NoServingVersionError, match="no serving version"):
        idx.search(planted_query(pages[0]), k=3)
    idx.swap(v)
    assert idx.current().number == 1
    assert idx.current().manifest["meta"]["config_hash"] == "c1"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bits"])
def test_planted_page_ranks_first(make_index, dtype):
    idx = make_index(dtype)
    pages = make_pages(dim=32)
    idx.swap(idx.build(pages, {}))
    for j in (0, 5, 11):
        hits = idx.search(planted_query(pages[j]), k=3)
        assert len(hits) == 3 and hits[0].page_id == pages[j].page_id
        assert hits[0].score >= hits[1].score >= hits[2].score


def test_exact_scores_equal_brute_force_maxsim(make_index):
    idx = make_index("float32")
    pages = make_pages()
    idx.swap(idx.build(pages, {}))
    q = unit(torch.randn(4, 16, generator=torch.Generator().manual_seed(7)))
    hits = idx.search(q, k=len(pages))
    assert {h.page_id for h in hits} == {p.page_id for p in pages}
    want = {p.page_id: brute_maxsim(q, p.vectors) for p in pages}
    for h in hits:
        assert h.score == pytest.approx(want[h.page_id], abs=1e-4)


def test_search_many_matches_single_searches(make_index):
    idx = make_index("float16")
    pages = make_pages()
    idx.swap(idx.build(pages, {}))
    qs = [planted_query(pages[j], m=2 + j % 3, seed=j) for j in range(4)]
    many = idx.search_many(qs, k=5)
    for q, hits in zip(qs, many, strict=True):
        single = idx.search(q, k=5)
        assert [h.page_id for h in hits] == [h.page_id for h in single]


def test_two_stage_agrees_with_exact_on_planted_queries(make_index):
    idx = make_index("float32", two_stage=True, candidates=4)
    pages = make_pages(n=20, dim=32)
    idx.swap(idx.build(pages, {}))
    for j in range(0, 20, 3):
        q = planted_query(pages[j], m=4)
        assert idx.search(q, k=1)[0].page_id == pages[j].page_id


def test_incremental_rebuild_reuses_unchanged_and_drops_removed(make_index):
    idx = make_index("float32")
    pages = make_pages(n=10)
    idx.swap(idx.build(pages, {"data_version": "d1"}))
    assert idx.existing_hashes() == {p.page_id: p.content_hash for p in pages}

    # new corpus: p000 removed, p001 changed, p010 added, the rest unchanged
    changed = make_pages(n=2, seed=99, version="b")[1:]
    changed = [PrunedPage("p001", "hash-p001-b", changed[0].vectors, None)]
    added = [PrunedPage("p010", "hash-p010-a", make_pages(n=1, seed=5)[0].vectors, None)]
    existing = idx.existing_hashes()
    keep = [p.page_id for p in pages[2:] if existing[p.page_id] == p.content_hash]
    v2 = idx.build(changed + added, {"data_version": "d2"}, reuse=keep)
    assert v2.pages == 10
    assert idx.current().number == 1              # built, not yet serving
    idx.swap(v2)
    hashes = idx.existing_hashes()
    assert "p000" not in hashes and hashes["p001"] == "hash-p001-b" and "p010" in hashes
    assert all(hashes[p.page_id] == p.content_hash for p in pages[2:])
    # reused pages score exactly as before; the changed page scores with its new vectors
    q = planted_query(pages[4])
    top = idx.search(q, k=1)[0]
    assert top.page_id == "p004" and top.score == pytest.approx(brute_maxsim(q, pages[4].vectors), abs=1e-4)
    q1 = planted_query(changed[0])
    assert idx.search(q1, k=1)[0].page_id == "p001"
    assert all(h.page_id != "p000" for h in idx.search(planted_query(pages[0]), k=10))


def test_rollback_delete_and_prune(make_index):
    idx = make_index("float16")
    gens = [make_pages(n=6, seed=s, prefix=f"g{s}-") for s in range(4)]
    numbers = []
    for g in gens:
        v = idx.build(g, {})
        idx.swap(v)
        numbers.append(v.number)
    assert [v.number for v in idx.versions()] == numbers
    rolled = idx.rollback()
    assert rolled.number == numbers[2] and idx.current().number == numbers[2]
    assert idx.search(planted_query(gens[2][0]), k=1)[0].page_id == gens[2][0].page_id
    with pytest.raises(Exception, match="serving"):
        idx.delete_version(numbers[2])
    deleted = idx.prune_versions(keep=2)
    assert sorted(deleted) == [numbers[0], numbers[3]]
    assert [v.number for v in idx.versions()] == numbers[1:3]
    idx.delete_version(numbers[1])
    with pytest.raises(VersionNotFoundError):
        idx.rollback()
    assert idx.current().number == numbers[2]


@pytest.mark.parametrize("bad", ["nan", "dim"])
def test_bad_vectors_rejected_before_anything_is_written(make_index, bad):
    idx = make_index("float32")
    pages = make_pages(n=5)
    idx.swap(idx.build(pages, {}))
    before = [v.number for v in idx.versions()]
    vecs = pages[3].vectors.clone()
    if bad == "nan":
        vecs[1, 2] = float("nan")
    else:
        vecs = torch.zeros(vecs.shape[0], 8)
    broken = pages[:3] + [PrunedPage("p003", "hash-x", vecs, None)] + pages[4:]
    with pytest.raises(IndexInputError, match="p003"):
        idx.build(broken, {})
    assert [v.number for v in idx.versions()] == before and idx.current().number == before[-1]
    assert idx.search(planted_query(pages[3]), k=1)[0].page_id == "p003"


def test_stats_describe_the_serving_version(make_index):
    idx = make_index("bits")
    pages = make_pages(dim=32)
    v = idx.build(pages, {"model": "m", "model_version": "3"})
    idx.swap(v)
    s = idx.stats()
    assert s.current.number == v.number and s.current.pages == len(pages) and s.dtype == "bits"
    assert s.as_dict()["current"]["meta"]["model_version"] == "3"
    assert s.bytes_per_page > 0
