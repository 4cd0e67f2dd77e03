"""The ``make_index`` fixture: fresh, empty indexes of each backend (contract and lifecycle tests share it).

Imported by name (``make_index = index_fixtures.make_index``), not a second ``conftest.py``: with
``--doctest-modules`` two ``conftest`` modules in one run collide ("import file mismatch").
"""

from __future__ import annotations

import os
import uuid

import pytest
from fake_es import VERSIONS

from anchorprune.index import LocalIndex

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

    def factory(dtype: str = "float32", two_stage: bool = False, candidates: int = 100, *,
                first_stage: str | None = None, first_stage_params: dict | None = None,
                first_stage_threshold: int | None = None, first_stage_auto: str = "token_ivf",
                reopen: object = None):
        """A fresh index, or (``reopen=<an index this factory made>``) a second handle on the same one."""
        fs = {"first_stage": first_stage, "first_stage_params": first_stage_params,
              "first_stage_threshold": first_stage_threshold, "first_stage_auto": first_stage_auto}
        if request.param == "local":
            name = reopen.name if reopen is not None else f"t-{len(made)}"
            return LocalIndex(tmp_path / "indexes", name, dtype=dtype, two_stage=two_stage,
                              candidates=candidates, **fs)
        if recorded:
            name = reopen.name if reopen is not None else f"t-{len(made)}"
            return ElasticsearchIndex(Elasticsearch("http://localhost:9200"), name, dtype=dtype,
                                      two_stage=two_stage, candidates=candidates, **fs)

        name = reopen.name if reopen is not None else f"anchorprune-test-{uuid.uuid4().hex[:8]}"
        idx = ElasticsearchIndex.from_env(name, dtype=dtype, two_stage=two_stage, candidates=candidates, **fs)
        if reopen is None:
            made.append(idx)
        return idx

    yield factory
    for idx in made:
        idx.drop_all()
