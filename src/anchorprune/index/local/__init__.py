"""The embedded index: versioned directories of packed vectors, memory-mapped, exact MaxSim in chunks.

The package keeps storage and scoring only; search, the first-stage policy and the life cycle are
:class:`~anchorprune.index.facade.VersionedIndex`'s, the same as Elasticsearch's.

- :mod:`~anchorprune.index.local.files`: the layout of ``root/<name>/``, manifests, checksums, atomic writes
- :mod:`~anchorprune.index.local.version`: an opened version (memory maps, digests) and exact MaxSim over it
- :mod:`~anchorprune.index.local.store`: the versions, ``CURRENT``, ``SERVED`` and the build lock
  (:class:`~anchorprune.index.lifecycle.Store`)
- :mod:`~anchorprune.index.local.build`: writing, verifying and publishing a version

Two-stage search ranks pages by a first stage (:mod:`anchorprune.index.first_stage`: the
L2-normalised mean vector, or MUVERA FDE, one matmul over the ``[P, D]`` matrix; or
``token_ivf``, each query token's probed inverted lists, :mod:`anchorprune.index.token_ivf`),
then scores the candidates exactly: the final ranking is always exact MaxSim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from anchorprune.evaluation.bf16 import ComputePath
from anchorprune.evaluation.scoring import score_packed
from anchorprune.index.base import (
    CorruptVersionError,
    Hit,
    IndexInputError,
    IndexVersion,
    normalized_mean,
    query_matrix,
)
from anchorprune.index.calibration import CalibrationParams, QuerySample, check_target_recall
from anchorprune.index.facade import SearchPlan, Serving, VersionedIndex
from anchorprune.index.first_stage import top_candidates
from anchorprune.index.lifecycle import Lifecycle
from anchorprune.index.local.build import LocalBuild
from anchorprune.index.local.files import check_files, index_root
from anchorprune.index.local.store import LocalStore
from anchorprune.index.local.version import Version, chunk_tokens_for, top_k
from anchorprune.limits import LOCAL_INDEX_NAME, check_index_name

__all__ = ["LocalIndex", "LocalStore", "index_root"]

#: what ``LocalIndex(calibration_queries=...)`` takes: query matrices, a QuerySample, or a callable giving either
CalibrationQueries = Sequence[Any] | QuerySample | Callable[[], "Sequence[Any] | QuerySample | None"]


class LocalIndex(LocalBuild, VersionedIndex):
    """Versioned on-disk index under ``root/<name>/`` (see the module docstring).

    Parameters
    ----------
    root
        The folder holding indexes (``paths.index_dir``).
    name
        Index name (a folder under ``root``).
    dtype
        Storage of page vectors in new builds: ``float32``, ``float16`` or ``bits``.
        Each version records its own dtype; search uses the serving version's.
    two_stage, candidates
        Search first-stage candidates first, then exact MaxSim on the top ``candidates`` (None: the serving
        version's calibrated value, else ``facade.DEFAULT_CANDIDATES``; a number pins it).
    target_recall, calibration, calibration_queries
        token_ivf builds calibrate ``nprobe`` and ``candidates`` to reach recall@10 >= ``target_recall``
        (:mod:`anchorprune.index.calibration`; ``calibration``: ``source`` (none | queries | pseudo | auto: the
        given queries if any, else pseudo-queries); with no ``calibration`` and no ``calibration_queries`` no
        calibration runs, and a ``calibration`` dict without ``source`` means ``auto``), ``queries`` (pseudo
        sample size; 0: none),
        ``query_tokens``, ``noise``, ``recall``, ``seed``) on ``calibration_queries`` or pseudo-queries drawn
        from the pages; the manifest records the choice and the sample. ``calibration_queries``: held-out query
        matrices ``[m, d]``, a :class:`~anchorprune.index.calibration.QuerySample` (matrices and what they are),
        or a callable returning either, called once by a build that calibrates (so queries are encoded only
        when they are used). ``auto`` builds under ``first_stage_threshold`` pages search exactly and do not
        calibrate. A ``nprobe`` in ``first_stage_params`` pins nprobe as ``candidates`` pins candidates.
    first_stage, first_stage_params
        ``none`` | ``mean`` | ``muvera`` | ``token_ivf`` | ``auto`` (None: ``mean`` if ``two_stage`` else ``none``) and its
        parameters (MUVERA: ``k_sim``, ``d_proj``, ``reps``, ``final_dim``, ``seed``). ``muvera``
        builds write the FDE of every page; the manifest records the first stage and its parameters.
    first_stage_threshold, first_stage_auto
        ``auto``: builds prepare ``first_stage_auto``'s vectors; a search over a version of at least
        ``first_stage_threshold`` pages (None: ``first_stage.AUTO_THRESHOLD_PAGES``) uses that first
        stage, a smaller one exact MaxSim over every page. Manifest and search report say which.
    chunk_tokens
        Page vectors per scoring matmul (``None``: about 64 MiB of similarity buffer).
    resident_bytes
        A serving version whose prepared copy fits this many bytes (float32: 4 bytes per value; a
        bfloat16 version on a CPU with native bf16: 2) is prepared once in RAM and searched from there
        (:func:`~anchorprune.evaluation.scoring.prepare`: decoded, padded and NaN-checked once, so a
        search does only matmuls and reductions, with the same scores); it is released when another
        version serves. Larger ones are searched straight from the memory map. 0 turns it off.
    verify_on_open
        Check the sha256 of the serving version's ``vectors.bin`` at its first search in this
        object (a float16 / bits version decoded into RAM is checked on the way anyway). Every
        search also checks file sizes and the digests of the pages it returns. Turn it off only
        for a version too large to read once per process (then ``anchorprune index verify``).

    Examples
    --------
    >>> import tempfile, torch
    >>> from anchorprune.pruning.base import PrunedPage
    >>> idx = LocalIndex(tempfile.mkdtemp(), "demo", dtype="float32")
    >>> pages = [PrunedPage("a", "h1", torch.eye(4)[:2], None), PrunedPage("b", "h2", torch.eye(4)[2:], None)]
    >>> v = idx.build(pages, {"config_hash": "c0"})
    >>> idx.swap(v)
    >>> idx.search(torch.eye(4)[3:], k=1)
    [Hit(page_id='b', score=1.0)]
    """

    backend = "local"

    def __init__(self, root: Path | str, name: str, dtype: str = "float16", two_stage: bool = False,
                 candidates: int | None = None, chunk_tokens: int | None = None, resident_bytes: int = 1 << 30,
                 verify_on_open: bool = True, first_stage: str | None = None,
                 first_stage_params: dict[str, Any] | None = None, first_stage_threshold: int | None = None,
                 first_stage_auto: str = "token_ivf", target_recall: float = 0.99,
                 calibration: dict[str, Any] | None = None,
                 calibration_queries: CalibrationQueries | None = None):
        try:
            check_index_name(name, LOCAL_INDEX_NAME)
        except ValueError as exc:
            raise IndexInputError(str(exc)) from None
        self._configure(name, dtype, two_stage, candidates, first_stage, first_stage_params, first_stage_threshold,
                        first_stage_auto)
        # no calibration config and no queries: no calibration, as index.calibration.source defaults to none
        # (pseudo-queries were measured not to transfer to real ones; at 100k pages they cost more than k-means)
        default = {"source": "none"} if calibration is None and calibration_queries is None else {}
        self.calibration = CalibrationParams.of({**(calibration or default),
                                                 "target_recall": check_target_recall(target_recall)})
        self.calibration_queries = calibration_queries
        self.chunk_tokens = chunk_tokens
        self.resident_bytes = resident_bytes
        self.verify_on_open = verify_on_open
        self.store = LocalStore(index_root(root) / name, name)
        self.life = Lifecycle(self.store, self.store.what)

    @property
    def verifies_on_open(self) -> bool:     # type: ignore[override]
        return self.verify_on_open

    def __repr__(self) -> str:
        return f"LocalIndex({str(self.dir)!r}, dtype={self.dtype!r}, first_stage={self.first_stage!r})"

    @property
    def dir(self) -> Path:
        return self.store.dir

    def _open(self, number: int, verify: bool = False) -> Version:
        return self.store.open(number, verify)

    def _info(self, number: int) -> IndexVersion:
        return self.store.version_info(number)

    def existing_hashes(self) -> dict[str, str]:
        n = self.store.read_serving()
        if n is None:
            return {}
        v = self.store.open(n)
        return dict(zip(v.page_ids, v.content_hashes, strict=True))

    def damaged_pages(self, page_ids: Iterable[str]) -> list[str]:
        """Pages of the serving version (among ``page_ids``) whose stored vectors fail their checksum.

        A version without per-page digests (built before them) counts every page as damaged when
        its ``vectors.bin`` fails its whole-file checksum.
        """
        n = self.store.read_serving()
        if n is None:
            return []
        v = self.store.open(n)
        where = {pid: j for j, pid in enumerate(v.page_ids)}
        wanted = [p for p in page_ids if p in where]
        if v.digests is None:
            try:
                check_files(v.path, v.manifest, full=True)
            except CorruptVersionError:
                return wanted
            return []
        return [p for p in wanted if not v.page_digest_ok(where[p])]

    # ------------------------------------------------------------ search (planned in facade.py)
    def _serving(self) -> Serving:
        v = self.store.open_serving(self.resident_bytes, self.verify_on_open)
        fs = v.manifest.get("first_stage") or {}
        return Serving(v.number, len(v.page_ids), v.dim, fs.get("name"), v, fs.get("calibration"))

    def _search_exact(self, sv: Serving, qs: list[torch.Tensor], k: int,
                      plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        v: Version = sv.handle
        scores, path = v.score_search(qs, self.chunk_tokens, k)    # [Q, P]: top k exact float32
        return self._checked(v, [top_k(s, k, v.page_ids) for s in scores]), path

    def _search_candidates(self, sv: Serving, qs: list[torch.Tensor], k: int,
                           plan: SearchPlan) -> tuple[list[list[Hit]], ComputePath | None]:
        v: Version = sv.handle
        out = []
        for q in qs:
            if plan.stage == "muvera":
                assert v.muvera is not None
                cand = top_candidates(v.fde_matrix(), v.muvera.encode_query(q.numpy()), plan.candidates)
            elif plan.stage == "token_ivf":
                assert v.ivf is not None
                cand = v.ivf.candidates(q.numpy(), v.token_rows, len(v.page_ids), plan.candidates, plan.nprobe)
            else:
                cand = top_candidates(v.means, normalized_mean(q.numpy()), plan.candidates)   # [P, d] @ [d]
            if v.prepared is not None and v.prepared.compute == "float32":   # checked float32 copy: gather only
                sub = v.prepared.take(cand)
                scores = score_packed([q], sub, chunk_tokens=chunk_tokens_for(self.chunk_tokens, q.shape[0], v.dim,
                                                                              sub.total))
            else:
                vecs, offsets = v.rows(cand)            # candidates decoded to float32, in file order
                scores = score_packed([q], vecs, offsets, chunk_tokens=chunk_tokens_for(
                    self.chunk_tokens, q.shape[0], v.dim, vecs.shape[0]))
            out.append(top_k(scores[0], k, v.page_ids, which=cand))
        return self._checked(v, out), ComputePath.here("auto", "float32", v.dtype)

    @staticmethod
    def _checked(v: Version, hits: list[list[Hit]]) -> list[list[Hit]]:
        """Nothing served changes silently: the pages returned still hash to what the build wrote."""
        v.check_pages(sorted({v.position(h.page_id) for row in hits for h in row}))
        return hits

    def exact_scores(self, queries: Sequence[torch.Tensor]) -> tuple[list[str], torch.Tensor]:
        """Page ids and the exact ``[Q, P]`` MaxSim of the serving version (for evaluation and tests)."""
        v = self.store.open_serving(self.resident_bytes, self.verify_on_open)
        qs = [query_matrix(q, v.dim, i) for i, q in enumerate(queries)]
        return list(v.page_ids), v.score_all(qs, self.chunk_tokens)
