"""ColPali through transformers' ``ColPaliForRetrieval`` (PaliGemma-3B, 18 layers).

Visual tokens: ``input_ids == image_token_index`` (``<image>``), SPEC §1.
"""

from __future__ import annotations

import torch

from anchorprune.backbones.loading import DTYPES, load_pretrained
from anchorprune.backbones.retrieval import RetrievalBackbone
from anchorprune.config import BackboneConfig

DEFAULT_MODEL = "vidore/colpali-v1.3-hf"


class ColPaliBackbone(RetrievalBackbone):
    def visual_mask(self, batch: dict) -> torch.Tensor:
        return batch["input_ids"] == self.model.config.vlm_config.image_token_index

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> ColPaliBackbone:
        from transformers import ColPaliForRetrieval, ColPaliProcessor

        model = load_pretrained(ColPaliForRetrieval, cfg.model_id, cfg.revision, dtype=DTYPES[cfg.dtype])
        processor = load_pretrained(ColPaliProcessor, cfg.model_id, cfg.revision)
        return cls(model, processor, cfg.name, cfg.model_id, cfg.revision, device=cfg.device)
