"""Token-level first stage: each query token's nearest page tokens pick the candidate pages.

A one-vector summary of a page (its mean, or a MUVERA FDE) cannot order the near-ties that short
queries produce: at 100k pages MUVERA kept at most 0.57 of the exact top 10 at 2,000 candidates
(``benchmarks/results/first_stage.json``). This first stage works on the token vectors themselves,
as ColBERT's candidate generation (Khattab & Zaharia, SIGIR 2020, section 3.6: each query token's
nearest document vectors, their pages are the candidates) and PLAID's inverted lists over
centroids (Santhanam et al., CIKM 2022) do:

1. **Build.** Spherical k-means (``centroids`` unit vectors, trained on a seeded uniform sample of
   the stored token vectors) partitions every stored token vector into an inverted list, the list
   of its nearest centroid (largest dot product). The lists keep the token rows in file order.
2. **Search.** For each query token ``q_i``: score the centroids, probe the ``nprobe`` best lists,
   and compute the exact dot product of ``q_i`` with every token in them. Page ``p`` gets
   ``s_i(p) = max`` over its probed tokens; a page none of whose tokens were probed gets the
   smallest similarity seen for ``q_i`` (an upper-bound guess of what it would have had, the
   imputation of XTR, Lee et al. 2023). The approximate score is ``sum_i s_i(p)`` (MaxSim over the
   probed tokens), and the ``candidates`` best pages go on to exact MaxSim over all their vectors.

So the approximation is MaxSim itself, restricted to the tokens near the query's; with
``nprobe >= centroids`` every token is probed and the approximate score *is* exact MaxSim.
Cost per query: ``m * (centroids + nprobe * T / centroids) * d`` multiply-adds instead of
``m * T * d``.

The build is streamed: the vectors are already on disk, the sample is read back from them, and
assignment runs in chunks, so memory is the centroids plus one int32 per token.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> vecs = rng.standard_normal((60, 8)).astype(np.float32)                 # [T=60, d=8]
>>> vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
>>> offsets = np.arange(0, 61, 6)                                          # 10 pages of 6 vectors
>>> ivf = TokenIvf.train(lambda rows: vecs[rows], offsets, TokenIvfParams(centroids=4, seed=0))
>>> ivf.centroids.shape, int(ivf.list_offsets[-1])
((4, 8), 60)
>>> cand = ivf.candidates(vecs[6:9], lambda rows: vecs[rows], 10, n=3, nprobe=4)   # page 1's own vectors
>>> len(cand), 1 in cand.tolist()
(3, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from anchorprune.index.base import IndexInputError
from anchorprune.index_config import TOKEN_IVF_RETRAIN_CHANGED, TOKEN_IVF_RETRAIN_DRIFT
from anchorprune.limits import KMEANS_SAMPLE_PER_CENTROID

#: ``vectors(rows)``: the float32 token vectors ``[len(rows), d]`` of the given (ascending) rows
RowReader = Callable[[np.ndarray], np.ndarray]
#: token vectors the k-means sample holds per centroid (faiss's default ``max_points_per_centroid`` is 256)
SAMPLE_PER_CENTROID = KMEANS_SAMPLE_PER_CENTROID
#: defaults of the incremental rebuild's thresholds (the measurement: anchorprune.index_config)
RETRAIN_DRIFT = TOKEN_IVF_RETRAIN_DRIFT
RETRAIN_CHANGED = TOKEN_IVF_RETRAIN_CHANGED
#: rows read back from the stored vectors per step at build
_ASSIGN_CHUNK = 1 << 16
#: float32 elements of one ``[rows, K]`` similarity block (64 MiB)
_SIM_ELEMENTS = 1 << 24


def auto_centroids(tokens: int) -> int:
    """A power of two near ``2 * sqrt(tokens)``, between 1 and 16,384 and at most ``tokens``.

    PLAID takes ``2 ** floor(log2(16 * sqrt(T)))``; an eighth of that keeps k-means and the
    assignment (``T * K * d`` multiply-adds, the build's cost) affordable on a CPU, and lists stay
    short enough (~1,600 tokens at 100k pages) for a query token to scan ``nprobe`` of them.

    >>> auto_centroids(693_296), auto_centroids(6_539_816), auto_centroids(40), auto_centroids(1)
    (2048, 4096, 16, 1)
    """
    if tokens < 1:
        raise IndexInputError(f"token_ivf needs at least one token vector, got {tokens}")
    k = 1 << max(0, round(math.log2(2 * math.sqrt(tokens))))
    return int(min(k, 1 << 14, 1 << int(math.floor(math.log2(tokens)))))


@dataclass(frozen=True)
class TokenIvfParams:
    """Build parameters (``centroids=None``: :func:`auto_centroids`) and the search default ``nprobe``."""

    centroids: int | None = None
    nprobe: int = 8
    iters: int = 8
    seed: int = 0
    #: a rebuild keeps the serving version's centroids unless the new tokens drift past this or this share (or more) of
    #: the tokens changed since training (anchorprune.index.ivf_update; defaults: index_config.TokenIvfConfig)
    retrain_drift: float = RETRAIN_DRIFT
    retrain_changed: float = RETRAIN_CHANGED

    def __post_init__(self) -> None:
        if self.centroids is not None and self.centroids < 1:
            raise IndexInputError(f"token_ivf centroids must be >= 1 or null (auto), got {self.centroids}")
        if self.nprobe < 1 or self.iters < 0:
            raise IndexInputError(f"token_ivf needs nprobe >= 1 and iters >= 0, got nprobe={self.nprobe}, "
                                  f"iters={self.iters}")
        if self.retrain_drift < 0 or self.retrain_changed < 0:
            raise IndexInputError(f"token_ivf retrain_drift and retrain_changed must be >= 0 (0: always retrain), "
                                  f"got {self.retrain_drift} and {self.retrain_changed}")

    @classmethod
    def of(cls, params: dict[str, Any] | None) -> TokenIvfParams:
        p = {k: v for k, v in dict(params or {}).items() if k in cls.__dataclass_fields__}
        return cls(**p)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def kmeans(sample: np.ndarray, k: int, iters: int, seed: int, inplace: bool = False) -> np.ndarray:
    """Spherical k-means ``[k, d]`` (unit centroids, assignment by largest dot product) on ``sample [S, d]``.

    Seeded: the first centroids are ``k`` distinct sample rows drawn with ``seed``; an emptied
    centroid keeps its previous position. ``inplace``: normalise a writable float32 ``sample`` in place
    (the build's own sample: one copy in memory, not two).
    """
    x = torch.from_numpy(np.require(sample, np.float32, ["C", "W"]) if inplace
                         else np.array(sample, dtype=np.float32))                            # [S, d]
    x /= x.norm(dim=1, keepdim=True).clamp_min(1e-12)                                      # unit rows
    if x.shape[0] < k:
        raise IndexInputError(f"k-means needs at least {k} sample vectors, got {x.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()                              # [k, d]
    for _ in tqdm(range(iters), desc=f"token_ivf: k-means, {k} centroids", unit="iter", disable=None):
        a = assign(x, c)                                                                   # [S]
        sums = torch.zeros_like(c).index_add_(0, a, x)
        filled = torch.bincount(a, minlength=k) > 0
        c[filled] = _normalize(sums[filled])
    return c.numpy()


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid (largest dot product) of each row of ``x [n, d]``, ``[n]`` int64.

    Rows go through in blocks whose ``[rows, K]`` similarity buffer stays near 64 MiB.
    """
    step = max(1, _SIM_ELEMENTS // max(centroids.shape[0], 1))
    return torch.cat([(x[a:a + step] @ centroids.T).argmax(1) for a in range(0, x.shape[0], step)]
                     or [torch.zeros(0, dtype=torch.int64)])


def assign_scored(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign`, and each row's assignment distance ``1 - cos(x_i, nearest centroid)`` ``[n]`` float32.

    The distance is what the incremental rebuild measures drift with (:mod:`anchorprune.index.ivf_update`):
    the cosine, so it does not depend on the (unnormalised) length of the stored vectors.
    """
    step = max(1, _SIM_ELEMENTS // max(centroids.shape[0], 1))
    codes, dist = [], []
    for a in range(0, x.shape[0], step):
        block = x[a:a + step]                                                             # [r, d]
        best, idx = (block @ centroids.T).max(1)                                          # [r], [r]
        dist.append(1 - best / block.norm(dim=1).clamp_min(1e-12))
        codes.append(idx)
    if not codes:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    return torch.cat(codes), torch.cat(dist)


def assign_rows(vectors: RowReader, rows: np.ndarray, centroids: np.ndarray,
                desc: str = "token_ivf: assign") -> tuple[np.ndarray, np.ndarray]:
    """The list of each of ``rows`` (read chunk by chunk through ``vectors``) ``[len(rows)]`` int32, and
    each one's assignment distance ``[len(rows)]`` float32 (:func:`assign_scored`)."""
    ct = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))                 # [K, d]
    codes = np.empty(rows.shape[0], dtype=np.int32)
    dist = np.empty(rows.shape[0], dtype=np.float32)
    for a in tqdm(range(0, rows.shape[0], _ASSIGN_CHUNK), desc=desc, unit="chunk", disable=None):
        chunk = torch.from_numpy(np.ascontiguousarray(vectors(rows[a:a + _ASSIGN_CHUNK]), dtype=np.float32))
        idx, d = assign_scored(chunk, ct)
        codes[a:a + chunk.shape[0]] = idx.numpy()
        dist[a:a + chunk.shape[0]] = d.numpy()
    return codes, dist


@dataclass(frozen=True)
class TokenIvf:
    """Inverted lists over the token vectors of one index version (see the module docstring)."""

    centroids: np.ndarray      # [K, d] float32, unit rows
    list_offsets: np.ndarray   # [K + 1] int64: list c holds order[list_offsets[c]:list_offsets[c + 1]]
    order: np.ndarray          # [T] int32: token rows grouped by list, ascending within a list
    token_page: np.ndarray     # [T] int32: the page of each row of ``order``
    params: TokenIvfParams
    #: where the centroids came from (trained here, or carried from an earlier version) and the drift measured
    #: on the way (:mod:`anchorprune.index.ivf_update`); recorded in the manifest
    lineage: dict[str, Any] = field(default_factory=dict)

    FILES = ("ivf_centroids.npy", "ivf_lists.npy", "ivf_order.npy", "ivf_pages.npy")

    @classmethod
    def train(cls, vectors: RowReader, offsets: np.ndarray, params: TokenIvfParams) -> TokenIvf:
        """k-means on a seeded uniform sample of the ``T = offsets[-1]`` token rows, then every row
        assigned to its list, chunk by chunk (``vectors`` reads rows back from the stored file)."""
        total = int(offsets[-1])
        if total >= 2**31:
            raise IndexInputError(f"token_ivf stores int32 row numbers; {total} token vectors is too many")
        k = params.centroids or auto_centroids(total)
        if k > total:
            raise IndexInputError(f"token_ivf centroids={k} is more than the {total} token vectors of the index")
        rng = np.random.default_rng(params.seed)
        n_sample = min(total, k * SAMPLE_PER_CENTROID)
        rows = np.sort(rng.choice(total, n_sample, replace=False)) if n_sample < total else np.arange(total)
        cents = kmeans(vectors(rows), k, params.iters, params.seed, inplace=True)          # [K, d] (sample freed)
        codes, dist = assign_rows(vectors, np.arange(total), cents, f"token_ivf: {k} lists")   # [T], [T]
        # the baseline later rebuilds measure drift against: the mean assignment distance of the tokens k-means
        # did not see (the sample's own distance is optimistic; all tokens when the sample is all of them)
        held_out = np.ones(total, dtype=bool)
        held_out[rows] = n_sample == total
        lineage = {"trained_tokens": total, "train_distance": round(float(dist[held_out].mean()) if total else 0.0, 6),
                   "rebuilds_since_train": 0, "changed_since_train": 0.0}
        return cls.from_codes(cents, codes, offsets, replace(params, centroids=k), lineage)

    @classmethod
    def from_codes(cls, centroids: np.ndarray, codes: np.ndarray, offsets: np.ndarray, params: TokenIvfParams,
                   lineage: dict[str, Any] | None = None) -> TokenIvf:
        """The lists of token rows whose list numbers are ``codes [T]`` (pages by ``offsets [P + 1]``)."""
        k = centroids.shape[0]
        order = np.argsort(codes, kind="stable").astype(np.int32)                        # rows ascending per list
        list_offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(np.bincount(codes, minlength=k), out=list_offsets[1:])
        token_page = (np.searchsorted(offsets, order, side="right") - 1).astype(np.int32)
        return cls(centroids, list_offsets, order, token_page, params, dict(lineage or {}))

    def codes(self) -> np.ndarray:
        """``[T]`` int32: the list of each token row (the inverse of ``order`` / ``list_offsets``).

        Raises :class:`IndexInputError` when ``order`` is not a permutation of the rows (a damaged
        version: then its lists cannot be carried into a rebuild).
        """
        total = self.order.shape[0]
        codes = np.full(total, -1, dtype=np.int32)
        codes[np.asarray(self.order)] = np.repeat(np.arange(self.centroids.shape[0], dtype=np.int32),
                                                  np.diff(self.list_offsets))
        if total and codes.min() < 0:
            raise IndexInputError(f"ivf_order.npy names {int((codes < 0).sum())} of its {total} token rows "
                                  "twice or never: not a permutation")
        return codes

    def record(self) -> dict[str, Any]:
        """What a manifest keeps: the build parameters and the list sizes."""
        sizes = np.diff(self.list_offsets)
        return {"centroids": int(self.centroids.shape[0]), "nprobe": self.params.nprobe, "iters": self.params.iters,
                "seed": self.params.seed, "sample_per_centroid": SAMPLE_PER_CENTROID,
                "list_tokens_max": int(sizes.max()), "empty_lists": int((sizes == 0).sum()), **self.lineage}

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(self.FILES, (self.centroids, self.list_offsets, self.order, self.token_page), strict=True))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: TokenIvfParams,
                    lineage: dict[str, Any] | None = None) -> TokenIvf:
        c, lists, order, pages = (arrays[f] for f in cls.FILES)
        return cls(np.array(c, np.float32), np.array(lists, np.int64), order, pages, params,   # small: copied
                   dict(lineage or {}))

    def problems(self, pages: int, tokens: int, dim: int) -> list[str]:
        """What is inconsistent with a version of ``pages`` pages, ``tokens`` vectors of ``dim`` dims."""
        out = []
        k = self.centroids.shape[0]
        if self.centroids.ndim != 2 or self.centroids.shape[1] != dim:
            out.append(f"ivf_centroids.npy has shape {self.centroids.shape}, expected [K, {dim}]")
        lo = self.list_offsets
        if lo.shape != (k + 1,) or lo[0] != 0 or lo[-1] != tokens or (np.diff(lo) < 0).any():
            out.append(f"ivf_lists.npy does not describe {k} lists over {tokens} token vectors")
        if self.order.shape != (tokens,) or self.token_page.shape != (tokens,):
            out.append(f"ivf_order.npy / ivf_pages.npy do not hold {tokens} rows")
        elif tokens and (self.token_page.min() < 0 or self.token_page.max() >= pages):
            out.append(f"ivf_pages.npy names pages outside 0..{pages - 1}")
        return out

    def approximate_scores(self, q: np.ndarray, vectors: RowReader, n_pages: int,
                           nprobe: int) -> np.ndarray:
        """``[P]`` MaxSim of query ``q [m, d]`` over the probed tokens (imputed where none was probed)."""
        cents = torch.from_numpy(self.centroids)
        qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))                  # [m, d]
        nprobe = min(nprobe, cents.shape[0])
        probe = torch.topk(qt @ cents.T, nprobe, dim=1).indices.numpy()                  # [m, nprobe]
        total = torch.zeros(n_pages, dtype=torch.float32)                                 # [P]
        for i in range(qt.shape[0]):
            lists = np.sort(probe[i])
            idx = np.concatenate([np.arange(self.list_offsets[c], self.list_offsets[c + 1]) for c in lists])
            if idx.size == 0:
                continue
            rows = self.order[idx]                                                        # ascending per list
            sims = torch.from_numpy(np.ascontiguousarray(vectors(rows), dtype=np.float32)) @ qt[i]   # [r]
            best = torch.full((n_pages,), -torch.inf).scatter_reduce_(
                0, torch.from_numpy(self.token_page[idx].astype(np.int64)), sims, "amax", include_self=True)
            total += torch.where(torch.isfinite(best), best, sims.min())
        return total.numpy()

    def candidates(self, q: np.ndarray, vectors: RowReader, n_pages: int, n: int,
                   nprobe: int | None = None) -> np.ndarray:
        """The ``n`` pages with the best approximate scores, in page order."""
        if n >= n_pages:
            return np.arange(n_pages)
        s = self.approximate_scores(q, vectors, n_pages, nprobe or self.params.nprobe)
        cand = np.argpartition(-s, n - 1)[:n]
        cand.sort()
        return cand
