"""Writing a local version: stream the pages into a staging folder, add the first stage's files, checksum
everything in a manifest, verify, and publish it as ``v<N>/`` (never served until a swap).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import anchorprune.index.ivf_update as ivf_update
import anchorprune.index.quantize as quantize
from anchorprune.evaluation.scoring import score_packed
from anchorprune.index.base import (
    NO_PAGES,
    CorruptVersionError,
    IndexInputError,
    IndexVersion,
    check_meta,
    check_pages_up_front,
    check_reuse,
    normalized_mean,
    now_iso,
    validated_pages,
)
from anchorprune.index.calibration import CalibrationParams, QuerySample, calibrate
from anchorprune.index.first_stage import MuveraFirstStage, auto_stage, make_first_stage, stage_record
from anchorprune.index.local.files import (
    DIGEST_BYTES,
    FILES,
    FORMAT,
    STAGE_FILES,
    check_files,
    fsync_dir,
    page_digest,
    save_npy,
    sha256_file,
    write_file,
)
from anchorprune.index.local.version import Version, chunk_tokens_for
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams
from anchorprune.pruning.base import PrunedPage

log = logging.getLogger(__name__)


class LocalBuild:
    """The build half of :class:`~anchorprune.index.local.LocalIndex` (its settings and store are the index's)."""

    #: build steps, in order; ``_checkpoint(step)`` is called as each one starts (tests inject failures there)
    BUILD_STEPS = ("validate", "lock", "stage", "write", "manifest", "verify", "publish")

    def _checkpoint(self, step: str) -> None:
        """Called as each build step starts; a no-op (tests patch it to inject failures)."""

    def build(self, pages: Iterable[PrunedPage], meta: dict[str, Any], reuse: Iterable[str] = ()) -> IndexVersion:
        """Write, verify and publish a new version ``v<N>`` (not served until :meth:`swap`).

        ``reuse`` names pages of the serving version to copy unchanged (see
        :mod:`anchorprune.index.base`, "Incremental rebuilds"); each one's stored vectors are
        checked against their digest first, and a damaged one stops the build (re-encode it:
        :meth:`damaged_pages` names them).
        """
        self._checkpoint("validate")
        meta = check_meta(meta)
        reuse = check_reuse(reuse)
        serving_n = self.store.read_serving() if reuse else None   # a fresh build needs no readable pointer
        source = self.store.open(serving_n) if serving_n is not None and reuse else None
        if reuse and source is None:
            raise IndexInputError(f"reuse names {len(reuse)} pages but index {self.name!r} has no serving version "
                                  "to copy them from; pass every page in `pages` instead")
        dim = source.dim if source is not None else None
        if source is not None:
            known = set(source.page_ids)
            missing = [r for r in reuse if r not in known]
            if missing:
                raise IndexInputError(f"reuse names pages not in the serving version v{source.number}: {missing[:5]}"
                                      f"{' ...' if len(missing) > 5 else ''}; encode them and pass them in `pages`")
            if source.dtype == "bits" and self.dtype != "bits":
                raise IndexInputError(f"cannot reuse sign-bit pages of v{source.number} in a {self.dtype} build; "
                                      "re-encode every page (reuse=())")
            if source.digests is None:          # no per-page digests: the whole file must pass before we copy
                check_files(source.path, source.manifest, full=True)
        dim = check_pages_up_front(pages, reuse, dim, self.dtype)

        self._checkpoint("lock")
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.life.locked():
            number = max(self.store.version_numbers(), default=0) + 1
            self._checkpoint("stage")
            staging = self.dir / f".build-v{number}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                self._checkpoint("write")
                counts = self._write(staging, pages, reuse, source, dim)
                self._checkpoint("manifest")
                self._write_manifest(staging, number, meta, counts, source)
                self._checkpoint("verify")
                built = Version.open(staging, verify=True)
                built.check_pages(range(len(built.page_ids)))
                self._smoke_search(built)
                self._checkpoint("publish")
                final = self.dir / f"v{number}"
                os.rename(staging, final)
                fsync_dir(self.dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        info = self.store.version_info(number)
        log.info("index %s: built v%d (%d pages, %d vectors, %.1f MB, %s); not serving until swap()",
                 self.name, number, info.pages, info.vectors, info.bytes / 1e6, self.dtype)
        return info

    def _write(self, staging: Path, pages: Iterable[PrunedPage], reuse: list[str], source: Version | None,
               dim: int | None) -> dict[str, Any]:
        ids: list[str] = []
        hashes: list[str] = []
        lengths: list[int] = []
        means: list[np.ndarray] = []
        digests: list[bytes] = []
        seen: set[str] = set()
        muvera: MuveraFirstStage | None = None
        fde_out = open(staging / "first_stage.bin", "wb") if self.built_stage == "muvera" else None  # noqa: SIM115

        carried_fde: list[np.ndarray | None] = []     # the serving version's FDEs, when they can be copied

        def add_fde(stored: np.ndarray, reused: int | None = None) -> None:   # FDE of the stored page vectors
            nonlocal muvera
            if fde_out is None:
                return
            if muvera is None:
                muvera = make_first_stage("muvera", int(dim), self.first_stage_params)
            if reused is not None:                    # a reused page's FDE is copied, not encoded again
                if not carried_fde:
                    carried_fde.append(_carried_fde(source, muvera, self.dtype))
                if carried_fde[0] is not None:
                    fde_out.write(np.asarray(carried_fde[0][reused]).tobytes())
                    return
            fde_out.write(muvera.encode_document(quantize.decode(stored, self.dtype, int(dim)))
                          .astype(np.float16).tobytes())

        with contextlib.ExitStack() as stack, open(staging / "vectors.bin", "wb") as out:
            if fde_out is not None:
                stack.enter_context(fde_out)
            stream = validated_pages(tqdm(pages, desc=f"index {self.name}", unit="page", disable=None), dim, reuse,
                                     self.dtype)
            for page, v in stream:
                dim = v.shape[1] if dim is None else dim
                seen.add(page.page_id)
                stored = quantize.encode(v, self.dtype)
                out.write(stored.tobytes())
                digests.append(page_digest(stored))
                add_fde(stored)
                ids.append(page.page_id)
                hashes.append(page.content_hash)
                lengths.append(v.shape[0])
                means.append(normalized_mean(v))
            if reuse:
                assert source is not None
                where = {pid: j for j, pid in enumerate(source.page_ids)}
                for pid in reuse:
                    j = where[pid]
                    lo, hi = int(source.offsets[j]), int(source.offsets[j + 1])
                    stored = np.asarray(source.vecs[lo:hi])
                    if source.digests is not None and page_digest(stored) != bytes(source.digests[j]):
                        raise CorruptVersionError(
                            f"v{source.number}/vectors.bin: the stored vectors of reused page {pid!r} do not match "
                            "their checksum; re-encode it (pass it in `pages`, not `reuse`: "
                            "`anchorprune index build` does this by itself)")
                    same = source.dtype == self.dtype
                    if not same:                        # float32 -> float16 / bits, float16 -> float32 / bits
                        stored = quantize.encode(quantize.decode(stored, source.dtype, source.dim), self.dtype)
                    out.write(stored.tobytes())
                    # the same bytes as those whose digest was just checked: carry it instead of hashing again
                    digests.append(bytes(source.digests[j]) if same and source.digests is not None
                                   else page_digest(stored))
                    add_fde(stored, j)
                    ids.append(pid)
                    hashes.append(source.content_hashes[j])
                    lengths.append(hi - lo)
                    means.append(source.means[j])
            for f in (out, fde_out) if fde_out is not None else (out,):
                f.flush()
                os.fsync(f.fileno())
        if not ids:
            raise IndexInputError(NO_PAGES)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        save_npy(staging / "offsets.npy", offsets)
        ivf = self._train_ivf(staging, offsets, int(dim), reuse, source) if self.built_stage == "token_ivf" else None
        calibration = self._calibrate(staging, offsets, int(dim), ivf) if ivf is not None else None
        save_npy(staging / "means.npy", np.stack(means).astype(np.float16))
        write_file(staging / "pages.json", json.dumps({"page_ids": ids, "content_hashes": hashes}).encode())
        save_npy(staging / "page_digests.npy", np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES))
        first_stage: dict[str, Any] = {"name": self.built_stage, "params": {}}
        if muvera is not None:
            assert fde_out is not None
            with open(staging / "first_stage.npz", "wb") as f:
                np.savez(f, **muvera.state)
            first_stage = {"name": "muvera", "params": muvera.params(), "dims": muvera.dims, "dtype": "float16"}
        if ivf is not None:
            first_stage = {"name": "token_ivf", "params": ivf.record(),
                           **({"calibration": calibration} if calibration is not None else {})}
        first_stage.update(stage_record(self.first_stage, self.first_stage_threshold, self.first_stage_auto,
                                        len(ids)))
        return {"dim": dim, "pages": len(ids), "vectors": int(offsets[-1]), "new_pages": len(seen),
                "reused_pages": len(reuse), "first_stage": first_stage}

    def _train_ivf(self, staging: Path, offsets: np.ndarray, dim: int, reuse: Sequence[str] = (),
                   source: Version | None = None) -> TokenIvf:
        """The inverted lists over the vectors just written (read back from the staging file, as stored: a
        float16 / bits index clusters what it will score), saved beside them.

        A rebuild that reuses pages carries the serving version's centroids and lists when the corpus
        changed little (:mod:`anchorprune.index.ivf_update`: only the new pages' tokens are assigned);
        otherwise, or past the drift thresholds, k-means is trained from scratch. The decision and the
        measured drift go into the lists' record (the manifest's ``first_stage.params.update``).
        """
        total = int(offsets[-1])
        stored = np.memmap(staging / "vectors.bin", dtype=quantize.storage_dtype(self.dtype), mode="r",
                           shape=(total, quantize.stored_width(self.dtype, dim)))
        params = TokenIvfParams.of(self.first_stage_params)
        read = lambda rows: quantize.decode(np.asarray(stored[rows]), self.dtype, dim)  # noqa: E731

        serving = None
        if source is not None:
            fs = source.manifest.get("first_stage") or {}
            serving = ivf_update.Serving(source.number, source.ivf, source.offsets, source.dtype,
                                         dict(fs.get("params") or {}) if fs.get("name") == "token_ivf" else {})
        change = ivf_update.Change(offsets, len(offsets) - 1 - len(reuse),
                                   np.array([source.position(pid) for pid in reuse] if source is not None else [],
                                            dtype=np.int64))
        ivf, decision = ivf_update.update(serving, change, read, params, self.dtype)
        log.info("index %s: token_ivf %s (%s)", self.name,
                 f"keeps the centroids of {decision.get('centroids_from')}" if ivf is not None else "retrains",
                 decision["reason"])
        if ivf is None:
            log.info("index %s: token_ivf k-means over %d token vectors", self.name, total)
            trained = TokenIvf.train(read, offsets, params)
            ivf = replace(trained, lineage={**trained.lineage, "update": decision})
        for fname, arr in ivf.arrays().items():
            save_npy(staging / fname, arr)
        return ivf                                    # the read-only map closes with this frame

    def _calibrate(self, staging: Path, offsets: np.ndarray, dim: int, ivf: TokenIvf) -> dict[str, Any] | None:
        """The cheapest token_ivf search settings that reach ``target_recall`` on this version
        (:mod:`anchorprune.index.calibration`), measured over the vectors as stored; None when turned off, or
        when the version searches exactly (``auto`` under its threshold: no setting of it would be used)."""
        params: CalibrationParams = self.calibration
        if params.source == "none":
            return None
        pages = int(offsets.shape[0]) - 1
        if auto_stage(self.first_stage, pages, self.first_stage_threshold, self.first_stage_auto) != "token_ivf":
            log.info("index %s: not calibrating token_ivf: %d pages are below first_stage_threshold %s, so this "
                     "version searches exactly", self.name, pages, self.first_stage_threshold)
            return None
        sample = self._calibration_sample() if params.source != "pseudo" else QuerySample(())
        kind = params.sample_kind(len(sample.queries) > 0)
        if kind is None:
            return None
        total = int(offsets[-1])
        stored = np.memmap(staging / "vectors.bin", dtype=quantize.storage_dtype(self.dtype), mode="r",
                           shape=(total, quantize.stored_width(self.dtype, dim)))
        queries = (None if kind == "pseudo"
                   else [np.asarray(q.float().numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float32)
                         for q in sample.queries])
        record = calibrate(ivf, lambda rows: quantize.decode(np.asarray(stored[rows]), self.dtype, dim), offsets,
                           params, queries, sample.about)
        log.info("index %s: token_ivf calibrated in %.1f s on %d %s: nprobe %s, candidates %s, recall@%d %.4f "
                 "(tie-aware %s)%s", self.name, record["seconds"], record["sample"]["queries"],
                 record["sample"]["kind"], record["nprobe"], record["candidates"], record["k"],
                 record.get("recall", float("nan")), record.get("recall_tie_aware", "-"),
                 "" if record["met"] else f"; no setting reached {params.target_recall}: searches are exact")
        return record

    def _calibration_sample(self) -> QuerySample:
        """The held-out queries given as ``calibration_queries`` (a callable is called now, once per build)."""
        given = self.calibration_queries
        if callable(given):
            given = given()
        if given is None:
            return QuerySample(())
        return given if isinstance(given, QuerySample) else QuerySample(list(given))

    def _write_manifest(self, staging: Path, number: int, meta: dict[str, Any], counts: dict[str, Any],
                        source: Version | None) -> None:
        files = {}
        for fname in (*FILES, *STAGE_FILES.get(counts["first_stage"]["name"], ())):
            f = staging / fname
            files[fname] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = {
            "format": FORMAT, "backend": self.backend, "name": self.name, "version": number,
            "created_at": now_iso(), "dtype": self.dtype, "dim": counts["dim"], "pages": counts["pages"],
            "vectors": counts["vectors"], "new_pages": counts["new_pages"], "reused_pages": counts["reused_pages"],
            "reused_from": None if source is None else source.number,
            "bytes_per_vector": quantize.bytes_per_vector(self.dtype, counts["dim"]),
            "first_stage": counts["first_stage"], "meta": meta, "files": files,
        }
        write_file(staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        fsync_dir(staging)

    def _smoke_search(self, v: Version) -> None:
        """The new version answers a query (its first page's first vector) over its first and last pages.

        Only a few pages are scored, so a multi-GB version is not read twice at build time; the
        checksums already cover every byte.
        """
        q = torch.from_numpy(quantize.decode(np.asarray(v.vecs[:1]), v.dtype, v.dim))
        n = len(v.page_ids)
        sample = np.unique(np.concatenate([np.arange(min(n, 32)), np.arange(max(n - 32, 0), n)]))
        vecs, offsets = v.rows(sample)
        scores = score_packed([q], vecs, offsets,
                              chunk_tokens=chunk_tokens_for(self.chunk_tokens, 1, v.dim, vecs.shape[0]))
        if scores.shape != (1, len(sample)) or not torch.isfinite(scores).all():
            raise CorruptVersionError(f"{v.path.name}: the smoke search returned {tuple(scores.shape)} "
                                      "scores or non-finite values")


def _carried_fde(source: Version | None, muvera: Any, dtype: str) -> np.ndarray | None:
    """The serving version's ``[P, D]`` float16 FDEs (a read-only map) when a reused page's FDE can be copied from
    them: the same stored dtype (the FDE encodes the stored vectors) and the same random matrices; else None."""
    if source is None or source.muvera is None or source.dtype != dtype or not isinstance(muvera, MuveraFirstStage):
        return None
    if source.muvera.dims != muvera.dims or source.muvera.fingerprint() != muvera.fingerprint():
        return None
    return np.memmap(source.path / "first_stage.bin", dtype=np.float16, mode="r",
                     shape=(len(source.page_ids), muvera.dims))

