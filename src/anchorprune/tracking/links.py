"""Links into the MLflow UI (``ANCHORPRUNE_MLFLOW_UI``, default what ``mlflow ui`` serves), in markdown."""

from __future__ import annotations

import os

DEFAULT_UI = "http://127.0.0.1:5000"


def mlflow_ui() -> str:
    return os.environ.get("ANCHORPRUNE_MLFLOW_UI", DEFAULT_UI).rstrip("/")


# MLflow 3.17's UI opens in its GenAI view unless the URL asks for the model-training one
ML_VIEW = "workflowType=machine_learning"


def run_link(experiment_id: str, run_id: str | None, label: str = "", ui: str | None = None) -> str:
    if not run_id:
        return "-"
    return f"[{label or run_id[:8]}]({ui or mlflow_ui()}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW})"


def model_link(model: str, version: str | int | None, ui: str | None = None) -> str:
    if version in (None, ""):
        return f"{model} (no version)"
    return f"[{model} v{version}]({ui or mlflow_ui()}/#/models/{model}/versions/{version}?{ML_VIEW})"
