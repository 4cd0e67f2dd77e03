"""MLflow tracking: where runs go, and small helpers to log params, metrics, plots and tables.

Everything goes through an explicit :class:`Tracker` (MLflow's client API), so
tests can point it at a temporary sqlite store. ``MLFLOW_TRACKING_URI``
overrides the configured URI. Nothing sets MLflow's global URIs for good: the
one fluent call (pyfunc ``log_model``) runs inside :meth:`Tracker.fluent`, which
restores them. Runs carry MLflow's standard source tags (git commit, user,
entry point) and the experiment is created in the model-training view.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchorprune.config import TrackingConfig
from anchorprune.redact import redact_text
from anchorprune.servers import probe

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
#: MLflow 3's UI opens an experiment in the GenAI view unless it is tagged as model development
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def resolve_tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the configured URI with a relative sqlite path made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((root / uri[len(prefix):]).resolve())
    return uri


#: MLflow's HTTP retries, bounded unless the environment sets them: MLflow's defaults (7 retries,
#: back-off factor 2, 120 s per request) keep a command waiting for minutes on a server that went away
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def bound_http_retries() -> None:
    """Set :data:`HTTP_RETRY_DEFAULTS` where the environment leaves them unset (MLflow reads them per request)."""
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def git_commit(root: Path) -> str:
    """The repository's HEAD commit (with ``+dirty`` if the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Tracker:
    """One MLflow experiment reached through the client API."""

    uri: str
    experiment_id: str
    client: Any  # mlflow.MlflowClient
    root: Path | None = None

    @classmethod
    def from_config(cls, cfg: TrackingConfig, root: Path = Path(".")) -> Tracker:
        from mlflow import MlflowClient

        root = root.resolve()
        uri = resolve_tracking_uri(cfg, root)
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        bound_http_retries()
        probe(uri, "MLflow tracking server",
              "check MLFLOW_TRACKING_URI (or tracking.uri in params.yaml) and that the server is up")
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            exp = client.get_experiment_by_name(cfg.experiment)      # the store's first read
        except Exception as exc:
            exc.tracking_uri = uri          # so a one-line error names this store, not MLflow's default one
            raise
        if exp is None:
            artifact_root = cfg.artifact_root if cfg.artifact_root.is_absolute() else root / cfg.artifact_root
            location = None if "://" in uri and not uri.startswith("sqlite") else artifact_root.resolve().as_uri()
            exp_id = client.create_experiment(cfg.experiment, artifact_location=location,
                                              tags=dict([EXPERIMENT_KIND_TAG]))
        else:
            exp_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND_TAG[0]) is None:
                client.set_experiment_tag(exp_id, *EXPERIMENT_KIND_TAG)
        return cls(uri=uri, experiment_id=exp_id, client=client, root=root)

    @contextlib.contextmanager
    def fluent(self) -> Iterator[None]:
        """Point MLflow's fluent API at this store for a block, then restore what was there before.

        ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, which
        :func:`resolve_tracking_uri` reads: the environment is restored exactly (unset if it was).
        """
        import mlflow

        keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        before = {k: os.environ.get(k) for k in keys}
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])   # None unsets it
            mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @functools.cached_property
    def _source_tags(self) -> dict[str, str]:
        return self.source_tags()

    def source_tags(self) -> dict[str, str]:
        """MLflow's standard source tags: git commit, user, entry point."""
        import getpass
        import sys

        tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": Path(sys.argv[0]).name or "anchorprune"}
        commit = git_commit(self.root) if self.root else "unknown"
        if commit != "unknown":
            tags["mlflow.source.git.commit"] = commit.removesuffix("+dirty")
        with contextlib.suppress(Exception):
            tags["mlflow.user"] = getpass.getuser()
        return tags

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[str]:
        """Create a run, yield its id, and end it FINISHED (or FAILED if the block raises)."""
        all_tags = {k: redact_text(v) for k, v in {**self._source_tags, **dict(tags or {})}.items()}
        all_tags["mlflow.runName"] = name
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.log_params(run_id, params)
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, redact_text(v)[:6000]) for k, v in params.items()])

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """A run tag, with any URL in it redacted."""
        self.client.set_tag(run_id, key, redact_text(value))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow shows NaN as a broken number: a metric that is undefined is not logged
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(batch), 900):  # MLflow's batch limit is 1000 metrics
            self.client.log_batch(run_id, metrics=batch[i:i + 900])

    def log_series(self, run_id: str, key: str, values: list[float]) -> None:
        """One metric with ``step`` = index (MLflow's UI then draws it as a curve)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(key, float(v), now, i) for i, v in enumerate(values)])

    def log_figure(self, run_id: str, fig: Any, filename: str) -> None:
        """Log a matplotlib figure and close it (a long-running process would otherwise keep every figure)."""
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(run_id, fig, filename)
        finally:
            plt.close(fig)

    def log_text(self, run_id: str, text: str, filename: str) -> None:
        self.client.log_text(run_id, text, filename)

    def log_dict(self, run_id: str, obj: Any, filename: str) -> None:
        self.client.log_dict(run_id, obj, filename)

    def log_table(self, run_id: str, frame: Any, stem: str) -> None:
        """A pandas DataFrame as CSV and HTML artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            csv, html = Path(tmp) / f"{stem}.csv", Path(tmp) / f"{stem}.html"
            frame.to_csv(csv, index=False)
            html.write_text(frame.to_html(index=False, float_format=lambda x: f"{x:.4f}"))
            self.client.log_artifact(run_id, str(csv))
            self.client.log_artifact(run_id, str(html))

    def child_runs(self, parent_run_id: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000
        )
