"""A pre-migrated MLflow sqlite store, copied per test (keeps migrations out of each test's time)."""

from __future__ import annotations

import shutil
from pathlib import Path

from anchorprune.config import TrackingConfig
from anchorprune.tracking.tracker import Tracker


def make_template(dir_: Path) -> Path:
    db = dir_ / "template.db"
    # migrations only: the experiment each test uses is created in its own copy, with its own artifact root
    Tracker.from_config(TrackingConfig(uri=f"sqlite:///{db}", artifact_root=dir_ / "art", experiment="template"), dir_)
    return db


def fresh_tracking(template: Path, dest: Path, experiment: str = "anchorprune") -> TrackingConfig:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, dest / "mlflow.db")
    return TrackingConfig(uri=f"sqlite:///{dest / 'mlflow.db'}", artifact_root=dest / "artifacts",
                          experiment=experiment)
