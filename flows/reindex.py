"""reindex flow: load @champion, encode pages not yet cached (window-only capture), build and swap the index."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.stages import stage_index
from flows.common import IO_RETRIES, workspace


@task(name="build-and-swap-index", **IO_RETRIES)
def build_and_swap(params: str, root: str) -> dict:
    return stage_index(workspace(params, root))


@flow(name="reindex")
def reindex_flow(params: str = "params.yaml", root: str = ".") -> dict:
    info = build_and_swap(params, root)
    get_run_logger().info("index %s now serves version %s", info["index"], info["version"])
    return info
