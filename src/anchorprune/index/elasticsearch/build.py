"""Building an Elasticsearch version: a new index ``<alias>-v<N>`` filled, checked and marked complete.

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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

import anchorprune.index.quantize as quantize
from anchorprune.index.base import (
    NO_PAGES,
    CorruptVersionError,
    IndexInputError,
    IndexVersion,
    check_meta,
    check_pages_up_front,
    check_reuse,
    now_iso,
    validated_pages,
)
from anchorprune.index.elasticsearch.mapping import (
    FDE_FIELD,
    FIRST_STAGE_FIELDS,
    FORMAT,
    META_KEY,
    REINDEX_BATCH,
    STORED_AS,
    TOKENS_FIELD,
    VECTORS_FIELD,
    build_settings,
    mapping,
    norm_bound,
    page_document,
    stage_field,
    stored_fde,
    stored_tokens,
)
from anchorprune.index.elasticsearch.query import query_body
from anchorprune.index.elasticsearch.server import (
    ELEMENT_BYTES,
    ElasticsearchLicenseError,
    IndexStoreError,
    is_license_refusal,
    source_with_vectors,
)
from anchorprune.index.first_stage import MuveraFirstStage, make_first_stage, stage_record
from anchorprune.limits import fde_dims_problem, muvera_dims
from anchorprune.pruning.base import PrunedPage

log = logging.getLogger(__name__)


class ElasticsearchBuild:
    """The build half of :class:`~anchorprune.index.elasticsearch.ElasticsearchIndex` (its settings, client and
    store are the index's)."""

    BUILD_STEPS = ("validate", "license", "lock", "create", "reuse", "bulk", "settings", "count", "verify",
                   "publish")

    def _checkpoint(self, step: str) -> None:
        """Called as each build step starts; a no-op (tests patch it to inject failures)."""

    @staticmethod
    def _check_fde_dims(dims: int | None) -> None:
        problem = fde_dims_problem(dims)          # the server would refuse the mapping
        if problem:
            raise IndexInputError(problem)

    def _new_encoder(self, dim: int) -> MuveraFirstStage | None:
        """The MUVERA encoder a build over ``dim``-dimensional vectors uses (None: not muvera)."""
        if self.built_stage != "muvera":
            return None
        self._check_fde_dims(muvera_dims(dim, self.first_stage_params))
        enc = make_first_stage("muvera", dim, self.first_stage_params)
        assert isinstance(enc, MuveraFirstStage)
        return enc

    def _stage_record(self, enc: MuveraFirstStage | None) -> dict[str, Any]:
        """The manifest's ``first_stage`` (before the page count is known; :meth:`build` adds ``auto``'s)."""
        stage = self.built_stage
        rec: dict[str, Any] = {"name": stage, "params": {}}
        if stage != "none":
            field, sim = FIRST_STAGE_FIELDS[stage]
            rec.update(field=field, similarity=sim, index_options=self.knn_index_options)
        if enc is not None:
            rec.update(params=enc.params(), dims=enc.dims, fingerprint=enc.fingerprint())
        return rec

    def _step(self, name: str) -> None:
        self.life.renew()
        self._checkpoint(name)

    def build(self, pages: Iterable[PrunedPage], meta: dict[str, Any], reuse: Iterable[str] = ()) -> IndexVersion:
        """Create, fill, verify and complete ``<alias>-v<N>`` (the alias does not move; see :meth:`swap`)."""
        self._checkpoint("validate")
        meta = check_meta(meta)
        reuse = check_reuse(reuse)
        serving = self._serving_number() if reuse else None   # a fresh build needs no readable alias
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
            recompute = (want["name"] == "muvera" and have != want) or stage_field(have) != stage_field(want)
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
        dim = check_pages_up_front(pages, reuse, dim, self.dtype)

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
                raise IndexInputError(NO_PAGES)
            dim = dim if dim is not None else int(first[2].shape[1])        # type: ignore[index]
            quantize.check_dim(self.dtype, dim)
            encoder = self._new_encoder(dim)           # refuses an FDE above 4,096 dims before anything exists
            manifest = {"format": FORMAT, "backend": self.backend, "name": self.name, "version": number,
                        "dtype": self.dtype, "element_type": element, "server_version": self.server().number,
                        "first_stage": self._stage_record(encoder), "meta": meta, "complete": False,
                        "started_at": now_iso()}
            tokens = self.built_stage == "token_ivf"
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
            self._smoke_search(iname, dim, norm_bound(max(new_pages[1], reused_norm), element))
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
            for page, v in validated_pages(pages, dim, reuse, self.dtype):
                dim = v.shape[1] if dim is None else dim
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
            if is_license_refusal(exc.meta.status, exc.body) or "license" in text:
                raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors")) from exc
            if "rank_vectors" in text and ("no handler" in text or "unknown" in text):
                raise IndexStoreError(f"{self.where} does not know the rank_vectors field type: it needs "
                                      "Elasticsearch 8.18 or later (9.x recommended), with bfloat16 for dtype "
                                      "float16 on the newest 9.x; or use the local backend") from exc
            raise

    def _copy_reused(self, source: str, dest: str, reuse: list[str]) -> None:
        for a in range(0, len(reuse), REINDEX_BATCH):
            ids = reuse[a:a + REINDEX_BATCH]
            resp = dict(self.client.reindex(source={"index": source, "query": {"ids": {"values": ids}}},
                                            dest={"index": dest, "op_type": "create"}, refresh=False,
                                            wait_for_completion=True))
            if any(is_license_refusal(f.get("status"), f.get("cause")) for f in resp.get("failures", [])):
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
        for a in range(0, len(ids), REINDEX_BATCH):
            resp = dict(self.client.search(index=iname, size=0, query={"ids": {"values": ids[a:a + REINDEX_BATCH]}},
                                           aggs={"n": {"sum": {"field": "n_vectors"}}}))
            total += float(resp["aggregations"]["n"]["value"])
        return total

    def _resend_reused(self, source: str, dest: str, reuse: list[str], encoder: MuveraFirstStage | None,
                       element: str, dim: int, tokens: bool = False) -> None:
        """Copy reused pages through the client with this build's first-stage fields (``_reindex`` cannot
        compute them): the source's ``fde`` / ``tokens`` are dropped, the FDE (``encoder``) and the nested
        token vectors (``tokens``) of the stored page vectors added. The rest of each source is kept as stored."""
        from elasticsearch import helpers

        stored_as = STORED_AS[element]

        def actions() -> Iterator[dict[str, Any]]:
            for a in range(0, len(reuse), REINDEX_BATCH):
                for hit in helpers.scan(self.client, index=source, size=REINDEX_BATCH, query={
                        "query": {"ids": {"values": reuse[a:a + REINDEX_BATCH]}},
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
                        src[FDE_FIELD] = stored_fde(encoder, v, stored_as).tolist()
                    if tokens:
                        src[TOKENS_FIELD] = page_document(hit["_id"], "", v, "float32",
                                                          tokens=stored_tokens(v, stored_as, hit["_id"]))[TOKENS_FIELD]
                    yield {"_op_type": "create", "_index": dest, "_id": hit["_id"], "_source": src}

        sent = self._send(dest, actions(), f"re-send {dest}")
        if sent != len(reuse):
            raise CorruptVersionError(f"re-sent {sent} of {len(reuse)} unchanged pages from {source} to {dest}")

    def _bulk(self, iname: str, first: tuple[str, str, np.ndarray] | None,
              rest: Iterator[tuple[str, str, np.ndarray]], encoder: MuveraFirstStage | None = None,
              element: str = "float", tokens: bool = False) -> tuple[int, int]:
        vectors = [0]
        stored_as = STORED_AS[element]

        def actions() -> Iterator[dict[str, Any]]:
            if first is None:
                return
            for pid, chash, v in chain(first, rest):
                vectors[0] += int(v.shape[0])
                fde = None if encoder is None else stored_fde(encoder, v, stored_as)
                tok = stored_tokens(v, stored_as, pid) if tokens else None
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
                if is_license_refusal(res.get("status"), res.get("error")):
                    raise ElasticsearchLicenseError(self._license_message("a licence that refuses rank_vectors"))
                raise CorruptVersionError(f"bulk indexing into {iname} failed: {item}")
            sent += 1
        return sent

    def _smoke_search(self, iname: str, dim: int, page_norm: float) -> None:
        resp = dict(self.client.search(index=iname, size=1, source=False, query={"match_all": {}}))
        hits = resp["hits"]["hits"]
        if not hits:
            raise CorruptVersionError(f"{iname} returned no documents in the smoke search")
        body = query_body(torch.zeros(1, dim) + 1.0 / np.sqrt(dim), 1, True, self.dtype, self.hamming,
                          page_norm=page_norm)
        out = dict(self.client.search(index=iname, **body))
        if not out["hits"]["hits"]:
            raise CorruptVersionError(f"{iname}: the MaxSim smoke search returned no hit")


def chain(first: tuple[str, str, np.ndarray], rest: Iterator[tuple[str, str, np.ndarray]]):
    yield first
    yield from rest
