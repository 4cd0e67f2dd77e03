"""``anchorprune doctor``: what this environment has, and where each part of the stack lives."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

from anchorprune.redact import redact_url

STACK = [
    "torch", "transformers", "datasets", "prefect", "mlflow", "dvc", "great-expectations",
    "elasticsearch", "pydantic", "numpy", "pandas", "fastapi", "sqlalchemy", "pypdfium2",
]


def package_version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def colpali_engine_status() -> str:
    """Whether the optional colpali-engine imports here (it does not next to the CPU torch 2.13 wheel)."""
    if package_version("colpali-engine") == "not installed":
        return "optional, not installed (only the colpali-engine backbone kind needs it: make colpali-engine-env)"
    try:
        importlib.import_module("colpali_engine")
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return (f"optional, installed but does not import here ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:100]}); use make colpali-engine-env")
    return f"optional, imports (version {package_version('colpali-engine')})"


def prefect_status(api_url: str | None, timeout: float | None = None) -> str:
    """Ping the Prefect API (``<url>/health``) when PREFECT_API_URL is set; otherwise say what runs use."""
    if not api_url:
        return "PREFECT_API_URL not set: flows start a temporary local server (ephemeral API)"
    import json
    import urllib.request

    from anchorprune.servers import connect_timeout_s

    timeout = connect_timeout_s() if timeout is None else timeout
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310
            ok = json.loads(resp.read() or b"null")
        return f"{redact_url(api_url)} answers (health {ok})"
    except Exception as exc:  # noqa: BLE001 - any failure means it does not answer
        return f"{redact_url(api_url)} does not answer ({type(exc).__name__}); start it with `make prefect-ui`"


def elasticsearch_status(url: str | None) -> str:
    if not url:
        return "ELASTICSEARCH_URL not set: the local index is used"
    try:
        from elasticsearch import Elasticsearch

        from anchorprune.servers import connect_timeout_s

        kwargs = {"request_timeout": connect_timeout_s(), "max_retries": 0}
        if os.environ.get("ELASTICSEARCH_API_KEY"):
            kwargs["api_key"] = os.environ["ELASTICSEARCH_API_KEY"]
        info = Elasticsearch(url, **kwargs).info()
        return f"{redact_url(url)} answers: version {info['version']['number']}"
    except Exception as exc:  # noqa: BLE001
        return f"{redact_url(url)} does not answer ({type(exc).__name__})"


def gpu_status() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return "none (CPU only)"


def report(params: Path = Path("params.yaml")) -> str:
    from anchorprune.config import ConfigError, load_settings

    lines = [f"python      {sys.version.split()[0]} ({platform.machine()})"]
    lines += [f"{name:<19} {package_version(name)}" for name in STACK]
    lines.append(f"colpali-engine      {colpali_engine_status()}")
    try:
        cfg = load_settings(params)
        tracking = os.environ.get("MLFLOW_TRACKING_URI", cfg.tracking.uri)
        lines.append(f"config              {params} ok (hash {cfg.config_hash()})")
    except ConfigError as exc:
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "unknown (config invalid)")
        lines.append(f"config              INVALID: {exc}")
    lines.append(f"mlflow tracking     {redact_url(tracking)}")
    prefect_home = os.environ.get("PREFECT_HOME") or f"{Path(params).resolve().parent / '.prefect'} (the CLI default)"
    lines.append(f"prefect             {prefect_status(os.environ.get('PREFECT_API_URL'))}")
    lines.append(f"prefect home        {prefect_home}")
    lines.append(f"elasticsearch       {elasticsearch_status(os.environ.get('ELASTICSEARCH_URL'))}")
    lines.append(f"gpu                 {gpu_status()}")
    lines.append(f"HF_HUB_OFFLINE      {os.environ.get('HF_HUB_OFFLINE', 'unset')}")
    return "\n".join(lines)
