"""The encode stage: fill the features cache with every page's features and every query's vectors."""

from __future__ import annotations

from typing import Any

from anchorprune.backbones.base import LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.features.encoding import EncodedCorpus, encode_dataset
from anchorprune.ioutil import write_json
from anchorprune.stages.workspace import Workspace


def load_corpus(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None,
                capture: LayerCapture | None = None) -> EncodedCorpus:
    """Every page (all layers captured unless told) and every query; the features cache makes reruns cheap."""
    return encode_dataset(
        backbone or ws.backbone(bcfg), ws.dataset.pages(), ws.dataset.queries, capture or LayerCapture.all(),
        ws.features_dir, bcfg.batch_size, ws.settings.encode.claim_ttl_s,
    )


def plan_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> list[list]:
    """The pages the encode stage still has to run the model on, in shards of ``encode.shard_pages``."""
    from anchorprune.features.encoding import missing_pages, plan_shards

    backbone = backbone or ws.backbone(bcfg)
    missing = missing_pages(ws.features_dir, backbone, ws.dataset.pages(), LayerCapture.all())
    return plan_shards(missing, ws.settings.encode.shard_pages)


def stage_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> EncodedCorpus:
    """The encode stage: fill the features cache and write a summary under reports/encode/."""
    backbone = backbone or ws.backbone(bcfg)
    corpus = load_corpus(ws, bcfg, backbone)
    write_json(ws.reports / "encode" / f"{bcfg.name}.json", {
        **ws.meta(bcfg, backbone), "pages": len(corpus.features), "queries": len(corpus.queries),
        "num_layers": corpus.num_layers,
        "tokens_per_page": sum(f.num_tokens for f in corpus.features.values()) / max(1, len(corpus.features)),
    })
    return corpus
