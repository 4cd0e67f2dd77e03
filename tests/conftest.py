"""Test environment, set in one place: offline hub, telemetry off, Prefect home in a temp dir."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from anchorprune.orchestration.environment import OFFLINE, TELEMETRY_OFF, set_env

set_env({**OFFLINE, **TELEMETRY_OFF}, override=True)   # before any test imports the libraries that read them
if "PREFECT_HOME" not in os.environ:
    _prefect_home = tempfile.mkdtemp(prefix="anchorprune-prefect-")
    os.environ["PREFECT_HOME"] = _prefect_home
    atexit.register(shutil.rmtree, _prefect_home, ignore_errors=True)


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
