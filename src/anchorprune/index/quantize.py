"""Storage encodings of page vectors: float32, float16, bfloat16, and packed sign bits.

``bfloat16`` rows are stored as their raw 16-bit patterns (``uint16``; numpy has no bfloat16):
round-to-nearest-even from float32 by torch, read back as a torch ``bfloat16`` tensor without a
copy (:func:`as_bfloat16`) so :func:`anchorprune.evaluation.scoring.score_packed` can multiply them in bf16
where the CPU accelerates it.

``bits`` keeps one bit per dimension (``v > 0``), packed 8 to a byte with
``np.packbits`` (big bit order, the layout Elasticsearch's ``rank_vectors``
``element_type: bit`` uses as hex strings). A bit row decodes to
``(2 * bit - 1) / sqrt(d)``: the ±1 sign vector scaled to unit length, so a float
query scores against bit pages on about the same scale as against the unit-norm
float vectors it came from (asymmetric scoring, float query × sign page; the
ranking does not depend on the scale).

Examples
--------
>>> import numpy as np
>>> v = np.array([[0.5, -0.5, 0.1, -0.1, 0.2, 0.3, -0.4, 0.0]], dtype=np.float32)
>>> encode(v, "bits")
array([[172]], dtype=uint8)
>>> (decode(encode(v, "bits"), "bits", 8)[0] * np.sqrt(8)).round(6).tolist()
[1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0]
>>> [bytes_per_vector(t, 128) for t in ("float32", "float16", "bfloat16", "bits")]
[512, 256, 256, 16]
>>> decode(encode(np.array([[1.0, -0.1, 300.0]], dtype=np.float32), "bfloat16"), "bfloat16", 3).tolist()
[[1.0, -0.10009765625, 300.0]]
"""

from __future__ import annotations

import numpy as np
import torch

DTYPES = ("float32", "float16", "bfloat16", "bits")

#: how the local dtypes map onto Elasticsearch ``rank_vectors`` element types
#: (Elasticsearch has no float16: the closest 2-byte type is bfloat16)
ES_ELEMENT_TYPES = {"float32": "float", "float16": "bfloat16", "bfloat16": "bfloat16", "bits": "bit"}

_FLOAT16_MAX = float(np.finfo(np.float16).max)


class QuantizeError(ValueError):
    """A vector cannot be stored in the asked encoding."""


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise QuantizeError(f"unknown index dtype {dtype!r}; use one of {DTYPES}")
    return dtype


def check_dim(dtype: str, dim: int) -> int:
    if dim < 1:
        raise QuantizeError(f"dimension must be >= 1, got {dim}")
    if check_dtype(dtype) == "bits" and dim % 8:
        raise QuantizeError(f"bit storage needs a dimension that is a multiple of 8, got {dim}; "
                            "use dtype float16 or float32")
    return dim


def storage_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of stored rows."""
    return np.dtype({"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16,
                     "bits": np.uint8}[check_dtype(dtype)])


def stored_width(dtype: str, dim: int) -> int:
    """Columns of one stored row (``d`` for floats, ``d / 8`` bytes for bits)."""
    check_dim(dtype, dim)
    return dim // 8 if dtype == "bits" else dim


def bytes_per_vector(dtype: str, dim: int) -> int:
    """Bytes one stored page vector takes."""
    return stored_width(dtype, dim) * storage_dtype(dtype).itemsize


def encode(vecs: np.ndarray, dtype: str) -> np.ndarray:
    """``[n, d]`` float rows -> stored rows (``[n, d]`` float32/float16 or ``[n, d/8]`` uint8)."""
    v = np.asarray(vecs)
    if v.ndim != 2:
        raise QuantizeError(f"encode() takes [n, d] rows, got shape {v.shape}")
    check_dim(dtype, v.shape[1])
    if dtype == "float32":
        return np.ascontiguousarray(v, dtype=np.float32)
    if dtype == "float16":
        if v.size and float(np.abs(v).max()) > _FLOAT16_MAX:
            raise QuantizeError(f"a value of magnitude {float(np.abs(v).max()):.3g} overflows float16 "
                                f"(max {_FLOAT16_MAX:.0f}); normalise the vectors or use dtype float32")
        return np.ascontiguousarray(v, dtype=np.float16)
    if dtype == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(torch.bfloat16)    # [n, d]
        return t.view(torch.int16).numpy().view(np.uint16).copy()
    return np.packbits(v > 0, axis=1)


def as_bfloat16(stored: np.ndarray) -> torch.Tensor:
    """``uint16`` bfloat16 bit rows ``[n, d]`` -> a torch ``bfloat16`` tensor sharing their memory."""
    s = np.asarray(stored)
    if s.dtype != np.uint16:
        raise QuantizeError(f"bfloat16 rows are stored as uint16 bit patterns, got {s.dtype}")
    return torch.from_numpy(s.view(np.int16)).view(torch.bfloat16)


def decode(stored: np.ndarray, dtype: str, dim: int) -> np.ndarray:
    """Stored rows -> ``[n, d]`` float32 (bits -> ``±1 / sqrt(d)``)."""
    s = np.asarray(stored)
    if s.ndim != 2 or s.shape[1] != stored_width(dtype, dim):
        raise QuantizeError(f"decode() got shape {s.shape} for {dtype} rows of dimension {dim}")
    if dtype == "bfloat16":
        return as_bfloat16(np.ascontiguousarray(s)).to(torch.float32).numpy()
    if dtype != "bits":
        return np.asarray(s, dtype=np.float32)
    signs = np.unpackbits(s, axis=1, count=dim).astype(np.float32)     # [n, d] in {0, 1}
    signs *= 2.0 / np.sqrt(dim)
    signs -= 1.0 / np.sqrt(dim)
    return signs


def to_hex_rows(bits: np.ndarray) -> list[str]:
    """Packed bit rows ``[n, d/8]`` -> hex strings (Elasticsearch ``bit`` vector input).

    >>> to_hex_rows(np.array([[166, 1]], dtype=np.uint8))
    ['a601']
    """
    return [bytes(row).hex() for row in np.asarray(bits, dtype=np.uint8)]


def inv_hamming_maxsim(query_bits: np.ndarray, page_bits: np.ndarray, dim: int) -> float:
    """Bit query × bit page: ``sum_i max_j (1 - hamming(q_i, p_j) / d)``, as Elasticsearch's ``maxSimInvHamming``.

    >>> q = np.packbits(np.array([[1, 0, 1, 0, 1, 1, 0, 0]], dtype=bool), axis=1)
    >>> inv_hamming_maxsim(q, q, 8)
    1.0
    >>> inv_hamming_maxsim(q, np.packbits(~np.unpackbits(q, axis=1).astype(bool), axis=1), 8)
    0.0
    """
    qb = np.unpackbits(np.asarray(query_bits, dtype=np.uint8), axis=1, count=dim).astype(np.int32)   # [m, d]
    pb = np.unpackbits(np.asarray(page_bits, dtype=np.uint8), axis=1, count=dim).astype(np.int32)    # [n, d]
    # hamming = popcount(q) + popcount(p) - 2 q.p
    ham = qb.sum(1)[:, None] + pb.sum(1)[None, :] - 2 * (qb @ pb.T)                                  # [m, n]
    return float((1.0 - ham.min(axis=1) / dim).sum())
