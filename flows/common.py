"""Shared task wiring: retries for I/O, input-keyed caching for the expensive stages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE

from anchorprune.config import load_settings
from anchorprune.stages import Workspace

# a rerun with the same inputs (config hash, data version, backbone, root) skips finished work
STAGE_CACHE = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, cache_expiration=timedelta(days=7))
# I/O against the hub, MLflow or Elasticsearch: retry with backoff
IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10])


def workspace(params: str, root: str) -> Workspace:
    root_path = Path(root).resolve()
    params_path = Path(params)
    if not params_path.is_absolute():
        params_path = root_path / params_path
    return Workspace(load_settings(params_path), root_path)


def backbone_names(ws: Workspace, backbone: str | None) -> list[str]:
    if backbone:
        ws.settings.backbone(backbone)  # clear error for an unknown name
        return [backbone]
    names = [b.name for b in ws.settings.backbones]
    if not names:
        raise ValueError("params.yaml lists no backbones: add one under 'backbones'")
    return names
