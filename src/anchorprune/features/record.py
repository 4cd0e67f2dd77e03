"""PageFeatures: everything pruning needs from one forward pass over a page.

A page is encoded once per (content hash, backbone id, revision, capture) and every
pruning method, window, ratio and metric is computed from this record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PageFeatures:
    """Features of one page (visual tokens only; docs/method.md §1).

    ``layers`` names the decoder layers the rows of ``centrality`` and
    ``eos_attention`` belong to (all layers for calibration/evaluation, the
    champion window for an index build).
    """

    page_id: str
    content_hash: str
    embeddings: torch.Tensor          # [N, d] float32, final projected, L2-normalised
    centrality: torch.Tensor          # [len(layers), N] float32, SAP-Mean in-degree per layer
    eos_attention: torch.Tensor       # [len(layers), N] float32, attention from the last valid token
    positions: torch.Tensor           # [N] int64, sequence positions of the visual tokens
    layers: tuple[int, ...]           # decoder-layer index of each captured row
    num_layers: int                   # L of the backbone

    @property
    def num_tokens(self) -> int:
        return int(self.embeddings.shape[0])

    def rows_for(self, window: Sequence[int]) -> list[int]:
        """Row indices of ``centrality`` for decoder layers ``window``; a clear error if one was not captured."""
        index = {layer: row for row, layer in enumerate(self.layers)}
        missing = [layer for layer in window if layer not in index]
        if missing:
            raise KeyError(
                f"page {self.page_id!r}: layers {missing} were not captured (captured: {list(self.layers)})"
            )
        return [index[layer] for layer in window]

    def centrality_for(self, window: Sequence[int]) -> torch.Tensor:
        """``[len(window), N]`` centrality rows for the given decoder layers."""
        return self.centrality[self.rows_for(window)]

    def eos_for(self, layer: int) -> torch.Tensor:
        """``[N]`` EOS attention row at one decoder layer."""
        return self.eos_attention[self.rows_for([layer])[0]]
