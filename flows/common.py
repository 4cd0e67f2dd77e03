"""Shared task wiring: retries for I/O, provenance-keyed caching for the expensive stages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from anchorprune.config import Settings, load_settings
from anchorprune.provenance import stage_key
from anchorprune.stages import Workspace


def provenance_key(task_ctx, inputs: dict) -> str | None:
    """Config, dataset content, library code, package version and git commit (anchorprune.provenance)."""
    if "params" not in inputs or "root" not in inputs:
        return None
    return stage_key(inputs["params"], inputs["root"])


#: the cache policy of the stages: a rerun is answered from cache only if its inputs, the task's source AND the
#: config, data content, library code, version and commit are all unchanged (what `dvc repro` would also rerun on)
STAGE_POLICY = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=provenance_key)
STAGE_CACHE = dict(cache_policy=STAGE_POLICY, persist_result=True, cache_expiration=timedelta(days=7))
TRANSIENT = (OSError, TimeoutError, ConnectionError)  # network, disk, locks (DVC, sqlite)


def retry_on_io(task, task_run, state) -> bool:
    """Retry only what a retry can fix (I/O against the hub, MLflow, Elasticsearch, DVC), not bugs or bad input."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception as exc:  # noqa: BLE001 - classify by name for optional libraries
        names = {c.__name__ for c in type(exc).__mro__}
        return bool(names & {"MlflowException", "ConnectionError", "TransportError", "DataVersionError"})
    return False


# I/O against the hub, MLflow or Elasticsearch: retry with backoff
IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io)


def params_path(params: str, root: str) -> Path:
    """``params`` as an absolute path: relative ones are relative to ``root`` (itself resolved now)."""
    path = Path(params)
    return path if path.is_absolute() else Path(root).resolve() / path


def settings(params: str, root: str) -> Settings:
    return load_settings(params_path(params, root))


def workspace(params: str, root: str) -> Workspace:
    return Workspace(settings(params, root), Path(root).resolve())


def backbone_names(ws: Workspace, backbone: str | None) -> list[str]:
    if backbone:
        ws.settings.backbone(backbone)  # clear error for an unknown name
        return [backbone]
    names = [b.name for b in ws.settings.backbones]
    if not names:
        raise ValueError("params.yaml lists no backbones: add one under 'backbones'")
    return names
