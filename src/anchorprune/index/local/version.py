"""An opened local version: memory-mapped vectors, page digests, first-stage files, and exact MaxSim over them.

Scoring is exact MaxSim through :func:`anchorprune.evaluation.scoring.score_packed` (chunked matmul over
the memory map). Sign-bit pages are decoded chunk by chunk to ``±1/sqrt(d)``
(:mod:`anchorprune.index.quantize`) and scored against the float query (asymmetric).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import anchorprune.index.quantize as quantize
from anchorprune.evaluation.bf16 import ComputePath, auto_compute
from anchorprune.evaluation.scoring import (
    DEFAULT_BUFFER_ELEMENTS,
    PreparedPages,
    ScoringError,
    page_rows,
    prepare,
    score_packed,
    score_shortlist,
)
from anchorprune.index.base import CorruptVersionError, Hit, IndexVersion
from anchorprune.index.first_stage import MuveraFirstStage
from anchorprune.index.local.files import DIGEST_BYTES, FIX, check_files, page_digest, read_manifest
from anchorprune.index.token_ivf import TokenIvf, TokenIvfParams

#: page vectors decoded at once when scoring sign-bit pages
BITS_CHUNK_TOKENS = 1 << 18
#: default bound, in elements, on each scoring work buffer ([chunk, M] similarities, [chunk, d] staging): the
#: scorer's own (anchorprune.evaluation.scoring.DEFAULT_BUFFER_ELEMENTS)
WORK_ELEMENTS = DEFAULT_BUFFER_ELEMENTS


def chunk_tokens_for(explicit: int | None, m: int, dim: int, total: int) -> int:
    """Page vectors per scoring matmul: ``explicit``, or as many as keep each work buffer at ~64 MiB.

    Bounded by the vectors actually scored, so a small call never allocates a large buffer.

    >>> chunk_tokens_for(None, 20, 128, 10**7), chunk_tokens_for(None, 1, 128, 500), chunk_tokens_for(64, 1, 128, 500)
    (131072, 500, 64)
    """
    if explicit is not None:
        return explicit
    return max(1, min(WORK_ELEMENTS // max(m, 1), WORK_ELEMENTS // dim, total))


@dataclass
class Version:
    """An opened version directory: manifest, memory-mapped vectors, offsets, means, ids."""

    path: Path
    manifest: dict[str, Any]
    vecs: np.ndarray            # [T, w] memmap (copy-on-write mapping; the file is never modified)
    offsets: np.ndarray         # [P + 1] int64
    means: np.ndarray           # [P, d] float32
    page_ids: list[str]
    content_hashes: list[str]
    digests: np.ndarray | None = None      # [P, 16] uint8 blake2b of each page's stored bytes (None: older versions)
    dense: torch.Tensor | None = None      # [T, d] float32 decoded copy kept in RAM (see LocalIndex.resident_bytes)
    prepared: PreparedPages | None = None  # the serving copy scored by every search (dense is its float32 view)
    _where: dict[str, int] | None = None   # page id -> position, built on first use
    checked: bool = False                  # vectors.bin's sha256 was checked since this object opened it
    fde: np.ndarray | None = None          # [P, D] float32 MUVERA FDE, loaded at the first muvera search
    muvera: MuveraFirstStage | None = None  # its encoder (random matrices read back from first_stage.npz)
    ivf: TokenIvf | None = None            # token_ivf inverted lists (order / pages memory-mapped)

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def number(self) -> int:
        return int(self.manifest["version"])

    @classmethod
    def open(cls, path: Path, verify: bool = False) -> Version:
        """Open a version: manifest, sizes and the small files' checksums always (cheap); with ``verify``,
        the sha256 of ``vectors.bin`` too. Damage raises :class:`CorruptVersionError` naming the file."""
        manifest = read_manifest(path)
        check_files(path, manifest, full=verify)
        dtype, dim = manifest["dtype"], int(manifest["dim"])
        total = int(manifest["vectors"])
        width = quantize.stored_width(dtype, dim)
        try:
            vecs = np.memmap(path / "vectors.bin", dtype=quantize.storage_dtype(dtype), mode="c",
                             shape=(total, width))
            offsets = np.load(path / "offsets.npy")
            means = np.load(path / "means.npy").astype(np.float32)
            ids = json.loads((path / "pages.json").read_text())
            digests = np.load(path / "page_digests.npy") if (path / "page_digests.npy").exists() else None
            v = cls(path, manifest, vecs, offsets, means, ids["page_ids"], ids["content_hashes"], digests=digests)
            fs = manifest.get("first_stage") or {}
            if fs.get("name") == "muvera":
                with np.load(path / "first_stage.npz") as state:
                    v.muvera = MuveraFirstStage.from_state(fs["params"], dict(state))
            if fs.get("name") == "token_ivf":
                v.ivf = TokenIvf.from_arrays({f: np.load(path / f, mmap_mode="r") for f in TokenIvf.FILES},
                                             TokenIvfParams.of(fs["params"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptVersionError(f"{path.name} cannot be read ({type(exc).__name__}: {exc}); {FIX}") from None
        v.check_consistent()
        v.checked = verify
        return v

    def position(self, page_id: str) -> int:
        if self._where is None:
            self._where = {pid: j for j, pid in enumerate(self.page_ids)}
        return self._where[page_id]

    def page_digest_ok(self, j: int) -> bool:
        """Whether page ``j``'s stored vectors still hash to the digest recorded at build (True if none)."""
        if self.digests is None:
            return True
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return page_digest(np.asarray(self.vecs[lo:hi])) == bytes(self.digests[j])

    def check_pages(self, pages: Iterable[int]) -> None:
        """Raise :class:`CorruptVersionError` naming the first page whose stored vectors fail their digest.

        Nothing to check when searches score the prepared copy: its bytes matched the whole file's sha256
        when it was read (:meth:`make_resident`), and later damage to the file cannot reach it."""
        if self.prepared is not None:
            return
        for j in pages:
            if not self.page_digest_ok(int(j)):
                raise CorruptVersionError(
                    f"{self.path.name}/vectors.bin: the stored vectors of page {self.page_ids[int(j)]!r} do not "
                    f"match their checksum (the file is damaged); {FIX}")

    def check_consistent(self) -> None:
        p, t = int(self.manifest["pages"]), int(self.manifest["vectors"])
        o = self.offsets
        problems = []
        if o.shape != (p + 1,) or o[0] != 0 or o[-1] != t or (np.diff(o) <= 0).any():
            problems.append(f"offsets do not describe {p} non-empty pages over {t} vectors")
        if self.means.shape != (p, self.dim):
            problems.append(f"means have shape {self.means.shape}, expected {(p, self.dim)}")
        if self.ivf is not None:
            problems += self.ivf.problems(p, t, self.dim)
        if self.muvera is not None:
            size = (self.path / "first_stage.bin").stat().st_size
            if size != p * self.muvera.dims * 2:
                problems.append(f"first_stage.bin has {size} bytes, not {p} pages x {self.muvera.dims} float16")
        if len(self.page_ids) != p or len(set(self.page_ids)) != p or len(self.content_hashes) != p:
            problems.append("page ids are not unique or do not match the page count")
        if self.digests is not None and self.digests.shape != (p, DIGEST_BYTES):
            problems.append(f"page digests have shape {self.digests.shape}, expected {(p, DIGEST_BYTES)}")
        if problems:
            raise CorruptVersionError(f"{self.path.name}: " + "; ".join(problems) + f"; {FIX}")

    def fde_matrix(self) -> np.ndarray:
        """The ``[P, D]`` float32 FDE matrix, read on first use (a build's verify step never loads it)."""
        if self.fde is None:
            assert self.muvera is not None
            raw = np.fromfile(self.path / "first_stage.bin", dtype=np.float16)
            if raw.size != len(self.page_ids) * self.muvera.dims:
                raise CorruptVersionError(f"{self.path.name}: first_stage.bin holds {raw.size} values, not "
                                          f"{len(self.page_ids)} pages x {self.muvera.dims}")
            self.fde = raw.reshape(-1, self.muvera.dims).astype(np.float32)
        return self.fde

    def info(self, name: str) -> IndexVersion:
        m = self.manifest
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return IndexVersion(name=name, number=int(m["version"]), created_at=m["created_at"], pages=int(m["pages"]),
                            vectors=int(m["vectors"]), bytes=size, manifest=m)

    def make_resident(self, budget: int) -> None:
        """Prepare the serving copy once, when it fits ``budget`` bytes: the vectors in the matmul dtype,
        padded for chunked matmuls and checked (:func:`anchorprune.evaluation.scoring.prepare`).

        float16 / bits / float32 versions (and bfloat16 ones on a CPU without native bf16) are decoded to
        float32 (``dense`` is that copy); a bfloat16 version on a CPU with native bf16 is copied as bf16 for
        the bf16 scan (rescored exactly from the same rows). Scoring then does only matmuls and reductions:
        no per-query conversion, staging copy or NaN scan. Every byte is read once, so the whole file's
        sha256 is checked on the way (the copy scored is the file as built); a page holding NaN/inf is
        refused here, by name. The file on disk keeps its compact encoding.
        """
        if self.prepared is not None:
            return
        total = self.vecs.shape[0]
        bf16_scan = self.dtype == "bfloat16" and auto_compute(self.dtype) == "bfloat16"
        if total * self.dim * (2 if bf16_scan else 4) > budget:
            return
        sha = hashlib.sha256()          # every byte is read anyway: check the whole file's checksum on the way
        if bf16_scan:
            src, decode, compute = quantize.as_bfloat16(self.vecs), None, "bfloat16"
            on_rows = lambda raw: sha.update(raw.view(torch.int16).numpy().tobytes())   # noqa: E731
        else:
            src, compute = self.vecs, "float32"
            decode = None if self.dtype == "float32" else (lambda raw: quantize.decode(raw, self.dtype, self.dim))
            on_rows = lambda raw: sha.update(np.asarray(raw).tobytes())                 # noqa: E731
        try:
            prepared = prepare(src, self.offsets, compute, page_ids=self.page_ids, decode=decode, dim=self.dim,
                               on_rows=on_rows, step_rows=max(1, (1 << 26) // (self.dim * 4)))
        except ScoringError as exc:
            raise CorruptVersionError(f"{self.path.name}/vectors.bin: {exc}; {FIX}") from None
        if sha.hexdigest() != self.manifest["files"]["vectors.bin"]["sha256"]:
            raise CorruptVersionError(f"{self.path.name}/vectors.bin does not match its checksum in the manifest "
                                      f"(the file is damaged); {FIX}")
        self.prepared = prepared
        self.dense = prepared.vecs if compute == "float32" else None
        self.checked = True

    def release(self) -> None:
        """Drop the prepared copy (a swapped-out version); requests still scoring it keep their reference."""
        self.prepared = None
        self.dense = None

    def token_rows(self, rows: np.ndarray) -> np.ndarray:
        """Decoded float32 vectors ``[len(rows), d]`` of the given token rows (ascending reads the file in order)."""
        if self.dense is not None:
            return self.dense[torch.from_numpy(rows.astype(np.int64))].numpy()
        return quantize.decode(np.asarray(self.vecs[rows]), self.dtype, self.dim)

    def rows(self, pages: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded float32 vectors of the given pages (in that order) and their local offsets."""
        idx, local = page_rows(self.offsets, pages)
        return torch.from_numpy(self.token_rows(idx)), torch.from_numpy(local)

    def score_search(self, queries: Sequence[torch.Tensor], chunk_tokens: int | None,
                     k: int) -> tuple[torch.Tensor, ComputePath]:
        """Scores ``[Q, P]`` whose top ``k`` is exact float32 MaxSim, and how they were computed.

        A bfloat16 version searched from its memory map on a CPU with native bf16 scans every page with
        bf16 matmuls and rescores the best ``k + margin`` per query exactly in float32 from the stored
        rows (:func:`anchorprune.evaluation.scoring.score_shortlist`); everything else is :meth:`score_all`.
        """
        if self.dense is None and self.dtype == "bfloat16":        # a bf16 prepared copy, or the memory map
            ct = chunk_tokens_for(chunk_tokens, sum(q.shape[0] for q in queries), self.dim, self.vecs.shape[0])
            if self.prepared is not None:
                return score_shortlist(queries, self.prepared, None, k, compute="auto", chunk_tokens=ct)
            return score_shortlist(queries, quantize.as_bfloat16(self.vecs), torch.from_numpy(self.offsets), k,
                                   compute="auto", chunk_tokens=ct, page_ids=self.page_ids)
        return self.score_all(queries, chunk_tokens), ComputePath.here("auto", "float32", self.dtype)

    def score_all(self, queries: Sequence[torch.Tensor], chunk_tokens: int | None) -> torch.Tensor:
        """Exact float32 MaxSim ``[Q, P]`` of the queries against every page (what evaluation uses)."""
        chunk_tokens = chunk_tokens_for(chunk_tokens, sum(q.shape[0] for q in queries), self.dim, self.vecs.shape[0])
        if self.prepared is not None and self.prepared.compute == "float32":
            return score_packed(queries, self.prepared, chunk_tokens=chunk_tokens)
        if self.dtype != "bits":   # bfloat16 rows are converted to float32 chunk by chunk
            vecs = quantize.as_bfloat16(self.vecs) if self.dtype == "bfloat16" else torch.from_numpy(self.vecs)
            return score_packed(queries, vecs, torch.from_numpy(self.offsets),
                                chunk_tokens=chunk_tokens, page_ids=self.page_ids, compute="float32")
        n_pages = len(self.page_ids)
        out = torch.empty(len(queries), n_pages, dtype=torch.float32)
        budget = max(chunk_tokens or BITS_CHUNK_TOKENS, 1)
        a = 0
        while a < n_pages:
            b = int(np.searchsorted(self.offsets, self.offsets[a] + budget, side="right")) - 1
            b = min(max(b, a + 1), n_pages)
            lo, hi = int(self.offsets[a]), int(self.offsets[b])
            chunk = torch.from_numpy(quantize.decode(np.asarray(self.vecs[lo:hi]), "bits", self.dim))
            out[:, a:b] = score_packed(queries, chunk, torch.from_numpy(self.offsets[a:b + 1] - lo),
                                       chunk_tokens=chunk_tokens)
            a = b
        return out


def top_k(scores: torch.Tensor, k: int, page_ids: Sequence[str], which: np.ndarray | None = None) -> list[Hit]:
    """The ``k`` best pages, score descending, ties broken by page id ascending (as :mod:`anchorprune.evaluation.metrics`).

    >>> [h.page_id for h in top_k(torch.tensor([1.0, 2.0, 2.0, 0.5]), 2, ["d", "c", "b", "a"])]
    ['b', 'c']
    """
    s = scores.numpy()
    ids = which if which is not None else np.arange(len(s))
    if k < len(s):                                    # everything scoring at least the k-th best score
        kth = np.partition(s, len(s) - k)[len(s) - k]
        pool = np.flatnonzero(s >= kth)
    else:
        pool = np.arange(len(s))
    order = sorted(pool.tolist(), key=lambda i: (-float(s[i]), page_ids[int(ids[i])]))[:k]
    return [Hit(page_ids[int(ids[i])], float(s[i])) for i in order]
