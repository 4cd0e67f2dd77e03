"""The ``anchorprune`` command line: one subcommand per pipeline stage.

Heavy imports (torch, mlflow, prefect, GX) happen inside the commands, so
``anchorprune --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anchorprune.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="anchorprune",
    help="Structural Anchor Pruning for ColPali-style retrieval: data, calibrate, evaluate, promote, index.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, validate and version datasets (data/ tracked by data.dvc).", no_args_is_help=True)
index_app = typer.Typer(help="Build, search, inspect and roll back the pruned index.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]


def settings_or_exit(params: Path) -> Settings:
    """Load the config or exit 2 with the error naming the bad key."""
    try:
        return load_settings(params)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def not_yet(stage: str, issue: int) -> None:
    """A stage whose issue has not landed: say so and fail (nothing pretends to work)."""
    typer.echo(f"'{stage}' is not implemented yet (issue #{issue}).", err=True)
    raise typer.Exit(3)


# ---------------------------------------------------------------- doctor
@app.command()
def doctor(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the stack's versions and where each part lives (MLflow, Prefect, Elasticsearch, GPU)."""
    from anchorprune.doctor import report

    typer.echo(report(params))


# ---------------------------------------------------------------- config
@app.command("check-config")
def check_config(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate params.yaml and print its hash."""
    cfg = settings_or_exit(params)
    typer.echo(f"{params}: ok (config hash {cfg.config_hash()}, backbones: {[b.name for b in cfg.backbones]})")


# ---------------------------------------------------------------- data (issue #6)
@data_app.command("build-demo")
def data_build_demo(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build the offline demo corpus from Debian's R manuals."""
    settings_or_exit(params)
    not_yet("data build-demo", 6)


# ---------------------------------------------------------------- stages (issue #7)
@app.command()
def encode(params: ParamsOpt = Path("params.yaml")) -> None:
    """Encode pages and queries once per backbone into the features cache."""
    settings_or_exit(params)
    not_yet("encode", 7)


@app.command()
def calibrate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Per backbone: SR-by-layer curve on calibration pairs, then the SR-guided window."""
    settings_or_exit(params)
    not_yet("calibrate", 7)


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Methods x gamma x windows from the features cache, logged to MLflow."""
    settings_or_exit(params)
    not_yet("evaluate", 7)


@app.command()
def promote(params: ParamsOpt = Path("params.yaml")) -> None:
    """Apply the promotion rule and move the registry alias 'champion'."""
    settings_or_exit(params)
    not_yet("promote", 7)


@app.command()
def pipeline(params: ParamsOpt = Path("params.yaml")) -> None:
    """data -> calibrate -> evaluate -> promote -> index, as one Prefect flow."""
    settings_or_exit(params)
    not_yet("pipeline", 7)


@app.command()
def serve(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the scheduled Prefect deployments (long-running)."""
    settings_or_exit(params)
    not_yet("serve", 7)


# ---------------------------------------------------------------- index (issue #8)
@index_app.command("build")
def index_build(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build a new index version from the champion config and swap it in."""
    settings_or_exit(params)
    not_yet("index build", 8)
