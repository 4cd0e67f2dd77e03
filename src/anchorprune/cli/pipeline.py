"""The orchestrated commands: ``pipeline`` (the pipeline flow), ``serve`` and ``deploy`` (the scheduled deployments).

They run the Prefect flows of the checkout the params file is in, loaded by entrypoint
(``flows/pipeline.py:pipeline_flow``; ``anchorprune.orchestration.entrypoints``), and keep that
checkout's runs in ``<root>/.prefect`` unless PREFECT_HOME is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anchorprune.cli.errors import DEPLOY, FLOWS, exit_on
from anchorprune.cli.options import ParamsOpt, load_workspace


def _checkout(params: Path):
    """The params file's workspace, with this checkout's PREFECT_HOME set before prefect is imported."""
    from anchorprune.orchestration.environment import use_project_prefect_home

    ws = load_workspace(params)
    use_project_prefect_home(ws.root)
    return ws


def pipeline(
    params: ParamsOpt = Path("params.yaml"),
    rebuild_data: Annotated[bool, typer.Option(help="rebuild the dataset even if data/ has it")] = False,
    query: Annotated[str | None, typer.Option(help="search the new index with this query at the end")] = None,
) -> None:
    """data -> calibrate -> evaluate -> promote -> index, as one Prefect flow, then a search."""
    from anchorprune.cli.index import echo_search, open_index
    from anchorprune.orchestration.entrypoints import load_flow

    ws = _checkout(params)
    with exit_on(FLOWS):
        pipeline_flow = load_flow(ws.root, "pipeline.py:pipeline_flow")
    result = pipeline_flow(params=str(params.resolve()), root=str(ws.root), rebuild_data=rebuild_data)
    typer.echo(f"data version {result['data_version']}; windows {result['windows']}")
    for name, p in result["promotion"].items():
        typer.echo(f"{name}: {p['reason']}")
    if result["index"] is None:
        typer.echo("no certified champion: the index was not built (see reports/promotion/ for every "
                   "candidate's interval and why it failed)")
        return
    idx = result["index"]
    typer.echo(f"index {idx.index} now serves version {idx.version}" if idx.rebuilt
               else f"index {idx.index} unchanged, still serves version {idx.version} ({idx.reason})")
    ws, index = open_index(params)
    echo_search(ws, index, query or next(iter(ws.dataset.queries.values())), k=5)


def serve(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the scheduled Prefect deployments (long-running; needs a Prefect server, see README)."""
    ws = _checkout(params)
    from anchorprune.orchestration.deployments import serve_deployments

    with exit_on(DEPLOY, FLOWS):
        serve_deployments(str(params.resolve()), str(ws.root))


def deploy(
    pool: Annotated[str, typer.Option("--pool", help="the process work pool to register on")] = "anchorprune",
    params: ParamsOpt = Path("params.yaml"),
    create_pool: Annotated[bool, typer.Option(help="create the pool (type process) when it does not exist")] = True,
) -> None:
    """Register the scheduled deployments on a Prefect work pool; `prefect worker start --pool NAME` runs them."""
    ws = _checkout(params)
    from anchorprune.orchestration.concurrency import index_limit_name
    from anchorprune.orchestration.deployments import deploy_to_pool

    with exit_on(DEPLOY, FLOWS):
        ids = deploy_to_pool(pool, str(params.resolve()), str(ws.root), create_pool=create_pool)
    s, index = ws.settings.schedule, ws.settings.index.name
    crons = {"reindex": s.reindex_cron, "recalibrate": s.recalibrate_cron}
    for name, deployment_id in ids.items():
        typer.echo(f"{name}: on work pool {pool}, cron '{crons[name.split('/')[0]]}' ({s.timezone}), "
                   f"one run at a time (id {deployment_id})")
    typer.echo(f"global concurrency limit {index_limit_name(index)}: one rebuild of index "
               f"{index} at a time, on every worker")
    typer.echo(f"start a worker on any host with a checkout of this project (runs start in $ANCHORPRUNE_ROOT, "
               f"default {ws.root}):\n  prefect worker start --pool {pool}")
