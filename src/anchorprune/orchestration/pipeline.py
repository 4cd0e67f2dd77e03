"""The pipeline's decisions between stages: which backbones a run covers, whether the index is built."""

from __future__ import annotations

from typing import Any

from anchorprune.stages.index import index_backbone
from anchorprune.stages.workspace import Workspace


def backbone_names(ws: Workspace, backbone: str | None = None) -> list[str]:
    """``backbone`` (checked against params.yaml), else every backbone listed there."""
    if backbone:
        ws.settings.backbone(backbone)  # clear error for an unknown name
        return [backbone]
    names = [b.name for b in ws.settings.backbones]
    if not names:
        raise ValueError("params.yaml lists no backbones: add one under 'backbones'")
    return names


def skip_index_reason(ws: Workspace, promotion: dict[str, dict[str, Any]]) -> str | None:
    """Why the pipeline builds no index after ``promotion`` (the promote flow's result), or None to build it.

    With nothing certified and no earlier champion for the index's backbone there is nothing to
    serve: the run says so instead of failing.
    """
    served = index_backbone(ws).name
    if promotion.get(served, {}).get("champion") is not None:
        return None
    return (f"no certified champion for {served}: the index is not built "
            f"(see reports/promotion/{served}.json)")
