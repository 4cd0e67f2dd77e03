"""First stages for multi-vector search: one fixed vector per page, ranked by a dot product.

A first stage turns each page's token vectors ``[n, d]`` into one vector ``[D]`` and each
query's ``[m, d]`` into one vector ``[D]``; the pages whose vectors have the largest dot
product with the query's are the candidates, and the index then rescores the candidates
exactly (MaxSim). So a first stage only decides *which* pages get scored, never their score.

- ``none``: no first stage (exact MaxSim over every page).
- ``mean`` (:class:`MeanFirstStage`): the L2-normalised mean vector of the page / query,
  ``D = d``. Cheap, but a mean of ~100 token vectors is a blurred summary of the page.
- ``muvera`` (:class:`MuveraFirstStage`): MUVERA fixed dimensional encodings (FDE;
  Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings",
  arXiv 2405.19504), whose dot product approximates the Chamfer / MaxSim similarity.
- ``token_ivf`` (:mod:`anchorprune.index.token_ivf`): not a one-vector summary: each query
  token's nearest page tokens (inverted lists over k-means centroids locally, a nested
  ``dense_vector`` kNN per query token on Elasticsearch) pick the candidates by MaxSim over
  the tokens found. The only first stage that keeps recall on real pages at 100k
  (``benchmarks/results/first_stage.json``), and ``auto``'s target.

FDE, for each of ``reps`` independent repetitions ``r``:

1. SimHash partition: ``k_sim`` Gaussian vectors ``g_1..g_k`` split the space into
   ``B = 2**k_sim`` buckets; vector ``x`` falls in bucket ``b(x) = sum_i [g_i . x > 0] 2**i``.
2. Inner projection ``psi(x) = S x / sqrt(d_proj)`` with ``S`` a ``[d_proj, d]`` matrix of
   random signs (``d_proj = None``: no projection, ``psi(x) = x``).
3. Query block ``b``: ``sum_{q: b(q) = b} psi(q)`` (a sum; an empty bucket stays 0).
   Document block ``b``: ``mean_{p: b(p) = b} psi(p)`` (an average); an **empty** bucket is
   filled with ``psi(p*)`` where ``p*`` is the page vector whose sign bits are nearest to
   ``b``'s bits in Hamming distance (the first such vector on ties).
4. The ``B`` blocks of ``d_proj`` values are laid out bucket by bucket.

The repetitions are concatenated (``D = reps * B * d_proj``) and an optional final
projection ``x -> S' x / sqrt(final_dim)`` (random signs) brings ``D`` down to
``final_dim``. Every random matrix is drawn once from ``numpy.random.default_rng(seed)``
and kept in :attr:`MuveraFirstStage.state`, which an index stores beside its FDE
matrix, so reopening an index never depends on the RNG stream of the installed numpy.

Defaults (``k_sim=4, d_proj=16, reps=16``: 4,096 dims) stay within Elasticsearch's
4,096-dim ``dense_vector`` limit (:data:`anchorprune.limits.ES_MAX_DIMS`); Weaviate's defaults are 4 / 16 / 10 (2,560 dims).

Examples
--------
>>> import numpy as np
>>> fs = MuveraFirstStage.create(dim=8, k_sim=2, d_proj=4, reps=3, seed=0)
>>> fs.dims
48
>>> page = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)   # [n=5, d=8]
>>> fs.encode_document(page).shape, fs.encode_query(page[:2]).shape
((48,), (48,))
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from anchorprune.evaluation.bf16 import ComputePath
from anchorprune.index.base import IndexInputError, normalized_mean

FirstStageName = Literal["none", "mean", "muvera", "token_ivf"]
#: every first stage a build can prepare
STAGES = ("none", "mean", "muvera", "token_ivf")
#: ``first_stage: auto``: indexes of at least this many pages use ``first_stage_auto`` (``token_ivf``), smaller
#: ones exact MaxSim over every page. Measured (benchmarks/results/first_stage*.json, stand-in vectors): the
#: smallest size at which token_ivf with the default 500 candidates keeps recall@10 >= 0.99 at >= 5x lower p50
#: than exact (1.8x at 5,000 pages, 4.6x at 10,749, 5.2x at 20,000); ``index.first_stage_threshold`` overrides it.
AUTO_THRESHOLD_PAGES = 20_000


@runtime_checkable
class FirstStage(Protocol):
    """Maps pages and queries to one vector each; candidates = top dot products."""

    name: str
    dim: int            # token vector dimension d
    dims: int           # encoded dimension D

    def params(self) -> dict[str, Any]: ...

    def encode_document(self, vecs: np.ndarray) -> np.ndarray: ...

    def encode_query(self, vecs: np.ndarray) -> np.ndarray: ...


def _as_matrix(vecs: np.ndarray, dim: int, what: str) -> np.ndarray:
    v = np.asarray(vecs, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] != dim:
        raise IndexInputError(f"{what} has shape {v.shape}; the first stage expects [n >= 1, {dim}]")
    return v


@dataclass(frozen=True)
class MeanFirstStage:
    """The L2-normalised mean vector (``D = d``).

    >>> [round(float(x), 3) for x in MeanFirstStage(2).encode_document(np.array([[3.0, 0.0], [3.0, 8.0]]))]
    [0.6, 0.8]
    """

    dim: int
    name: str = "mean"

    @property
    def dims(self) -> int:
        return self.dim

    def params(self) -> dict[str, Any]:
        return {}

    def encode_document(self, vecs: np.ndarray) -> np.ndarray:      # [n, d] -> [d]
        return normalized_mean(_as_matrix(vecs, self.dim, "page"))

    def encode_query(self, vecs: np.ndarray) -> np.ndarray:         # [m, d] -> [d]
        return normalized_mean(_as_matrix(vecs, self.dim, "query"))


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each non-negative integer (< 2**16) of ``x``.

    >>> popcount(np.array([0, 1, 3, 255, 256])).tolist()
    [0, 1, 2, 8, 1]
    """
    x = np.asarray(x, dtype=np.int64)
    return _POPCOUNT8[x & 0xFF] + _POPCOUNT8[(x >> 8) & 0xFF]


@dataclass(frozen=True)
class MuveraFirstStage:
    """MUVERA fixed dimensional encodings (see the module docstring for the definition).

    Build one with :meth:`create` (draws the random matrices from ``seed``) or
    :meth:`from_state` (the matrices an index stored).
    """

    dim: int
    k_sim: int
    d_proj: int | None
    reps: int
    final_dim: int | None
    seed: int
    fill_empty: bool
    gauss: np.ndarray = field(repr=False)       # [reps, d, k_sim] SimHash hyperplanes
    proj: np.ndarray | None = field(repr=False)  # [reps, d, d_proj] ±1 inner projections (None: identity)
    final: np.ndarray | None = field(repr=False)  # [reps * B * d_proj, final_dim] ±1 final projection
    name: str = "muvera"

    @classmethod
    def create(cls, dim: int, k_sim: int = 4, d_proj: int | None = 16, reps: int = 16,
               final_dim: int | None = None, seed: int = 0, fill_empty: bool = True) -> MuveraFirstStage:
        if dim < 1 or not 0 <= k_sim <= 12 or reps < 1:
            raise IndexInputError(f"MUVERA needs dim >= 1, 0 <= k_sim <= 12 and reps >= 1; got dim={dim}, "
                                  f"k_sim={k_sim}, reps={reps}")
        if d_proj is not None and d_proj < 1:
            raise IndexInputError(f"MUVERA d_proj must be >= 1 or None (no projection), got {d_proj}")
        if final_dim is not None and final_dim < 1:
            raise IndexInputError(f"MUVERA final_dim must be >= 1 or None, got {final_dim}")
        rng = np.random.default_rng(seed)
        gauss = rng.standard_normal((reps, dim, k_sim)).astype(np.float32)
        proj = None if d_proj is None else rng.choice(np.array([-1.0, 1.0], np.float32), size=(reps, dim, d_proj))
        raw = reps * (1 << k_sim) * (dim if d_proj is None else d_proj)
        final = None if final_dim is None else rng.choice(np.array([-1.0, 1.0], np.float32), size=(raw, final_dim))
        return cls(dim, k_sim, d_proj, reps, final_dim, seed, fill_empty, gauss, proj, final)

    @classmethod
    def from_state(cls, params: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> MuveraFirstStage:
        """Rebuild from :meth:`params` and :attr:`state` (as an index stores them)."""
        p = dict(params)
        return cls(int(p["dim"]), int(p["k_sim"]), p["d_proj"], int(p["reps"]), p["final_dim"], int(p["seed"]),
                   bool(p["fill_empty"]), np.asarray(state["gauss"], np.float32),
                   None if "proj" not in state else np.asarray(state["proj"], np.float32),
                   None if "final" not in state else np.asarray(state["final"], np.float32))

    @property
    def buckets(self) -> int:
        return 1 << self.k_sim

    @property
    def block(self) -> int:
        return self.dim if self.d_proj is None else self.d_proj

    @property
    def raw_dims(self) -> int:
        return self.reps * self.buckets * self.block

    @property
    def dims(self) -> int:
        return self.raw_dims if self.final_dim is None else self.final_dim

    def fingerprint(self) -> str:
        """sha256 of the random matrices: an index built with these matrices records it, and a query
        encoder rebuilt from the stored params + seed must match it (numpy's RNG stream is not promised
        to stay the same across releases)."""
        h = hashlib.sha256()
        for key, arr in sorted(self.state.items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        return h.hexdigest()

    @property
    def state(self) -> dict[str, np.ndarray]:
        out = {"gauss": self.gauss}
        if self.proj is not None:
            out["proj"] = self.proj
        if self.final is not None:
            out["final"] = self.final
        return out

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "k_sim": self.k_sim, "d_proj": self.d_proj, "reps": self.reps,
                "final_dim": self.final_dim, "seed": self.seed, "fill_empty": self.fill_empty,
                "dims": self.dims}

    # ------------------------------------------------------------ encoding
    @cached_property
    def _gauss_flat(self) -> np.ndarray:         # [d, reps * k_sim], repetition-major columns
        return np.ascontiguousarray(self.gauss.transpose(1, 0, 2).reshape(self.dim, -1))

    @cached_property
    def _proj_flat(self) -> np.ndarray:          # [d, reps * d_proj]
        assert self.proj is not None
        return np.ascontiguousarray(self.proj.transpose(1, 0, 2).reshape(self.dim, -1))

    def codes(self, vecs: np.ndarray) -> np.ndarray:
        """Bucket of each vector in each repetition ``[n, reps]`` (bit i = sign of ``g_i . x``)."""
        bits = (vecs @ self._gauss_flat > 0).reshape(vecs.shape[0], self.reps, self.k_sim)                  # [n, reps, k_sim]
        return (bits * (1 << np.arange(self.k_sim))).sum(axis=2)                  # [n, reps]

    def projected(self, vecs: np.ndarray) -> np.ndarray:
        """``psi(x)`` of each vector in each repetition ``[n, reps, block]``."""
        if self.proj is None:
            return np.broadcast_to(vecs[:, None, :], (vecs.shape[0], self.reps, self.dim))
        return (vecs @ self._proj_flat).reshape(-1, self.reps, self.d_proj) / np.float32(np.sqrt(self.d_proj))

    def _encode(self, vecs: np.ndarray, document: bool) -> np.ndarray:
        codes = self.codes(vecs)                                                  # [n, R]
        psi = self.projected(vecs)                                                # [n, R, p]
        flat = (codes + np.arange(self.reps) * self.buckets).T.reshape(-1)        # [R * n] rep-major
        sums = np.zeros((self.reps * self.buckets, self.block), np.float32)       # [R * B, p]
        np.add.at(sums, flat, psi.transpose(1, 0, 2).reshape(-1, self.block))
        if document:
            counts = np.bincount(flat, minlength=self.reps * self.buckets).astype(np.float32)   # [R * B]
            filled = counts > 0
            sums[filled] /= counts[filled, None]
            if self.fill_empty and not filled.all():
                empty = np.flatnonzero(~filled)                                    # flat ids r * B + b
                r, b = np.divmod(empty, self.buckets)
                ham = popcount(codes[:, r] ^ b[None, :])                           # [n, E]
                nearest = ham.argmin(axis=0)                                      # first on ties
                sums[empty] = psi[nearest, r]
        out = sums.reshape(-1)                                                    # [R * B * p]
        if self.final is not None:
            out = out @ self.final / np.float32(np.sqrt(self.final_dim))
        return out.astype(np.float32)

    def encode_document(self, vecs: np.ndarray) -> np.ndarray:      # [n, d] -> [D]
        return self._encode(_as_matrix(vecs, self.dim, "page"), document=True)

    def encode_query(self, vecs: np.ndarray) -> np.ndarray:         # [m, d] -> [D]
        return self._encode(_as_matrix(vecs, self.dim, "query"), document=False)


def resolve_first_stage(first_stage: str | None, two_stage: bool = False) -> str:
    """The first stage an index is configured with: ``first_stage``, or (None) ``mean`` if ``two_stage``
    else ``none`` (what ``null`` has always meant). ``auto`` is resolved per version by :func:`auto_stage`.

    >>> resolve_first_stage(None, True), resolve_first_stage(None), resolve_first_stage("muvera")
    ('mean', 'none', 'muvera')
    """
    name = first_stage if first_stage is not None else ("mean" if two_stage else "none")
    if name not in (*STAGES, "auto"):
        raise IndexInputError(f"first stage {name!r} is not one of {', '.join(STAGES)}, auto")
    return name


def built_stage(configured: str, auto_target: str = "token_ivf") -> FirstStageName:
    """The first stage a build prepares vectors for: ``auto`` builds its target's (a version may grow past
    the threshold by incremental rebuilds, and a build over a generator does not know its size up front).

    >>> built_stage("auto"), built_stage("auto", "mean"), built_stage("none")
    ('token_ivf', 'mean', 'none')
    """
    stage = auto_target if configured == "auto" else configured
    if stage not in STAGES:
        raise IndexInputError(f"first stage {stage!r} is not one of {', '.join(STAGES)}")
    return stage  # type: ignore[return-value]


def auto_stage(configured: str, pages: int, threshold: int | None = None,
               auto_target: str = "token_ivf") -> FirstStageName:
    """The first stage a search over ``pages`` pages uses: ``configured``, or for ``auto`` ``none`` below
    ``threshold`` pages (default :data:`AUTO_THRESHOLD_PAGES`) and ``auto_target`` at or above it.

    >>> auto_stage("auto", 19_999), auto_stage("auto", 20_000), auto_stage("mean", 5), auto_stage("auto", 50, 10)
    ('none', 'token_ivf', 'mean', 'token_ivf')
    """
    if configured != "auto":
        return built_stage(configured)
    limit = AUTO_THRESHOLD_PAGES if threshold is None else threshold
    return built_stage(auto_target) if pages >= limit else "none"


def stage_record(configured: str, threshold: int | None, auto_target: str, pages: int) -> dict[str, Any]:
    """What a manifest adds about ``auto`` (nothing for a fixed first stage): the threshold, the target
    and what the version resolves to at its size.

    >>> stage_record("auto", 100, "muvera", 99)
    {'configured': 'auto', 'threshold': 100, 'auto_target': 'muvera', 'resolved': 'none'}
    >>> stage_record("mean", None, "muvera", 99)
    {}
    """
    if configured != "auto":
        return {}
    limit = AUTO_THRESHOLD_PAGES if threshold is None else threshold
    return {"configured": "auto", "threshold": limit, "auto_target": auto_target,
            "resolved": auto_stage("auto", pages, limit, auto_target)}


@dataclass(frozen=True)
class SearchReport:
    """How a search was answered: the first stage used, the pages it handed to exact MaxSim, of how many."""

    first_stage: str        # "none" (every page scored exactly), "mean", "muvera" or "token_ivf"
    candidates: int         # pages rescored exactly
    pages: int              # pages in the serving version
    version: int            # the serving version number
    configured: str | None = None   # what the index was configured with when it differs ("auto")
    scoring: ComputePath | None = None   # float32 / bfloat16 compute, bf16 accelerated or not


def make_first_stage(name: str, dim: int, params: Mapping[str, Any] | None = None) -> FirstStage | None:
    """The first stage ``name`` for ``dim``-dimensional token vectors (``none``: None).

    >>> make_first_stage("muvera", 128, {"k_sim": 3, "d_proj": 8, "reps": 2}).dims
    128
    >>> make_first_stage("none", 128) is None
    True
    """
    p = dict(params or {})
    if name == "none":
        return None
    if name == "mean":
        return MeanFirstStage(dim)
    if name == "muvera":
        p.pop("dims", None)
        p.pop("dim", None)
        return MuveraFirstStage.create(dim, **p)
    raise IndexInputError(f"first stage {name!r} is not one of none, mean, muvera")


def top_candidates(codes: np.ndarray, query_code: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``codes [P, D]`` with the ``n`` largest dot products with ``query_code [D]``, in row order.

    One matmul (``[P, D] @ [D]``) and a partial sort; ``n >= P`` returns every row.

    >>> top_candidates(np.eye(4, dtype=np.float32), np.array([0, 3, 1, 2], np.float32), 2).tolist()
    [1, 3]
    """
    p = codes.shape[0]
    if n >= p:
        return np.arange(p)
    scores = codes @ query_code.astype(codes.dtype, copy=False)                   # [P]
    cand = np.argpartition(-scores, n - 1)[:n]
    cand.sort()
    return cand
