"""evaluate flow: methods x gamma x windows from the features cache, one MLflow parent run per backbone."""

from __future__ import annotations

from prefect import flow, task

from anchorprune.orchestration.pipeline import backbone_names
from anchorprune.orchestration.summary import evaluate_markdown
from anchorprune.stages.evaluate import champion_config, stage_evaluate
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import IO_RETRIES, STAGE_CACHE, dask_map


@task(name="evaluate-backbone", **STAGE_CACHE, **IO_RETRIES)
def evaluate_backbone(params: str, root: str, backbone: str, config_hash: str, data_version: str,
                      window: list[int], champion: str = "") -> list[dict]:
    ws = Workspace.from_params(params, root)
    if ws.settings.evaluate.runner == "dask":   # the grid's (method, window) groups on the encode shards' cluster
        with dask_map(ws.settings.encode) as map_jobs:
            return stage_evaluate(ws, ws.settings.backbone(backbone), map_jobs=map_jobs).rows()
    return stage_evaluate(ws, ws.settings.backbone(backbone)).rows()


@flow(name="evaluate")
def evaluate_flow(params: str = "params.yaml", root: str = ".", backbone: str | None = None,
                  windows: dict[str, list[int]] | None = None) -> dict[str, list[dict]]:
    """``windows`` (from calibrate) and the champion's config only key the cache: the stage reads both itself."""
    ws = Workspace.from_params(params, root)
    version = ws.data_version()
    out = {
        name: evaluate_backbone(params, root, name, ws.settings.config_hash(), version, (windows or {}).get(name, []),
                                champion=str(champion_config(ws, ws.settings.backbone(name))))
        for name in backbone_names(ws, backbone)
    }
    publish("evaluate", evaluate_markdown(ws, list(out)))
    return out
