"""Test environment, set in one place: offline hub, telemetry off, Prefect home in a temp dir."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
if "PREFECT_HOME" not in os.environ:
    _prefect_home = tempfile.mkdtemp(prefix="anchorprune-prefect-")
    os.environ["PREFECT_HOME"] = _prefect_home
    atexit.register(shutil.rmtree, _prefect_home, ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    from mlflow_store import make_template

    return make_template(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def tracking_config(mlflow_template, tmp_path, monkeypatch):
    """A TrackingConfig pointing at a fresh copy of a migrated sqlite store in tmp_path/mlruns."""
    from mlflow_store import fresh_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return fresh_tracking(mlflow_template, tmp_path / "mlruns")
