"""encode flow: per backbone, every page and query into the features cache; writes reports/encode (as `dvc repro`)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.stages import stage_encode
from flows.artifacts import publish
from flows.common import IO_RETRIES, STAGE_CACHE, backbone_names, workspace


@task(name="encode-backbone", **STAGE_CACHE, **IO_RETRIES)
def encode_backbone(params: str, root: str, backbone: str, config_hash: str, data_version: str) -> dict:
    ws = workspace(params, root)
    corpus = stage_encode(ws, ws.settings.backbone(backbone))
    return {"pages": len(corpus.features), "queries": len(corpus.queries), "num_layers": corpus.num_layers}


@flow(name="encode")
def encode_flow(params: str = "params.yaml", root: str = ".", backbone: str | None = None) -> dict[str, dict]:
    ws = workspace(params, root)
    version = ws.data_version()
    out = {}
    for name in backbone_names(ws, backbone):
        out[name] = encode_backbone(params, root, name, ws.settings.config_hash(), version)
        get_run_logger().info("%s: %s", name, out[name])
    publish("encode", "### encode\n\n" + "\n".join(
        f"- **{n}**: {o['pages']} pages, {o['queries']} queries, {o['num_layers']} layers in the features cache"
        for n, o in out.items()))
    return out
