"""promote flow: the explicit promotion rule; moves the registry alias 'champion' or says why not."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.orchestration.pipeline import backbone_names
from anchorprune.orchestration.summary import promote_markdown
from anchorprune.stages.promote import stage_promote
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import IO_RETRIES


@task(name="promote-backbone", **IO_RETRIES)
def promote_backbone(params: str, root: str, backbone: str) -> dict:
    ws = Workspace.from_params(params, root)
    d = stage_promote(ws, ws.settings.backbone(backbone))
    return {"promoted": d.promoted, "reason": d.reason, "champion": d.champion.name if d.champion else None}


@flow(name="promote")
def promote_flow(params: str = "params.yaml", root: str = ".", backbone: str | None = None) -> dict[str, dict]:
    ws = Workspace.from_params(params, root)
    out = {}
    for name in backbone_names(ws, backbone):
        out[name] = promote_backbone(params, root, name)
        get_run_logger().info("%s: %s", name, out[name]["reason"])
    publish("promote", promote_markdown(ws, list(out)))
    return out
