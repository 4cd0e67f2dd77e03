"""The encode stage: fill the features cache with every page's features and every query's vectors."""

from __future__ import annotations

from typing import Any

from anchorprune.backbones.base import LayerCapture
from anchorprune.config import BackboneConfig
from anchorprune.features.encoding import EncodedCorpus, EncodeSummary, encode_dataset
from anchorprune.stages.workspace import Workspace


def check_inputs(ws: Workspace, bcfg: BackboneConfig) -> None:
    """Refuse, in one line and before any encode, a backbone that cannot read this dataset's pages
    (a text backbone over image-only pages, a vision backbone over pages without images)."""
    from anchorprune.data.inputs import check_backbone_inputs

    ws.check_dataset()
    check_backbone_inputs(ws.dataset_dir, bcfg.name, bcfg.kind)


def load_corpus(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None,
                capture: LayerCapture | None = None) -> EncodedCorpus:
    """Every page (all layers captured unless told) and every query; the features cache makes reruns cheap."""
    check_inputs(ws, bcfg)
    return encode_dataset(
        backbone or ws.backbone(bcfg), ws.dataset.pages(), ws.dataset.queries, capture or LayerCapture.all(),
        ws.features_dir, bcfg.batch_size, ws.settings.encode.claim_ttl_s,
    )


def plan_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> list[list[str]]:
    """The page ids the encode stage still has to run the model on, in shards of ``encode.shard_pages``.

    Read from the corpus table and the cache's file names only: no page is opened here.
    """
    from anchorprune.features.encoding import missing_page_ids, plan_shards

    check_inputs(ws, bcfg)
    backbone = backbone or ws.backbone(bcfg)
    missing = missing_page_ids(ws.features_dir, backbone, ws.dataset_dir, LayerCapture.all())
    return plan_shards(missing, ws.settings.encode.shard_pages)


def stage_encode(ws: Workspace, bcfg: BackboneConfig, backbone: Any | None = None) -> EncodeSummary:
    """The encode stage: fill the features cache and write a summary under reports/encode/.

    Pages go through the cache a chunk at a time and no features are kept: memory is flat in the
    number of pages (the later stages load what they need).
    """
    from anchorprune.features.encoding import encode_streaming

    check_inputs(ws, bcfg)
    backbone = backbone or ws.backbone(bcfg)
    summary = encode_streaming(backbone, ws.dataset.pages(), ws.dataset.queries, LayerCapture.all(),
                               ws.features_dir, bcfg.batch_size, ws.settings.encode.claim_ttl_s)
    from anchorprune.provenance import provenance_of, without_provenance, write_report

    meta = ws.meta(bcfg, backbone)
    # the commit says which run wrote it, not what was encoded: beside the DVC output, not in it (dvc.lock stays)
    write_report(ws.reports / "encode" / f"{bcfg.name}.json", {
        **without_provenance(meta), "pages": summary.pages,
        "queries": summary.queries, "num_layers": summary.num_layers, "tokens_per_page": summary.tokens_per_page,
    }, provenance_of(meta))
    return summary
