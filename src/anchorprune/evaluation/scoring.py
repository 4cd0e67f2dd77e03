"""Exhaustive late-interaction (MaxSim) scoring, batched over packed pages (docs/method.md §3, §5).

bf16 detection and the :class:`~anchorprune.evaluation.bf16.ComputePath` record live in
:mod:`anchorprune.evaluation.bf16`.

``MaxSim(Q, D) = sum_i max_j q_i . d_j``. Pages are stored *packed*: all page
vectors concatenated into one ``[T, d]`` matrix plus ``offsets [P + 1]`` (page
``p`` owns rows ``offsets[p]:offsets[p + 1]``). There are no padding rows, so
nothing but a real page vector can win a max.

:func:`score_packed` stacks every query token into one ``[M, d]`` matrix,
multiplies it with one chunk of whole pages at a time (one large matmul into a
reused buffer, so memory stays bounded), takes the max over each page's column
range with a segmented reduction, and sums the maxima per query.

Examples
--------
>>> import torch
>>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])                      # [m=2, d=2]
>>> pages = [torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 2.0]])]
>>> maxsim(q, pages)
tensor([1.5000, 2.0000])
>>> vecs, offsets = pack(pages)
>>> offsets.tolist()
[0, 2, 3]
>>> score_packed([q, q[:1]], vecs, offsets)
tensor([[1.5000, 2.0000],
        [1.0000, 0.0000]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from anchorprune.evaluation.bf16 import ComputePath, auto_compute

log = logging.getLogger(__name__)

#: default bound on the ``[M, chunk_tokens]`` similarity buffer, in float32 elements (64 MiB)
DEFAULT_BUFFER_ELEMENTS = 1 << 24
#: default cap on page vectors per chunk (few query tokens would otherwise ask for huge chunks)
MAX_DEFAULT_CHUNK_TOKENS = 1 << 16


_ALIGN = 16   # matmul width granularity (columns); see score_packed

Compute = Literal["float32", "bfloat16", "auto"]
COMPUTES = ("float32", "bfloat16", "auto")


def resolve_compute(vecs_dtype: torch.dtype, compute: Compute = "float32") -> str:
    """The dtype the matmuls will run in: ``"float32"`` or ``"bfloat16"``.

    ``"auto"``: :func:`anchorprune.evaluation.bf16.auto_compute` (bfloat16 only for bfloat16-stored vectors
    on a CPU that multiplies bf16 natively). ``"bfloat16"`` forces bf16 matmuls (fp32 max and sum); ``"float32"`` is exact.

    >>> import torch
    >>> resolve_compute(torch.float32, "auto"), resolve_compute(torch.float16, "bfloat16")
    ('float32', 'bfloat16')
    """
    if compute not in COMPUTES:
        raise ScoringError(f"compute must be one of {COMPUTES}, got {compute!r}")
    return auto_compute(vecs_dtype) if compute == "auto" else compute


def _nonfinite_rows(chunk: torch.Tensor) -> np.ndarray:
    """``[t]`` bool: rows holding NaN/inf (numpy, single-threaded; bfloat16 checked on its bits).

    bfloat16 is screened first with one max over the magnitude bits (a third of the row-wise test's time):
    the rows are only looked for when some value has its exponent all ones.
    """
    if chunk.dtype == torch.bfloat16:
        bits = chunk.view(torch.int16).numpy()
        if bits.size == 0 or int(np.max(bits & 0x7FFF)) < 0x7F80:       # no exponent all ones: all finite
            return np.zeros(bits.shape[0], dtype=bool)
        return ((bits & 0x7F80) == 0x7F80).any(axis=1)                  # exponent all ones: inf or NaN
    return ~np.isfinite(chunk.numpy()).all(axis=1)


def _check_finite(rows: torch.Tensor, first: int, off: np.ndarray, page_ids: Sequence[str] | None) -> None:
    """Raise :class:`ScoringError` naming the page (and vector) of the first NaN/inf in ``rows [t, d]``, the packed
    rows ``first..first + t`` of pages ``off [P + 1]``."""
    bad = _nonfinite_rows(rows)
    if bad.any():
        bad_row = first + int(np.flatnonzero(bad)[0])
        p = int(np.searchsorted(off, bad_row, side="right")) - 1
        raise ScoringError(f"{_name(page_ids, p)} contains NaN or inf (vector {bad_row - int(off[p])}); "
                           "re-encode it or drop it from the index")


def page_max(sim: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per-page maxima ``[n, M]`` of a similarity block ``sim [t, M]`` whose rows are page vectors (page ``i``
    is rows ``starts[i]:ends[i]``): one contiguous reduce over each page's rows, vectorised across the ``M``
    query tokens.

    The block is laid out page rows by query tokens (``chunk @ queries.T``) so that a page is a run of whole
    rows: a ``reduceat`` along the columns of the transposed block ran one inner loop per (query token,
    page) -- 1.2 M of them for a chunk of 617 pruned pages of 8-20 vectors, slower than the matmul itself
    (32 vs 25 ms), where this runs 617 vectorised reduces (2.8 ms).

    >>> page_max(np.array([[1, 5], [3, 2], [0, 9]]), np.array([0, 2]), np.array([2, 3])).tolist()
    [[3, 5], [0, 9]]
    """
    out = np.empty((starts.shape[0], sim.shape[1]), dtype=sim.dtype)                    # [n, M]
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        np.maximum.reduce(sim[s:e], axis=0, out=out[i])
    return out


def bf16_page_max(sim16: torch.Tensor, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per-page maxima ``[n, M]`` float32 of a bf16 similarity block ``sim16 [t, M]`` (page ``i`` is rows
    ``starts[i]:ends[i]``): exactly the maxima of the block converted to float32, without converting it.

    The max runs on the bf16 bit patterns read as int16 (half the bytes of float32, no conversion pass over
    the block; only the ``[n, M]`` maxima are widened). Signed int16 order matches float order among
    non-negative values, and is reversed among negative ones, so a segment's float max is its largest int16
    when that is >= 0 (some value is >= +0.0), else its smallest int16 (every value negative: the one
    nearest zero, -0.0 first). Values must not be NaN (scored vectors are checked finite). The only
    difference from a float max: a page whose maximum is zero may get +0.0 where numpy returned -0.0.

    >>> import torch
    >>> s = torch.tensor([[0.5, -2.0, -0.25, -1.0, 3.0], [-0.0, -1.0, -3.0, -0.5, 0.0]]).to(torch.bfloat16)
    >>> bf16_page_max(s.T.contiguous(), np.array([0, 2, 4]), np.array([2, 4, 5])).T.tolist()
    [[0.5, -0.25, 3.0], [-0.0, -0.5, 0.0]]
    """
    bits = sim16.view(torch.int16).numpy()                              # [t, M] bf16 bit patterns
    hi = page_max(bits, starts, ends)                                   # [n, M]
    neg = hi < 0                                                         # every value of the page < 0
    if neg.any():
        for i in np.flatnonzero(neg.any(axis=1)).tolist():
            hi[i] = np.where(neg[i], np.minimum.reduce(bits[starts[i]:ends[i]], axis=0), hi[i])
    return (hi.astype(np.int32) << 16).view(np.float32)                 # bf16 bits -> the same float32


def page_rows(offsets: np.ndarray, pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed rows of ``pages`` (in that order) and their offsets packed anew: ``(rows [t] int64,
    local offsets [len(pages) + 1] int64)`` for packed pages ``offsets [P + 1]``.

    >>> rows, local = page_rows(np.array([0, 2, 3, 5]), np.array([2, 0]))
    >>> rows.tolist(), local.tolist()
    ([3, 4, 0, 1], [0, 2, 4])
    """
    pages = np.asarray(pages, dtype=np.int64)
    starts, lengths = offsets[pages], offsets[pages + 1] - offsets[pages]
    local = np.zeros(len(pages) + 1, dtype=np.int64)
    np.cumsum(lengths, out=local[1:])
    return np.repeat(starts - local[:-1], lengths) + np.arange(local[-1]), local


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


class ScoringError(ValueError):
    """Inputs to MaxSim scoring are malformed (empty pages, NaN/inf, shape mismatch)."""


def pack(pages: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate page matrices ``[n_i, d]`` into ``(vecs [T, d], offsets [P + 1] int64)``.

    The dtype of the pages is kept (float16 pages stay float16).

    >>> import torch
    >>> v, o = pack([torch.zeros(3, 4), torch.ones(1, 4)])
    >>> tuple(v.shape), o.tolist()
    ((4, 4), [0, 3, 4])
    """
    if len(pages) == 0:
        raise ScoringError("pack() got no pages: pass at least one [n, d] tensor")
    dim = None
    lengths = []
    for i, p in enumerate(pages):
        if p.ndim != 2:
            raise ScoringError(f"page {i} has shape {tuple(p.shape)}; every page must be [n, d]")
        if p.shape[0] == 0:
            raise ScoringError(f"page {i} has no vectors; an empty page cannot be scored (drop it or keep >= 1)")
        if dim is None:
            dim = p.shape[1]
        elif p.shape[1] != dim:
            raise ScoringError(f"page {i} has dimension {p.shape[1]}, the first page has {dim}")
        lengths.append(p.shape[0])
    offsets = torch.zeros(len(pages) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return torch.cat(list(pages), dim=0), offsets


def _name(page_ids: Sequence[str] | None, p: int) -> str:
    return f"page {p} ({page_ids[p]!r})" if page_ids is not None else f"page {p}"


def _check_offsets(offsets: torch.Tensor, total: int, page_ids: Sequence[str] | None) -> np.ndarray:
    off = np.asarray(offsets.detach().cpu().numpy() if isinstance(offsets, torch.Tensor) else offsets,
                     dtype=np.int64)
    if off.ndim != 1 or off.shape[0] < 2:
        raise ScoringError(f"offsets must be a 1-D [P + 1] tensor with P >= 1, got shape {tuple(off.shape)}")
    if off[0] != 0 or off[-1] != total:
        raise ScoringError(f"offsets must start at 0 and end at the number of vectors ({total}), "
                           f"got {int(off[0])} .. {int(off[-1])}")
    lengths = np.diff(off)
    if (lengths <= 0).any():
        p = int(np.flatnonzero(lengths <= 0)[0])
        raise ScoringError(f"{_name(page_ids, p)} has {int(lengths[p])} vectors; empty pages cannot be scored")
    if page_ids is not None and len(page_ids) != len(lengths):
        raise ScoringError(f"{len(page_ids)} page ids for {len(lengths)} pages")
    return off


def _stack_queries(queries: Sequence[torch.Tensor], dim: int) -> tuple[torch.Tensor, np.ndarray]:
    """All query tokens ``[M, d]`` float32 and the first row of each query in it ``[Q]``."""
    if len(queries) == 0:
        raise ScoringError("no queries given: pass at least one [m, d] tensor")
    lengths = []
    for i, q in enumerate(queries):
        if q.ndim != 2 or q.shape[1] != dim:
            raise ScoringError(f"query {i} has shape {tuple(q.shape)}; expected [m, {dim}]")
        if q.shape[0] == 0:
            raise ScoringError(f"query {i} has no token vectors")
        lengths.append(q.shape[0])
    qtok = torch.cat([q.detach().to(torch.float32) for q in queries], dim=0).contiguous()     # [M, d]
    if not np.isfinite(qtok.numpy()).all():
        row = int(np.flatnonzero(~np.isfinite(qtok.numpy()).all(axis=1))[0])
        i = int(np.searchsorted(np.cumsum(lengths), row, side="right"))
        raise ScoringError(f"query {i} contains NaN or inf; re-encode it")
    starts = np.zeros(len(lengths), dtype=np.int64)
    starts[1:] = np.cumsum(lengths)[:-1]
    return qtok, starts


@dataclass(eq=False)
class PreparedPages:
    """A packed corpus made ready for repeated scoring (the serving version's resident copy).

    Built once by :func:`prepare`: the page vectors in the matmul dtype (``compute``), contiguous, with
    ``_ALIGN`` zero rows after the last page, so any chunk of whole pages can be multiplied at its padded
    width straight from this matrix (the rows past a chunk's end belong to the next pages or the zero tail;
    their columns are never read by the max), and already checked: offsets valid, no NaN/inf (the error
    named the page at prepare time). :func:`score_packed` over it does only the matmuls and reductions, and
    gives bit-identical results to the unprepared call on the same vectors.
    """

    padded: torch.Tensor          # [T + _ALIGN, d] compute dtype, rows T.. are zero
    offsets: np.ndarray           # [P + 1] int64, checked
    compute: str                  # "float32" | "bfloat16": the matmul dtype
    storage: str                  # dtype of the vectors it was prepared from, e.g. "float16"
    page_ids: Sequence[str] | None = None

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    @property
    def vecs(self) -> torch.Tensor:
        """The page vectors ``[T, d]`` (a view, no padding rows)."""
        return self.padded[: self.total]

    @property
    def num_pages(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def nbytes(self) -> int:
        return self.padded.numel() * self.padded.element_size()

    def take(self, pages: np.ndarray) -> PreparedPages:
        """The pages ``pages`` (in that order) as a new prepared corpus: one gather, no conversion or check
        (these rows were checked when this copy was prepared), e.g. a first stage's candidates.

        >>> import torch
        >>> pp = prepare(torch.arange(5.0)[:, None], torch.tensor([0, 2, 3, 5]), page_ids=["a", "b", "c"])
        >>> sub = pp.take(np.array([2, 0]))
        >>> sub.vecs[:, 0].tolist(), sub.offsets.tolist(), sub.page_ids
        ([3.0, 4.0, 0.0, 1.0], [0, 2, 4], ['c', 'a'])
        """
        pages = np.asarray(pages, dtype=np.int64)
        if pages.ndim != 1 or len(pages) == 0 or pages.min() < 0 or pages.max() >= self.num_pages:
            raise ScoringError(f"take() needs 1 to {self.num_pages} page positions in 0..{self.num_pages - 1}")
        rows, local = page_rows(self.offsets, pages)
        n = int(local[-1])
        idx = torch.from_numpy(rows)                                                     # [n] source rows
        padded = torch.empty(n + _ALIGN, self.padded.shape[1], dtype=self.padded.dtype)  # [n + _ALIGN, d]
        torch.index_select(self.padded, 0, idx, out=padded[:n])
        padded[n:].zero_()
        ids = [self.page_ids[int(p)] for p in pages] if self.page_ids is not None else None
        return PreparedPages(padded, local, self.compute, self.storage, ids)


def prepare(
    vecs: torch.Tensor | np.ndarray,       # [T, d] any float dtype (a memory map is read once, in order)
    offsets: torch.Tensor | np.ndarray,    # [P + 1] int64
    compute: Compute = "float32",
    page_ids: Sequence[str] | None = None,
    decode=None,                           # optional: raw rows [t, w] -> float32 [t, d] numpy (e.g. float16 / bits)
    dim: int | None = None,
    on_rows=None,                          # optional: called with every raw chunk read (e.g. a running checksum)
    step_rows: int = 1 << 16,
) -> PreparedPages:
    """Copy packed pages once into a :class:`PreparedPages` for ``compute`` (``"auto"``: see
    :func:`resolve_compute`), checking offsets and every vector for NaN/inf on the way.

    Raises :class:`ScoringError` naming the first page (and vector) holding NaN or inf.

    >>> import torch
    >>> pp = prepare(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), torch.tensor([0, 2, 3]))
    >>> tuple(pp.padded.shape), pp.compute
    ((19, 2), 'float32')
    >>> score_packed([torch.tensor([[1.0, 0.0]])], pp)
    tensor([[ 1., -1.]])
    """
    storage_dtype = vecs.dtype if isinstance(vecs, torch.Tensor) else torch.from_numpy(np.empty(0, vecs.dtype)).dtype
    total = vecs.shape[0]
    d = dim if dim is not None else vecs.shape[1]
    off = _check_offsets(offsets, total, page_ids)
    how = resolve_compute(storage_dtype, compute)
    mm_dtype = torch.bfloat16 if how == "bfloat16" else torch.float32
    padded = torch.empty(total + _ALIGN, d, dtype=mm_dtype)                # [T + _ALIGN, d]
    padded[total:].zero_()
    for a in range(0, total, step_rows):
        raw = vecs[a:a + step_rows]
        if on_rows is not None:
            on_rows(raw)
        if decode is not None:
            rows = torch.from_numpy(decode(np.asarray(raw)))                # [t, d] float32
        elif isinstance(raw, torch.Tensor):
            rows = raw.detach()
        else:
            rows = torch.from_numpy(np.asarray(raw))
        if rows.shape[1] != d:
            raise ScoringError(f"rows have dimension {rows.shape[1]}, expected {d}")
        dest = padded[a:a + rows.shape[0]]
        dest.copy_(rows)                                                    # -> float32 / bf16 (round to nearest)
        _check_finite(dest, a, off, page_ids)
    return PreparedPages(padded, off, how, str(storage_dtype).removeprefix("torch."), page_ids)


def score_packed(
    queries: Sequence[torch.Tensor],      # Q x [m_i, d]
    vecs: torch.Tensor | PreparedPages,   # [T, d] float32, float16 or bfloat16; or a prepared corpus
    offsets: torch.Tensor | None = None,  # [P + 1] int64 (None with a PreparedPages)
    chunk_tokens: int | None = None,
    page_ids: Sequence[str] | None = None,
    compute: Compute | None = None,
) -> torch.Tensor:
    """MaxSim of every query against every packed page: ``[Q, P]`` float32.

    Parameters
    ----------
    queries
        One ``[m_i, d]`` tensor per query (any float dtype; computed in float32).
    vecs, offsets
        Packed pages from :func:`pack` (or a memory-mapped index). ``vecs`` may be
        float16: each chunk is converted to float32 before the matmul. Or a
        :class:`PreparedPages` from :func:`prepare` (``offsets`` None): no copy, no NaN scan,
        the same scores bit for bit; ``compute`` must then be ``"auto"`` or its ``compute``.
    chunk_tokens
        Page vectors per matmul. Default: as many as keep the ``[M, chunk]``
        similarity buffer at ~64 MiB (``M`` = total query tokens), at most 65,536,
        never fewer than the longest page. Peak extra memory is about
        ``4 * (M + d) * chunk_tokens`` bytes.
    page_ids
        Optional names used in error messages.
    compute
        ``"float32"`` (default, exact: what evaluation uses), ``"bfloat16"`` (queries and page
        vectors rounded to bf16, bf16 matmul, max and sum in float32) or ``"auto"`` (bf16 only for
        bfloat16-stored vectors on a CPU that accelerates bf16, see :func:`resolve_compute`).
        None: ``"float32"``, or a :class:`PreparedPages`'s own compute.

    Raises
    ------
    ScoringError
        On empty pages or queries, mismatched dimensions, bad offsets, or NaN/inf in
        a query or a page (the message names the page).

    Examples
    --------
    >>> import torch
    >>> vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])   # page 0: rows 0-1, page 1: row 2
    >>> score_packed([torch.tensor([[1.0, 0.0]])], vecs, torch.tensor([0, 2, 3]))
    tensor([[ 1., -1.]])
    """
    if isinstance(vecs, PreparedPages):
        if offsets is not None:
            raise ScoringError("a PreparedPages carries its own offsets: pass offsets=None")
        if compute is not None and compute not in COMPUTES:
            raise ScoringError(f"compute must be one of {COMPUTES}, got {compute!r}")
        if compute not in (None, "auto", vecs.compute):
            raise ScoringError(f"these pages were prepared for {vecs.compute} matmuls, not {compute}; "
                               "prepare them again for that compute")
        prepared: PreparedPages | None = vecs
        source = vecs.padded
        total, dim = vecs.total, source.shape[1]
        off = vecs.offsets
        page_ids = vecs.page_ids if page_ids is None else page_ids
        mm_dtype = source.dtype
    else:
        prepared = None
        if vecs.ndim != 2:
            raise ScoringError(f"vecs must be [T, d], got shape {tuple(vecs.shape)}")
        if not vecs.is_floating_point():
            raise ScoringError(f"vecs must be a float tensor, got {vecs.dtype}")
        if offsets is None:
            raise ScoringError("offsets are required with a [T, d] tensor")
        total, dim = vecs.shape
        off = _check_offsets(offsets, total, page_ids)
        source = vecs.detach()
        how = resolve_compute(vecs.dtype, compute or "float32")
        mm_dtype = torch.bfloat16 if how == "bfloat16" else torch.float32
    num_pages = off.shape[0] - 1
    qtok, qstarts = _stack_queries(queries, dim)                       # [M, d], [Q]
    m = qtok.shape[0]
    longest = int(np.diff(off).max())
    if chunk_tokens is None:
        chunk_tokens = max(longest, min(DEFAULT_BUFFER_ELEMENTS // m, MAX_DEFAULT_CHUNK_TOKENS))
    elif chunk_tokens < 1:
        raise ScoringError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    cap = _round_up(min(max(chunk_tokens, longest), total), _ALIGN)   # widest chunk this call can see
    if mm_dtype == torch.float32:
        buffer = torch.empty(m * cap, dtype=torch.float32)             # similarities, [t_pad, M] views
    else:
        qtok = qtok.to(torch.bfloat16)                                   # [M, d] bf16
        buffer16 = torch.empty(m * cap, dtype=torch.bfloat16)          # bf16 matmul output, [t_pad, M] views
    stage: torch.Tensor | None = None                                  # page vectors padded to _ALIGN rows
    out = np.empty((len(queries), num_pages), dtype=np.float32)       # [Q, P]

    # Only the matmul is multi-threaded; the small reductions run in numpy (single-threaded), which stays
    # fast when the machine is oversubscribed (OpenMP reductions on small tensors then stall).
    # The chunk is padded to a multiple of _ALIGN rows: an odd width (e.g. 1030 or 8343) ran 1.4-2x slower
    # here; the padded rows of the [t_pad, M] block are never read by the max.
    a = 0
    while a < num_pages:
        # whole pages [a, b) whose vectors fit in chunk_tokens (at least one page)
        b = int(np.searchsorted(off, off[a] + chunk_tokens, side="right")) - 1
        b = min(max(b, a + 1), num_pages)
        lo, hi = int(off[a]), int(off[b])
        t = hi - lo
        t_pad = _round_up(t, _ALIGN)
        if prepared is not None:                                         # checked, converted, zero tail: a view
            chunk = source[lo:lo + t_pad]                                # [t_pad, d]
        else:
            chunk = source[lo:hi]
            if t_pad != t and lo + t_pad <= total and chunk.dtype == mm_dtype and source.is_contiguous():
                chunk = source[lo:lo + t_pad]        # the next pages' rows pad the width: never read by the max
            elif t_pad != t or chunk.dtype != mm_dtype or not chunk.is_contiguous():
                if stage is None:
                    stage = torch.empty(cap, dim, dtype=mm_dtype)
                stage[:t].copy_(chunk)                                   # float16/bf16 -> float32 here too
                stage[t:t_pad].zero_()
                chunk = stage[:t_pad]
            _check_finite(chunk[:t], lo, off, page_ids)
        starts, ends = off[a:b] - lo, off[a + 1:b + 1] - lo                 # [b - a] rows of each page
        if mm_dtype == torch.bfloat16:
            sim16 = buffer16[: t_pad * m].view(t_pad, m)                 # [t_pad, M] bf16 (fp32 accumulation)
            torch.mm(chunk, qtok.T, out=sim16)
            pmax = bf16_page_max(sim16, starts, ends)                    # [b - a, M] float32
        else:
            sim = buffer[: t_pad * m].view(t_pad, m)                     # [t_pad, M] float32
            torch.mm(chunk, qtok.T, out=sim)
            pmax = page_max(sim.numpy(), starts, ends)                   # [b - a, M]
        out[:, a:b] = np.add.reduceat(pmax, qstarts, axis=1).T                   # [Q, b - a]
        a = b
    return torch.from_numpy(out)


def maxsim(query: torch.Tensor, pages: Sequence[torch.Tensor]) -> torch.Tensor:
    """MaxSim of one query ``[m, d]`` against each page ``[n_i, d]``: ``[P]`` float32.

    >>> import torch
    >>> maxsim(torch.tensor([[1.0, 0.0]]), [torch.tensor([[0.2, 0.0], [0.7, 0.1]])])
    tensor([0.7000])
    """
    vecs, offsets = pack(pages)
    return score_packed([query], vecs, offsets)[0]


def maxsim_matrix(queries: Sequence[torch.Tensor], pages: Sequence[torch.Tensor],
                  compute: Compute = "float32") -> torch.Tensor:
    """``[Q, P]`` MaxSim of every query against every page (packs the pages, then :func:`score_packed`)."""
    vecs, offsets = pack(pages)
    return score_packed(queries, vecs, offsets, compute=compute)


# ---------------------------------------------------------------------------------------------
# bf16 scan, exact float32 rescoring of a shortlist
# ---------------------------------------------------------------------------------------------

def default_margin(k: int) -> int:
    """Extra shortlist pages beyond ``k`` for the bf16 scan: ``max(4k, 50)``.

    >>> default_margin(5), default_margin(20)
    (50, 80)
    """
    return max(4 * k, 50)


def gather_pages(vecs: torch.Tensor, offsets: torch.Tensor | np.ndarray,
                 pages: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``pages`` (in that order) packed anew: ``(rows [t, d], local offsets [len(pages) + 1])``.

    >>> import torch
    >>> v, o = gather_pages(torch.arange(5.0)[:, None], torch.tensor([0, 2, 3, 5]), np.array([2, 0]))
    >>> v[:, 0].tolist(), o.tolist()
    ([3.0, 4.0, 0.0, 1.0], [0, 2, 4])
    """
    off = np.asarray(offsets.numpy() if isinstance(offsets, torch.Tensor) else offsets, dtype=np.int64)
    idx, local = page_rows(off, pages)
    return vecs[torch.from_numpy(idx)], torch.from_numpy(local)


def score_shortlist(
    queries: Sequence[torch.Tensor],      # Q x [m_i, d]
    vecs: torch.Tensor | PreparedPages,   # [T, d] float32, float16 or bfloat16; or a prepared corpus
    offsets: torch.Tensor | None,         # [P + 1] int64 (None with a PreparedPages)
    k: int,
    compute: Compute = "auto",
    rescore_vecs: torch.Tensor | None = None,   # [T, d] float32 copy of the same pages (e.g. a memmap)
    margin: int | None = None,
    chunk_tokens: int | None = None,
    page_ids: Sequence[str] | None = None,
) -> tuple[torch.Tensor, ComputePath]:
    """Scores ``[Q, P]`` whose top ``k`` per query is exact float32 MaxSim, and the :class:`ComputePath`.

    Where ``compute`` resolves to float32 (:func:`resolve_compute`; ``"auto"`` on a CPU without native
    bf16) this is :func:`score_packed` in float32 over every page. Where it resolves to bfloat16, one bf16
    scan over every page keeps the best ``k + margin`` pages per query (``margin`` default
    :func:`default_margin`); those are rescored in float32 from ``rescore_vecs`` when given (a float32 copy
    of the same packed rows, touched only for the shortlist), else from ``vecs`` decoded to float32. Pages
    outside a query's shortlist score ``-inf``. bf16 rounding can only flip near-ties; the rescoring puts
    them back in exact order, so the top ``k`` differs from the float32 path only if a true top-``k`` page
    fell out of the shortlist.

    Examples
    --------
    >>> import torch
    >>> vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> s, path = score_shortlist([torch.tensor([[1.0, 0.0]])], vecs, torch.tensor([0, 1, 2, 3]), k=1,
    ...                           compute="bfloat16", margin=1)
    >>> s.tolist(), path.shortlist, path.rescore_source
    ([[1.0, -inf, 0.6000000238418579]], 2, 'stored vectors')
    """
    if k < 1:
        raise ScoringError(f"k must be >= 1, got {k}")
    if margin is not None and margin < 0:
        raise ScoringError(f"margin must be >= 0, got {margin}")
    requested = compute
    if isinstance(vecs, PreparedPages):          # the scan runs in the dtype the pages were prepared for
        if compute not in ("auto", vecs.compute):
            raise ScoringError(f"these pages were prepared for {vecs.compute} matmuls, not {compute}")
        storage, how, offsets, stored = vecs.storage, vecs.compute, torch.from_numpy(vecs.offsets), vecs.vecs
        if how == "bfloat16" and rescore_vecs is None and vecs.storage != "bfloat16":
            raise ScoringError(f"pages prepared for bf16 from {vecs.storage} vectors: pass rescore_vecs (the "
                               "float32 rows) for the exact rescoring")
        scan = score_packed(queries, vecs, chunk_tokens=chunk_tokens)
    else:
        storage, how, stored = str(vecs.dtype).removeprefix("torch."), resolve_compute(vecs.dtype, compute), vecs
        if how == "bfloat16" and rescore_vecs is not None and (rescore_vecs.shape != vecs.shape
                                                              or rescore_vecs.dtype != torch.float32):
            raise ScoringError(f"rescore_vecs must be float32 {tuple(vecs.shape)} (a copy of the scanned rows), "
                               f"got {rescore_vecs.dtype} {tuple(rescore_vecs.shape)}")
        scan = score_packed(queries, vecs, offsets, chunk_tokens=chunk_tokens, page_ids=page_ids, compute=how)
    if how == "float32":
        return scan, ComputePath.here(requested, "float32", storage)
    keep = min(scan.shape[1], k + (default_margin(k) if margin is None else margin))
    out = rescore_shortlist(queries, scan, rescore_vecs if rescore_vecs is not None else stored, offsets, keep)
    return out, ComputePath.here(requested, "bfloat16", storage, rescored=True, shortlist=keep,
                                 rescore_source="float32 copy" if rescore_vecs is not None else "stored vectors")


def rescore_shortlist(
    queries: Sequence[torch.Tensor],      # Q x [m_i, d]
    scan: torch.Tensor,                   # [Q, P] approximate scores (the bf16 scan)
    source: torch.Tensor,                 # [T, d] rows to rescore from (any float dtype; read as float32)
    offsets: torch.Tensor,                # [P + 1] int64
    keep: int,
) -> torch.Tensor:
    """Exact float32 MaxSim of each query against its ``keep`` best pages by ``scan``; ``-inf`` elsewhere.

    Only the rows of pages on some query's shortlist are read (a memory map stays mostly untouched), once,
    and every query is scored against that union in one :func:`score_packed` call (one query at a time
    would run matmuls of a few rows each, bound by memory traffic); each query then keeps its own
    shortlist's scores.

    >>> import torch
    >>> src = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> rescore_shortlist([torch.tensor([[1.0, 0.0]])], torch.tensor([[0.9, 0.1, 0.5]]), src,
    ...                   torch.tensor([0, 1, 2, 3]), keep=2).tolist()
    [[1.0, -inf, 0.0]]
    """
    if not 1 <= keep <= scan.shape[1]:
        raise ScoringError(f"keep must be in 1..{scan.shape[1]} (pages), got {keep}")
    short = torch.topk(scan, keep, dim=1).indices                          # [Q, keep]
    union = np.unique(short.numpy())                                       # sorted: file order, sequential reads
    rows, local = gather_pages(source, offsets, union)
    exact = score_packed(list(queries), rows.to(torch.float32), local, compute="float32")   # [Q, U]
    col = torch.from_numpy(np.searchsorted(union, short.numpy()))          # [Q, keep] columns of exact
    out = torch.full_like(scan, float("-inf"))
    out.scatter_(1, short, exact.gather(1, col))
    return out
