"""colpali-engine models (ColPali v1.2/v1.3, ColQwen2 v1.0, ColQwen2.5), imported lazily.

colpali-engine cannot be imported next to the CPU torch 2.13 wheel (its torchvision is a CUDA
build); it works in the second environment that ``make colpali-engine-env`` builds (torch 2.14.1 +
torchvision 0.29.1 + ``pip install --no-deps colpali-engine==0.3.18``). Visual tokens follow the
same rules as the transformers adapters (docs/method.md §1): ``<image>`` for ColPali, ``<|image_pad|>`` for
the Qwen family. Their forward returns the normalised multi-vectors directly.
"""

from __future__ import annotations

import importlib

import torch

from anchorprune.backbones.retrieval import RetrievalBackbone
from anchorprune.config import BackboneConfig

# model id prefix -> (model class, processor class) in colpali_engine.models
FAMILIES = {
    "vidore/colpali": ("ColPali", "ColPaliProcessor"),
    "vidore/colqwen2.5": ("ColQwen2_5", "ColQwen2_5_Processor"),
    "vidore/colqwen2": ("ColQwen2", "ColQwen2Processor"),
}


class ColPaliEngineUnavailable(ImportError):
    pass


def import_colpali_engine():
    try:
        return importlib.import_module("colpali_engine.models")
    except Exception as exc:  # noqa: BLE001 - any import failure means the extra is unusable here
        raise ColPaliEngineUnavailable(
            "colpali-engine does not import in this environment "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). Use the transformers adapters "
            "(kind: colpali / colqwen2) or `make colpali-engine-env`."
        ) from exc


def family_for(model_id: str) -> tuple[str, str]:
    """Model and processor class names for a checkpoint id.

    >>> family_for("vidore/colqwen2.5-v0.2")
    ('ColQwen2_5', 'ColQwen2_5_Processor')
    """
    for prefix in sorted(FAMILIES, key=len, reverse=True):
        if model_id.startswith(prefix):
            return FAMILIES[prefix]
    raise ValueError(f"no colpali-engine family known for {model_id!r}; known prefixes: {sorted(FAMILIES)}")


class ColPaliEngineBackbone(RetrievalBackbone):
    def embedding_dim(self) -> int:
        return int(getattr(self.model, "dim", 128))

    def process_images(self, images: list) -> dict:
        return dict(self.processor.process_images(images))

    def process_queries(self, texts: list[str]) -> dict:
        return dict(self.processor.process_queries(texts))

    def visual_mask(self, batch: dict) -> torch.Tensor:
        cfg = getattr(self.model, "config", None)
        token = getattr(cfg, "image_token_index", None)
        if token is None:
            token = getattr(cfg, "image_token_id", None)
        if token is None:
            raise ValueError(f"{type(self.model).__name__}: config names no image token id")
        return batch["input_ids"] == token

    def embed(self, batch: dict) -> torch.Tensor:
        return self.model(**batch)

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> ColPaliEngineBackbone:
        models = import_colpali_engine()
        model_cls, proc_cls = (getattr(models, n) for n in family_for(cfg.model_id))
        return cls.load(cfg, model_cls, proc_cls)
