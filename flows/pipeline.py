"""pipeline flow: data -> encode -> calibrate -> evaluate -> promote -> reindex, in order (the stages of dvc.yaml)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from anchorprune.tracking.summary import pipeline_markdown, recalibrate_markdown
from flows.artifacts import publish
from flows.calibrate import calibrate_flow
from flows.common import workspace
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
    from anchorprune.stages.index import index_backbone

    served = index_backbone(workspace(params, root)).name
    if promotion.get(served, {}).get("champion") is None:
        # nothing certified and no earlier champion: there is nothing to serve (not a crash)
        get_run_logger().warning("no certified champion for %s: the index is not built (see "
                                 "reports/promotion/%s.json)", served, served)
        index = None
    else:
        index = reindex_flow(params, root)
    result = {"data_version": version, "windows": windows, "promotion": promotion, "index": index,
              "configs": {k: len(v) for k, v in evaluation.items()}}
    publish("pipeline", pipeline_markdown(workspace(params, root), result))
    return result


@flow(name="recalibrate")
def recalibrate_flow(params: str = "params.yaml", root: str = ".") -> dict:
    """The weekly job: calibrate + evaluate + promote (the nightly reindex picks up a new champion)."""
    windows = calibrate_flow(params, root)
    evaluate_flow(params, root, windows=windows)
    promotion = promote_flow(params, root)
    publish("recalibrate", recalibrate_markdown(workspace(params, root), windows))
    return promotion
