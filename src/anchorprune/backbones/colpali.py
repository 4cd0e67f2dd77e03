"""ColPali through transformers' ``ColPaliForRetrieval`` (PaliGemma-3B, 18 layers).

Visual tokens: ``input_ids == image_token_index`` (``<image>``), docs/method.md §1.
"""

from __future__ import annotations

import torch

from anchorprune.backbones.retrieval import RetrievalBackbone
from anchorprune.config import BackboneConfig

DEFAULT_MODEL = "vidore/colpali-v1.3-hf"


class ColPaliBackbone(RetrievalBackbone):
    def visual_mask(self, batch: dict) -> torch.Tensor:
        return batch["input_ids"] == self.model.config.vlm_config.image_token_index

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> ColPaliBackbone:
        from transformers import ColPaliForRetrieval, ColPaliProcessor

        return cls.load(cfg, ColPaliForRetrieval, ColPaliProcessor)
