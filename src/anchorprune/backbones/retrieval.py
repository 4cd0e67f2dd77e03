"""Shared adapter for transformers' late-interaction retrieval models (``*ForRetrieval``).

A subclass says which positions are visual (docs/method.md §1) and how to load the checkpoint; this class
runs ONE forward pass per batch with the capture installed on the requested layers and returns
the final projected vectors of the visual tokens plus their per-layer centrality and EOS rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.capture import CaptureState, capturing, find_decoder_layers, last_valid
from anchorprune.backbones.loading import DTYPES, load_pretrained, resolve_revision
from anchorprune.config import BackboneConfig
from anchorprune.features import PageFeatures
from anchorprune.pages import Page


class NoVisualTokensError(ValueError):
    """A page's input has no visual token (the processor dropped the image?)."""


class CaptureNotReachedError(RuntimeError):
    """The forward ran but a captured layer's attention never went through transformers' AttentionInterface."""


class RetrievalBackbone:
    """Base for ColPali / ColQwen2 (transformers) and colpali-engine models."""

    #: bumped when what the adapter extracts changes (features cache key); 2: decoder layers found through
    #: the model's structure (a vision tower deeper than the decoder must never be the one captured)
    ADAPTER_VERSION = "2"

    def __init__(self, model: nn.Module, processor, name: str, model_id: str, revision: str,
                 device: str = "cpu", chunk_rows: int = 256) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.chunk_rows = chunk_rows
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.num_layers = len(find_decoder_layers(self.model))
        self.dim = int(self.embedding_dim())
        self.page_calls = 0

    @classmethod
    def load(cls, cfg: BackboneConfig, model_cls, processor_cls, **model_kwargs):
        """Load checkpoint and processor by HF id + revision (clear error when unavailable).

        ``revision`` becomes the commit hash the requested one resolved to (``main`` moves).
        """
        model = load_pretrained(model_cls, cfg.model_id, cfg.revision, dtype=DTYPES[cfg.dtype], **model_kwargs)
        revision = resolve_revision(cfg.model_id, cfg.revision)
        processor = load_pretrained(processor_cls, cfg.model_id, revision)
        return cls(model, processor, cfg.name, cfg.model_id, revision, device=cfg.device)

    # -- what subclasses define ------------------------------------------------------------
    def embedding_dim(self) -> int:
        return int(self.model.config.embedding_dim)

    def process_images(self, images: list) -> dict:
        return dict(self.processor(images=images, return_tensors="pt"))

    def process_queries(self, texts: list[str]) -> dict:
        return dict(self.processor(text=texts, return_tensors="pt"))

    def visual_mask(self, batch: dict) -> torch.Tensor:  # [B, S] bool
        raise NotImplementedError

    def embed(self, batch: dict) -> torch.Tensor:  # [B, S, d], L2-normalised
        return self.model(**batch).embeddings

    # -- the Backbone protocol -------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @torch.no_grad()
    def encode_pages(self, pages: Sequence[Page], capture: LayerCapture) -> list[PageFeatures]:
        layers = capture.resolve(self.num_layers)
        missing = [p.page_id for p in pages if p.image is None]
        if missing:
            raise ValueError(f"{self.name} encodes page images; pages without an image: {missing[:5]}")
        batch = self._to_device(self.process_images([p.image.convert("RGB") for p in pages]))
        visual = self.visual_mask(batch)                                         # [B, S]
        for b, page in enumerate(pages):
            if not visual[b].any():
                raise NoVisualTokensError(f"page {page.page_id!r} has no visual tokens in its {self.name} input")
        state = CaptureState(visual=visual, last=last_valid(batch["attention_mask"]), chunk_rows=self.chunk_rows)
        with capturing(self.model, layers, state):
            emb = self.embed(batch)                                              # [B, S, d]
        self.page_calls += 1
        silent = [layer for layer in layers if layer not in state.centrality]
        if silent:
            raise CaptureNotReachedError(
                f"{self.name} ({self.model_id}): layers {silent} ran without the capture; their attention does not "
                "dispatch through transformers' AttentionInterface (remote code with its own attention classes?). "
                "Use a transformers-native model class for this checkpoint.")
        out = []
        for b, page in enumerate(pages):
            pos = torch.nonzero(visual[b], as_tuple=False).flatten()             # [N]
            out.append(PageFeatures(
                page_id=page.page_id,
                content_hash=page.content_hash,
                embeddings=emb[b, pos].float().cpu(),
                centrality=torch.stack([state.centrality[layer][b, pos] for layer in layers]).cpu(),
                eos_attention=torch.stack([state.eos[layer][b, pos] for layer in layers]).cpu(),
                positions=pos.cpu(),
                layers=layers,
                num_layers=self.num_layers,
            ))
        return out

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> list[torch.Tensor]:
        batch = self._to_device(self.process_queries(list(texts)))
        emb = self.embed(batch)                                                  # [B, S, d]
        mask = batch["attention_mask"].bool()
        return [emb[b, mask[b]].float().cpu() for b in range(emb.shape[0])]
