"""The process environment the stages run in: telemetry off, offline hub, this checkout's Prefect home and API.

The one Python home of these variables (the Makefile and ``.ci/run`` export the same values for
the shell). The variables must be set before the libraries that read them are imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

#: the stack's usage reporting, off (Prefect's server, MLflow, Great Expectations, DVC)
TELEMETRY_OFF: Mapping[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}

#: no download from the model and dataset hub (its local cache only); tokenizers without their own threads
OFFLINE: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

#: the first run on a new PREFECT_HOME migrates its database (~20 s idle, longer on a busy machine):
#: the temporary server gets this long to start instead of Prefect's 20 s
PREFECT_STARTUP_TIMEOUT_S = "120"


def set_env(values: Mapping[str, str], *, override: bool = False,
            environ: MutableMapping[str, str] | None = None) -> None:
    """Set ``values`` in the environment; a variable already set is kept unless ``override``."""
    environ = os.environ if environ is None else environ
    for key, value in values.items():
        if override:
            environ[key] = value
        else:
            environ.setdefault(key, value)


def use_project_prefect_home(root: str | Path, environ: MutableMapping[str, str] | None = None) -> None:
    """Keep this checkout's Prefect runs in ``<root>/.prefect`` unless PREFECT_HOME is set (before prefect imports)."""
    set_env({"PREFECT_HOME": str(Path(root) / ".prefect"),
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": PREFECT_STARTUP_TIMEOUT_S}, environ=environ)


def prefect_api_url(*, ephemeral: bool = True) -> str | None:
    """The Prefect API this process talks to: ``PREFECT_API_URL``, else (``ephemeral``) the temporary
    server it started, else None."""
    from prefect.settings import PREFECT_API_URL

    if url := PREFECT_API_URL.value():
        return url
    if not ephemeral:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.server_process is not None else None


def check_prefect_api() -> None:
    """When ``PREFECT_API_URL`` names a server, fail fast if it does not answer (:mod:`anchorprune.servers`)."""
    from anchorprune.servers import probe

    if url := os.environ.get("PREFECT_API_URL") or _prefect_setting_url():
        probe(url, "Prefect API", "check PREFECT_API_URL and that `prefect server start` runs there, "
              "or unset it to let the run start a temporary local server")


def _prefect_setting_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
