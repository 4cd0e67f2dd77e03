"""data flow: build or fetch the dataset, validate it (GX), version it (DVC); returns the data version."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.orchestration.summary import data_markdown
from anchorprune.stages.data import stage_data
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import IO_RETRIES


@task(name="build-validate-version", **IO_RETRIES)
def build_validate_version(params: str, root: str, rebuild: bool) -> str:
    return stage_data(Workspace.from_params(params, root), rebuild=rebuild)


@flow(name="data")
def data_flow(params: str = "params.yaml", root: str = ".", rebuild: bool = False) -> str:
    version = build_validate_version(params, root, rebuild)
    get_run_logger().info("data version %s", version)
    publish("data", data_markdown(Workspace.from_params(params, root), version))
    return version
