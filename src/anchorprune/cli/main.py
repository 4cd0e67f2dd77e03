"""The ``anchorprune`` command line: one subcommand per pipeline stage, one module per command group.

    main.py      the app: doctor, check-config, and the commands of the modules below
    stages.py    encode, calibrate, evaluate, promote
    pipeline.py  pipeline, serve, deploy (the Prefect flows of the checkout)
    plots.py     plots
    data.py      the ``data`` group
    index.py     the ``index`` group
    errors.py    known errors -> one line and an exit code (``exit_on``)
    options.py   the shared options and the params file's workspace
    doctor.py    the ``doctor`` report

Heavy imports (torch, mlflow, prefect, GX) happen inside the commands, so
``anchorprune --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

import anchorprune.cli.pipeline as pipeline
import anchorprune.cli.plots as plots
import anchorprune.cli.serve_search as serve_search
import anchorprune.cli.stages as stages
from anchorprune.cli.data import data_app
from anchorprune.cli.index import index_app
from anchorprune.cli.options import ParamsOpt, load_workspace

app = typer.Typer(
    name="anchorprune",
    help="Structural Anchor Pruning for ColPali-style retrieval: data, calibrate, evaluate, promote, index.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="show Dask's INFO lines")) -> None:
    """Structural Anchor Pruning for ColPali-style retrieval: data, calibrate, evaluate, promote, index."""
    import os

    from anchorprune.orchestration.environment import TELEMETRY_OFF, set_env

    # before any command imports Prefect, MLflow, GX or DVC (and before a temporary Prefect server inherits the
    # environment): their usage reporting is off unless the user set the variable; offline, the server's
    # telemetry heartbeat otherwise fails with a traceback on the console
    set_env(TELEMETRY_OFF)
    if verbose:
        os.environ["ANCHORPRUNE_VERBOSE"] = "1"      # flows.common.dask_log_level


app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")


@app.command()
def doctor(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the stack's versions and where each part lives (MLflow, Prefect, Elasticsearch, GPU)."""
    from anchorprune.cli.doctor import report

    typer.echo(report(params))


@app.command("check-config")
def check_config(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate params.yaml and print its hash."""
    cfg = load_workspace(params).settings
    typer.echo(f"{params}: ok (config hash {cfg.config_hash()}, backbones: {[b.name for b in cfg.backbones]})")


for command in (stages.encode, stages.calibrate, stages.evaluate, stages.promote,
                pipeline.pipeline, pipeline.serve, pipeline.deploy, plots.plots, serve_search.serve_search):
    app.command()(command)
