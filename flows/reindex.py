"""reindex flow: load @champion, encode pages not yet cached (window-only capture), build and swap the index.

When the serving version already has this champion, data and index config, nothing is built
(``stages.serving_is_current``): a scheduled run then only says so.

The build runs inside the index's global concurrency limit (``anchorprune.orchestration.concurrency``): two runs that
rebuild one index, from any deployment on any worker or host, run one after the other.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from anchorprune.orchestration.concurrency import index_build_slot, index_limit_name
from anchorprune.orchestration.summary import index_markdown
from anchorprune.stages.index import IndexBuildResult, stage_index
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import IO_RETRIES


@task(name="build-and-swap-index", **IO_RETRIES)
def build_and_swap(params: str, root: str, force: bool = False) -> IndexBuildResult:
    return stage_index(Workspace.from_params(params, root), force=force)


@flow(name="reindex")
def reindex_flow(params: str = "params.yaml", root: str = ".", force: bool = False) -> IndexBuildResult:
    index = Workspace.from_params(params, root).settings.index.name
    logger = get_run_logger()
    logger.info("waiting for global concurrency limit %s (one rebuild of index %s at a time)",
                index_limit_name(index), index)
    with index_build_slot(index):
        logger.info("holding %s", index_limit_name(index))
        result = build_and_swap(params, root, force)
    logger.info(result.headline())
    publish("reindex", index_markdown(result))
    return result
