"""ColQwen2 through transformers' ``ColQwen2ForRetrieval`` (Qwen2-VL-2B, 28 layers).

Visual tokens: ``input_ids == image_token_id`` (``<|image_pad|>``), docs/method.md §1. Image sizes vary, so
the number of visual tokens varies per page; rows are read per page.
"""

from __future__ import annotations

import torch

from anchorprune.backbones.retrieval import RetrievalBackbone
from anchorprune.config import BackboneConfig

DEFAULT_MODEL = "vidore/colqwen2-v1.0-hf"


class ColQwen2Backbone(RetrievalBackbone):
    def visual_mask(self, batch: dict) -> torch.Tensor:
        return batch["input_ids"] == self.model.config.vlm_config.image_token_id

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> ColQwen2Backbone:
        from transformers import ColQwen2ForRetrieval, ColQwen2Processor

        return cls.load(cfg, ColQwen2ForRetrieval, ColQwen2Processor)
