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
BackboneOpt = Annotated[str | None, typer.Option("--backbone", "-b", help="only this backbone (default: all)")]


def _workspace(params: Path):
    from anchorprune.stages import Workspace

    return Workspace(settings_or_exit(params), Path.cwd())


def _backbones(ws, name: str | None):
    try:
        return [ws.settings.backbone(name)] if name else list(ws.settings.backbones)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def encode(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Encode pages and queries once per backbone into the features cache."""
    from anchorprune.stages import stage_encode

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        corpus = stage_encode(ws, b)
        typer.echo(f"{b.name}: {len(corpus.features)} pages, {len(corpus.queries)} queries encoded")


@app.command()
def calibrate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Per backbone: SR-by-layer curve on calibration pairs, then the SR-guided window."""
    from anchorprune.stages import stage_calibrate

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        r = stage_calibrate(ws, b)
        typer.echo(f"{b.name}: SR window layers {r.window[0]}-{r.window[-1]} of {r.num_layers} "
                   f"(alpha {r.alpha:.2f}, beta {r.beta:.2f}, {r.num_pairs} pairs)")


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Methods x gamma x windows from the features cache, logged to MLflow."""
    from anchorprune.report import results_table
    from anchorprune.stages import stage_evaluate

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        typer.echo(results_table(stage_evaluate(ws, b), title=f"{b.name} ({ws.settings.data.dataset})"))


@app.command()
def promote(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Apply the promotion rule and move the registry alias 'champion'."""
    from anchorprune.stages import stage_promote

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        d = stage_promote(ws, b)
        typer.echo(f"{b.name}: {'PROMOTED' if d.promoted else 'kept'}: {d.reason}")


@app.command()
def pipeline(
    params: ParamsOpt = Path("params.yaml"),
    rebuild_data: Annotated[bool, typer.Option(help="rebuild the dataset even if data/ has it")] = False,
    query: Annotated[str | None, typer.Option(help="search the new index with this query at the end")] = None,
) -> None:
    """data -> calibrate -> evaluate -> promote -> index, as one Prefect flow, then a search."""
    settings_or_exit(params)
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(params=str(params), root=str(Path.cwd()), rebuild_data=rebuild_data)
    typer.echo(f"data version {result['data_version']}; windows {result['windows']}")
    for name, p in result["promotion"].items():
        typer.echo(f"{name}: {p['reason']}")
    typer.echo(f"index {result['index']['index']} serves version {result['index']['version']}")
    from anchorprune.stages import Workspace, stage_search

    ws = Workspace(settings_or_exit(params), Path.cwd())
    q = query or next(iter(ws.dataset.queries.values()))
    typer.echo(f"search: {q!r}")
    for rank, hit in enumerate(stage_search(ws, q, k=5), 1):
        typer.echo(f"  {rank}. {hit.page_id}  {hit.score:.3f}")


@app.command()
def serve(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the scheduled Prefect deployments (long-running; needs a Prefect server, see README)."""
    settings_or_exit(params)
    from flows.deployments import main as serve_deployments

    serve_deployments(str(params), str(Path.cwd()))


# ---------------------------------------------------------------- index (issue #8)
@index_app.command("build")
def index_build(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build a new index version from the champion config and swap it in."""
    settings_or_exit(params)
    not_yet("index build", 8)
