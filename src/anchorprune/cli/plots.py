"""``anchorprune plots``: the dvc.yaml plots as one offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anchorprune.cli.errors import PLOTS, exit_on
from anchorprune.cli.options import ParamsOpt, load_workspace


def plots(
    revs: Annotated[list[str] | None, typer.Argument(help="git revisions to compare (default: the workspace)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="folder for index.html (default: <reports_dir>/plots)")] = None,
) -> None:
    """The dvc.yaml plots as one offline HTML page (DVC fills the templates, vl-convert draws SVG; no CDN)."""
    from anchorprune.tracking.dvc_plots import render_offline

    ws = load_workspace(params)
    with exit_on(PLOTS):
        path = render_offline(ws.root, out or ws.reports / "plots", list(revs or []))
    typer.echo(f"wrote {path} (open it in a browser; works offline)")
