"""pipeline flow: data -> encode -> calibrate -> evaluate -> promote -> reindex, in order (the stages of dvc.yaml)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from anchorprune.orchestration.pipeline import skip_index_reason
from anchorprune.orchestration.summary import pipeline_markdown, recalibrate_markdown
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.calibrate import calibrate_flow
from flows.data import data_flow
from flows.encode import encode_flow
from flows.evaluate import evaluate_flow
from flows.promote import promote_flow
from flows.reindex import reindex_flow


@flow(name="pipeline")
def pipeline_flow(params: str = "params.yaml", root: str = ".", rebuild_data: bool = False) -> dict:
    version = data_flow(params, root, rebuild=rebuild_data)
    encode_flow(params, root)
    windows = calibrate_flow(params, root)
    evaluation = evaluate_flow(params, root, windows=windows)
    promotion = promote_flow(params, root)
    ws = Workspace.from_params(params, root)
    skipped = skip_index_reason(ws, promotion)
    if skipped:
        get_run_logger().warning(skipped)
    result = {"data_version": version, "windows": windows, "promotion": promotion,
              "index": None if skipped else reindex_flow(params, root), "index_skipped": skipped,
              "configs": {k: len(v) for k, v in evaluation.items()}}
    publish("pipeline", pipeline_markdown(ws, result))
    return result


@flow(name="recalibrate")
def recalibrate_flow(params: str = "params.yaml", root: str = ".") -> dict:
    """The weekly job: calibrate + evaluate + promote (the nightly reindex picks up a new champion)."""
    windows = calibrate_flow(params, root)
    evaluate_flow(params, root, windows=windows)
    promotion = promote_flow(params, root)
    publish("recalibrate", recalibrate_markdown(Workspace.from_params(params, root), windows))
    return promotion
