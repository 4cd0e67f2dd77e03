"""What the commands share: the common options and the workspace a params file names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anchorprune.cli.errors import CONFIG, exit_on

if TYPE_CHECKING:
    from anchorprune.config import BackboneConfig
    from anchorprune.stages.workspace import Workspace

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
BackboneOpt = Annotated[str | None, typer.Option("--backbone", "-b", help="only this backbone (default: all)")]


def load_workspace(params: Path) -> Workspace:
    """The params file's workspace, rooted at the file's folder; a bad config exits 2 naming the key."""
    from anchorprune.stages.workspace import Workspace

    with exit_on(CONFIG):
        return Workspace.from_params(params)


def selected_backbones(ws: Workspace, name: str | None) -> list[BackboneConfig]:
    """``--backbone`` (an unknown name exits 2), else every backbone in params.yaml."""
    with exit_on(CONFIG):
        return [ws.settings.backbone(name)] if name else list(ws.settings.backbones)
