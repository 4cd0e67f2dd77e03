"""calibrate flow: per backbone, the SR-by-layer curve on calibration pairs, then the SR-guided window."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.orchestration.pipeline import backbone_names
from anchorprune.orchestration.summary import calibrate_markdown
from anchorprune.stages.calibrate import stage_calibrate
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import IO_RETRIES, STAGE_CACHE


@task(name="calibrate-backbone", **STAGE_CACHE, **IO_RETRIES)
def calibrate_backbone(params: str, root: str, backbone: str, config_hash: str, data_version: str) -> list[int]:
    ws = Workspace.from_params(params, root)
    return stage_calibrate(ws, ws.settings.backbone(backbone)).window


@flow(name="calibrate")
def calibrate_flow(params: str = "params.yaml", root: str = ".", backbone: str | None = None) -> dict[str, list[int]]:
    ws = Workspace.from_params(params, root)
    version = ws.data_version()
    out = {}
    for name in backbone_names(ws, backbone):
        out[name] = calibrate_backbone(params, root, name, ws.settings.config_hash(), version)
        get_run_logger().info("%s: SR window %s", name, out[name])
    publish("calibrate", calibrate_markdown(ws, out))
    return out
