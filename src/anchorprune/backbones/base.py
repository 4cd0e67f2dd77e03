"""The Backbone contract: a multi-vector encoder that also reports per-layer attention statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from anchorprune.features import PageFeatures
from anchorprune.pages import Page


@dataclass(frozen=True)
class LayerCapture:
    """Which decoder layers to reduce attention for during the forward pass.

    ``layers=None`` captures every layer (calibration, evaluation); a tuple
    captures only those (index builds with the champion window).

    >>> LayerCapture.all().key, LayerCapture.window([3, 4, 5]).key
    ('all', 'layers-3-4-5')
    """

    layers: tuple[int, ...] | None = None

    @classmethod
    def all(cls) -> LayerCapture:
        return cls(None)

    @classmethod
    def window(cls, layers: Sequence[int]) -> LayerCapture:
        layers = tuple(sorted({int(x) for x in layers}))
        if not layers:
            raise ValueError("a window capture needs at least one layer")
        return cls(layers)

    @property
    def key(self) -> str:
        return "all" if self.layers is None else "layers-" + "-".join(map(str, self.layers))

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """The concrete layer indices for a backbone with ``num_layers`` layers."""
        if self.layers is None:
            return tuple(range(num_layers))
        bad = [x for x in self.layers if not 0 <= x < num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range for a backbone with {num_layers} layers")
        return self.layers


@runtime_checkable
class Backbone(Protocol):
    """A late-interaction encoder (ColPali, ColQwen2, Jina v4, the text stand-in, the mock)."""

    name: str            # short name used in run names and registry names
    model_id: str        # HF id (or a descriptive id for stand-ins)
    revision: str        # the resolved commit hash where loading resolves one (not a moving name like "main")
    num_layers: int
    dim: int
    dtype: str           # "float32", "bfloat16", ...: the weights' dtype (changes the vectors)
    ADAPTER_VERSION: str  # bumped when what the adapter extracts changes

    def encode_pages(self, pages: Sequence[Page], capture: LayerCapture) -> list[PageFeatures]:
        """Final vectors of the visual tokens plus per-layer centrality/EOS rows, one forward pass."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One ``[m, d]`` L2-normalised tensor per query, with the backbone's own query processing."""
        ...
