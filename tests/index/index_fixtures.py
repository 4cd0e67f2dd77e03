"""The ``make_index`` fixture: fresh, empty indexes of each backend (contract and lifecycle tests share it).

Imported by name (``from index_fixtures import make_index``), not a second ``conftest.py``: with
``--doctest-modules`` two ``conftest`` modules in one run collide ("import file mismatch").
"""

from __future__ import annotations

import os
import uuid

import pytest

from anchorprune.index import LocalIndex

ES_URL = os.environ.get("ELASTICSEARCH_URL")

BACKENDS = [
    "local",
    "es-recorded",
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
    if request.param == "es-recorded":
        from elasticsearch import Elasticsearch
        from fake_es import FakeES

        fake = FakeES()
        monkeypatch.setattr(Elasticsearch, "perform_request",
                            lambda self, method, path, **kw: fake.perform_request(self, method, path, **kw))

    def factory(dtype: str = "float32", two_stage: bool = False, candidates: int = 100):
        if request.param == "local":
            return LocalIndex(tmp_path / "indexes", f"t-{len(made)}", dtype=dtype, two_stage=two_stage,
                              candidates=candidates)
        if request.param == "es-recorded":
            return ElasticsearchIndex(Elasticsearch("http://localhost:9200"), f"t-{len(made)}", dtype=dtype,
                                      two_stage=two_stage, candidates=candidates, exact_max_pages=0)

        idx = ElasticsearchIndex.from_env(f"anchorprune-test-{uuid.uuid4().hex[:8]}", dtype=dtype,
                                          two_stage=two_stage, candidates=candidates, exact_max_pages=0)
        made.append(idx)
        return idx

    yield factory
    for idx in made:
        idx.drop_all()
