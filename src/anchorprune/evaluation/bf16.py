"""bfloat16 compute: whether this CPU multiplies bf16 natively, what ``compute="auto"`` resolves to, and the
record of how a search was scored (:class:`ComputePath`). Every caller decides bf16 through this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


def bf16_accelerated() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX-512 BF16), as torch detects it.

    Without either, torch's CPU bf16 matmul is emulated and much slower than float32 (on an AVX2-only
    AMD EPYC a bf16 ``torch.mm`` ran ~11x slower than float32), so ``compute="auto"`` scores in
    float32 there.
    """
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe that cannot run means: not accelerated
            continue
    return False


def auto_compute(storage: torch.dtype | str) -> str:
    """What ``compute="auto"`` runs the matmuls in over vectors stored as ``storage``: ``"bfloat16"`` for
    bfloat16-stored vectors on a CPU with native bf16 (:func:`bf16_accelerated`), ``"float32"`` otherwise.

    >>> auto_compute(torch.float32), auto_compute("float16")
    ('float32', 'float32')
    """
    is_bf16 = storage in (torch.bfloat16, "bfloat16")
    return "bfloat16" if is_bf16 and bf16_accelerated() else "float32"


@dataclass(frozen=True)
class ComputePath:
    """How a search was scored: what was asked, what the matmuls ran in, and whether bf16 was native.

    ``compute`` is the dtype of the scan over every page. With ``"bfloat16"`` the scan only picks a
    shortlist of ``shortlist`` pages per query, which are then rescored exactly in float32
    (``rescored``) from ``rescore_source``: ``"float32 copy"`` (a float32 store of the same vectors, so the
    top-k equals the float32 path's whenever its top-k is in the shortlist) or ``"stored vectors"`` (the
    stored rows decoded to float32: exact with respect to what the index keeps).
    """

    requested: str                  # "float32" | "bfloat16" | "auto"
    compute: str                    # "float32" | "bfloat16": the scan over every page
    bf16_accelerated: bool          # the CPU multiplies bf16 natively (AMX / AVX-512 BF16)
    storage: str                    # dtype of the scanned vectors, e.g. "bfloat16"
    rescored: bool = False          # a bf16 shortlist rescored exactly in float32
    shortlist: int | None = None    # pages per query rescored (k + margin, at most every page)
    rescore_source: str | None = None

    @classmethod
    def here(cls, requested: str, compute: str, storage: str, **kw: Any) -> ComputePath:
        """A path scored on this CPU (``bf16_accelerated`` filled in by :func:`bf16_accelerated`)."""
        return cls(requested, compute, bf16_accelerated(), storage, **kw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for search output.

        >>> ComputePath("auto", "float32", False, "bfloat16").describe()
        'scoring: float32 compute over bfloat16 vectors (bf16 not accelerated on this CPU: float32 fallback)'
        >>> ComputePath("auto", "float32", True, "float16").describe()
        'scoring: float32 compute over float16 vectors (CPU bf16: accelerated)'
        >>> ComputePath("auto", "bfloat16", True, "bfloat16", True, 60, "stored vectors").describe()
        'scoring: bfloat16 compute (accelerated) over bfloat16 vectors, top 60 per query rescored in float32 from the stored vectors'
        """
        accel = "accelerated" if self.bf16_accelerated else "not accelerated on this CPU"
        if self.compute == "float32":
            if self.storage == "bfloat16" and self.requested != "float32":
                return f"scoring: float32 compute over bfloat16 vectors (bf16 {accel}: float32 fallback)"
            native = "accelerated" if self.bf16_accelerated else "not accelerated"
            return f"scoring: float32 compute over {self.storage} vectors (CPU bf16: {native})"
        line = f"scoring: bfloat16 compute ({accel}) over {self.storage} vectors"
        if self.rescored:
            line += f", top {self.shortlist} per query rescored in float32 from the {self.rescore_source}"
        return line
