"""The pipeline's stages one at a time: ``encode``, ``calibrate``, ``evaluate``, ``promote`` (the stages of dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer

from anchorprune.cli.errors import DATA, FLOWS, SYSTEM, exit_on
from anchorprune.cli.options import BackboneOpt, ParamsOpt, load_workspace, selected_backbones


def encode(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Encode pages and queries once per backbone into the features cache.

    With ``encode.runner: dask`` (the default) the missing pages are encoded in shards on a Dask
    cluster by the Prefect encode flow; with ``inline`` in this process.
    """
    from anchorprune.stages.encode import stage_encode

    ws = load_workspace(params)
    names = selected_backbones(ws, backbone)
    if ws.settings.encode.runner == "dask":
        from anchorprune.orchestration.entrypoints import load_flow
        from anchorprune.orchestration.environment import use_project_prefect_home

        use_project_prefect_home(ws.root)
        with exit_on(FLOWS):
            encode_flow = load_flow(ws.root, "encode.py:encode_flow")
        for b in names:
            with exit_on(DATA, SYSTEM):
                o = encode_flow(params=str(params.resolve()), root=str(ws.root), backbone=b.name)[b.name]
            typer.echo(f"{b.name}: {o['pages']} pages, {o['queries']} queries encoded"
                       + (f" ({o['sharded']['encoded']} pages in shards on Dask)" if o.get("sharded") else ""))
        return
    for b in names:
        with exit_on(DATA, SYSTEM):
            summary = stage_encode(ws, b)
        typer.echo(f"{b.name}: {summary.pages} pages, {summary.queries} queries encoded")


def calibrate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Per backbone: SR-by-layer curve on calibration pairs, then the SR-guided window."""
    from anchorprune.stages.calibrate import stage_calibrate

    ws = load_workspace(params)
    for b in selected_backbones(ws, backbone):
        with exit_on(DATA, SYSTEM):
            r = stage_calibrate(ws, b)
        typer.echo(f"{b.name}: SR window layers {r.window[0]}-{r.window[-1]} of {r.num_layers} "
                   f"(alpha {r.alpha:.2f}, beta {r.beta:.2f}, {r.num_pairs} pairs)"
                   + "".join(f"\n  WARNING: {w}" for w in r.warnings))


def evaluate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Methods x gamma x windows from the features cache, logged to MLflow."""
    from anchorprune.stages.evaluate import stage_evaluate
    from anchorprune.tracking.report import results_table

    ws = load_workspace(params)
    for b in selected_backbones(ws, backbone):
        with exit_on(DATA, SYSTEM):
            result = stage_evaluate(ws, b)
        typer.echo(results_table(result, title=f"{b.name} ({ws.settings.data.dataset})"))


def promote(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Apply the promotion rule and move the registry alias 'champion'."""
    from anchorprune.stages.promote import stage_promote

    ws = load_workspace(params)
    for b in selected_backbones(ws, backbone):
        with exit_on(DATA, SYSTEM):
            d = stage_promote(ws, b)
        typer.echo(f"{b.name}: {'PROMOTED' if d.promoted else 'kept'}: {d.reason}")
