"""Backbone adapters, loaded lazily by kind (heavy model code is imported only when used)."""

from __future__ import annotations

import importlib

from anchorprune.backbones.base import Backbone, LayerCapture
from anchorprune.config import BackboneConfig

__all__ = ["Backbone", "LayerCapture", "load_backbone", "ADAPTERS"]

# config kind -> "module:Class"; every class has ``from_config(cfg)``
ADAPTERS: dict[str, str] = {
    "colpali": "anchorprune.backbones.colpali:ColPaliBackbone",
    "colqwen2": "anchorprune.backbones.colqwen2:ColQwen2Backbone",
    "jina-v4": "anchorprune.backbones.jina_v4:JinaV4Backbone",
    "colpali-engine": "anchorprune.backbones.colpali_engine:ColPaliEngineBackbone",
    "mock": "anchorprune.backbones.mock:MockBackbone",
    "minilm-text": "anchorprune.backbones.minilm_text:MiniLMTextBackbone",
}


def load_backbone(cfg: BackboneConfig) -> Backbone:
    """Instantiate the adapter for ``cfg.kind``.

    >>> load_backbone(BackboneConfig(name="m", kind="mock", model_id="x")).num_layers
    8
    """
    target = ADAPTERS.get(cfg.kind)
    if target is None:
        raise ValueError(f"unknown backbone kind {cfg.kind!r}; known: {sorted(ADAPTERS)}")
    module_name, _, cls_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"backbone kind {cfg.kind!r} ({target}) is not available here: {exc}") from exc
    return cls.from_config(cfg)
