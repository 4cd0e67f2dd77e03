"""Jina Embeddings v4 (``jinaai/jina-embeddings-v4``: Qwen2.5-VL-3B, 36 layers, remote code, multi-vector mode).

Visual tokens (docs/method.md §1): the positions strictly between the first ``<|vision_start|>`` and the
first ``<|vision_end|>`` after it. Fallback when a sequence has no such pair (a processor that
drops the markers): the ``<|image_pad|>`` positions. The forward uses the remote code's
``task_label="retrieval"`` and reads ``multi_vec_emb``.

Tested here: the visual-range rule (:func:`jina_visual_mask`) and the capture on a tiny Qwen2-VL
(same attention code path). NOT tested here: loading the real remote-code checkpoint, which needs
the hub; the call convention follows the model card.
"""

from __future__ import annotations

import torch

from anchorprune.backbones.loading import DTYPES, load_pretrained, resolve_revision
from anchorprune.backbones.retrieval import RetrievalBackbone
from anchorprune.config import BackboneConfig

DEFAULT_MODEL = "jinaai/jina-embeddings-v4"


def jina_visual_mask(input_ids: torch.Tensor, start_id: int, end_id: int, pad_id: int | None = None) -> torch.Tensor:
    """``[B, S]`` bool: strictly between the first vision start and the next vision end; else the pad tokens.

    >>> ids = torch.tensor([[1, 7, 5, 5, 5, 8, 2], [1, 5, 5, 2, 0, 0, 0]])
    >>> jina_visual_mask(ids, start_id=7, end_id=8, pad_id=5).int().tolist()
    [[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]]
    """
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for b, row in enumerate(input_ids):
        starts = torch.nonzero(row == start_id).flatten()
        if len(starts):
            ends = torch.nonzero((row == end_id) & (torch.arange(len(row)) > starts[0])).flatten()
            if len(ends):
                mask[b, starts[0] + 1 : ends[0]] = True
                continue
        if pad_id is not None:
            mask[b] = row == pad_id
    return mask


class JinaV4Backbone(RetrievalBackbone):
    def embedding_dim(self) -> int:
        return int(getattr(self.model.config, "multi_vector_projector_dim", 128))

    def _ids(self) -> tuple[int, int, int]:
        tok = self.processor.tokenizer
        return tuple(tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))

    def visual_mask(self, batch: dict) -> torch.Tensor:
        start, end, pad = self._ids()
        return jina_visual_mask(batch["input_ids"], start, end, pad)

    def process_images(self, images: list) -> dict:
        return dict(self.processor.process_images(images))

    def process_queries(self, texts: list[str]) -> dict:
        return dict(self.processor.process_texts(texts, prefix="Query"))

    def embed(self, batch: dict) -> torch.Tensor:
        out = self.model(**batch, task_label="retrieval")
        return torch.nn.functional.normalize(out.multi_vec_emb.float(), dim=-1)

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> JinaV4Backbone:
        from transformers import AutoModel, AutoProcessor

        model = load_pretrained(AutoModel, cfg.model_id, cfg.revision, trust_remote_code=True,
                                dtype=DTYPES[cfg.dtype])
        revision = resolve_revision(cfg.model_id, cfg.revision)
        processor = getattr(model, "processor", None) or load_pretrained(
            AutoProcessor, cfg.model_id, revision, trust_remote_code=True)
        return cls(model, processor, cfg.name, cfg.model_id, revision, device=cfg.device)
