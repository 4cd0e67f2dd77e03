"""The Elasticsearch backend: one index per version behind an alias, swapped in one ``update_aliases`` call.

The package keeps requests, storage and scoring only; search planning, the first-stage policy and the
life cycle are :class:`~anchorprune.index.facade.VersionedIndex`'s, the same as the local backend's.

- :mod:`~anchorprune.index.elasticsearch.server`: server version, licence, client compatibility
- :mod:`~anchorprune.index.elasticsearch.mapping`: a version's mapping and page documents
- :mod:`~anchorprune.index.elasticsearch.query`: MaxSim script, first-stage retrievers, scores mapped back
- :mod:`~anchorprune.index.elasticsearch.store`: versions, alias, manifest, lock
  (:class:`~anchorprune.index.lifecycle.Store`)
- :mod:`~anchorprune.index.elasticsearch.build`: creating, filling and verifying a version

Credentials come only from the environment (``ELASTICSEARCH_URL``, ``ELASTICSEARCH_API_KEY``); TLS
certificates are verified unless the URL is plain http.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from anchorprune.evaluation.bf16 import ComputePath
from anchorprune.index.base import Hit, IndexInputError, IndexStoreError, NoServingVersionError
from anchorprune.index.elasticsearch.build import ElasticsearchBuild
from anchorprune.index.elasticsearch.mapping import KNN_INDEX_OPTIONS, norm_bound
from anchorprune.index.elasticsearch.query import (
    FirstStageMismatchError,
    num_candidates,
    query_body,
    score_back,
)
from anchorprune.index.elasticsearch.server import (
    ElasticsearchLicenseError,
    ElasticsearchVersionError,
    ServerConnection,
    ServerInfo,
    check_client_server,
    client_install_hint,
    client_version,
    element_type,
    is_license_refusal,
    redact_url,
    source_with_vectors,
)
from anchorprune.index.elasticsearch.store import ElasticsearchStore
from anchorprune.index.facade import SearchPlan, Serving, VersionedIndex
from anchorprune.index.first_stage import FirstStage, MuveraFirstStage, make_first_stage
from anchorprune.index.lifecycle import Lifecycle
from anchorprune.limits import (
    ES_INDEX_NAME,
    KNN_MAX_CANDIDATES,
    candidates_problem,
    check_index_name,
    muvera_dims,
)

__all__ = [
    "ElasticsearchIndex", "ElasticsearchLicenseError", "ElasticsearchVersionError", "FirstStageMismatchError",
    "ServerInfo", "check_client_server", "client_install_hint", "client_version", "element_type",
    "num_candidates", "redact_url", "source_with_vectors",
]


class ElasticsearchIndex(ElasticsearchBuild, ElasticsearchStore, ServerConnection, VersionedIndex):
    """The :class:`~anchorprune.index.base.Index` contract on Elasticsearch (see the module docstring).

    Parameters
    ----------
    client
        An ``elasticsearch.Elasticsearch`` client (:meth:`from_env` builds one).
    alias
        The alias searches go to; versions are ``<alias>-v<N>``.
    dtype
        ``float32`` -> ``float``, ``float16`` -> ``bfloat16`` (9.3+; ``float`` before), ``bits`` -> ``bit``.
    two_stage, candidates
        kNN + rescore when a first stage answers (:func:`~anchorprune.index.facade.plan_search`), exact
        otherwise. ``candidates`` is at most 10,000 (the server's ``num_candidates`` limit).
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

    def __init__(self, client: Any, alias: str, dtype: str = "float16", two_stage: bool = False,
                 candidates: int = 100, replicas: int = 1,
                 chunk_pages: int | None = None, max_chunk_bytes: int = 32 * 1024 * 1024, max_retries: int = 5,
                 hamming: bool = False, where: str = "Elasticsearch", lock_lease_s: float = 600.0,
                 first_stage: str | None = None, first_stage_params: dict[str, Any] | None = None,
                 first_stage_threshold: int | None = None, first_stage_auto: str = "token_ivf",
                 knn_index_options: str = "hnsw"):
        try:
            check_index_name(alias, ES_INDEX_NAME, "Elasticsearch alias")
        except ValueError as exc:
            raise IndexInputError(str(exc)) from None
        problem = candidates_problem(candidates)
        if problem:
            raise IndexInputError(problem)
        self._configure(alias, dtype, two_stage, candidates, first_stage, first_stage_params, first_stage_threshold,
                        first_stage_auto)
        self.client = client
        if self.built_stage == "muvera":
            self._check_fde_dims(muvera_dims(None, self.first_stage_params))
        if knn_index_options not in KNN_INDEX_OPTIONS:
            raise IndexInputError(f"knn_index_options {knn_index_options!r} is not one of {', '.join(KNN_INDEX_OPTIONS)}")
        self.knn_index_options = knn_index_options
        self._encoders: dict[str, FirstStage] = {}
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
        self.what = f"Elasticsearch index {alias!r} at {where}"
        self.life = Lifecycle(self, self.what, lease_s=lock_lease_s)

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

    def damaged_pages(self, page_ids: Iterable[str]) -> list[str]:
        """Always empty: Elasticsearch checksums its own segment files (and refuses to open damaged ones)."""
        return []

    def drop_all(self) -> None:
        """Delete every version and the lock index of this alias (tests, teardown)."""
        for n in self._all_versions():
            self.client.indices.delete(index=self.index_name(n), ignore_unavailable=True)
        self.client.indices.delete(index=self.lock_index, ignore_unavailable=True)

    # ------------------------------------------------------------ search (planned in facade.py)
    def _serving(self) -> Serving:
        n = self._serving_number()
        if n is None:
            raise NoServingVersionError(f"alias {self.name!r} has no serving version yet: run `anchorprune index "
                                        "build` (or build() then swap())")
        man = self._manifest(n)
        # versions built before first stages were recorded all carry mean_vector
        built = (man.get("first_stage") or {"name": "mean"}).get("name")
        return Serving(n, int(man["pages"]), int(man["dim"]), built, man)

    def _search_exact(self, sv: Serving, qs: list[torch.Tensor], k: int,
                      plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        return self._msearch(sv, qs, k, plan, None), None

    def _search_candidates(self, sv: Serving, qs: list[torch.Tensor], k: int,
                           plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        if k > KNN_MAX_CANDIDATES:
            raise IndexInputError(f"k={k} is above {KNN_MAX_CANDIDATES}, the most a two-stage (kNN) search can "
                                  "return; ask for fewer hits")
        record = sv.handle.get("first_stage") or {"name": "mean", "params": {}}
        if record.get("name") != plan.stage:
            record = {"name": plan.stage, "params": {}}
        encoder = None if plan.stage == "token_ivf" else self.query_encoder(sv.number, record, sv.dim)
        return self._msearch(sv, qs, k, plan, encoder), None

    def _msearch(self, sv: Serving, qs: list[torch.Tensor], k: int, plan: SearchPlan,
                 encoder: FirstStage | None) -> list[list[Hit]]:
        """One ``msearch`` request for all queries; hits on the local backend's score scale."""
        man = sv.handle
        dtype, norm = man["dtype"], norm_bound(float(man.get("page_norm_max", 1.0)), man.get("element_type", "float"))
        iname = self.index_name(sv.number)
        searches: list[dict[str, Any]] = []
        for q in qs:
            body = query_body(q, k, plan.exact, dtype, self.hamming, self.candidates, norm, encoder, plan.stage)
            body["_source"] = body.pop("source")
            searches += [{"index": iname}, body]
        resp = dict(self.client.msearch(searches=searches))
        out = []
        for q, r in zip(qs, resp["responses"], strict=True):
            if "error" in r:
                if is_license_refusal(r.get("status"), r):
                    raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors"))
                raise IndexStoreError(f"search on {iname} failed: {r['error']}")
            hits = [Hit(h["_id"], score_back(float(h["_score"]), q, dtype, sv.dim, norm, self.hamming))
                    for h in r["hits"]["hits"]]
            out.append(sorted(hits, key=lambda h: (-h.score, h.page_id)))     # ties by page id, as the metrics
        return out
