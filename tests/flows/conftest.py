"""Flow tests: one Prefect test harness per session, a tiny synthetic project per test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
N_PAGES = 40  # 20 evaluation queries: enough for the bootstrap to certify the planted configs


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_synthetic_dataset(root: Path, name: str = "synth", n: int = N_PAGES) -> Path:
    """Pages with planted topics for the mock backbone; query q<i> is about page p<i>."""
    from anchorprune.data.schema import DatasetWriter
    from anchorprune.data.versioning import build_staged

    def build(staging: Path):
        w = DatasetWriter(staging)
        for i in range(n):
            w.add_page(f"p{i:02d}", None, text=f"synthetic page {i} topic:t{i}", source_doc="synthetic",
                       page_number=i + 1)
            w.add_query(f"q{i:02d}", f"which page is about topic:t{i}?")
            w.add_qrel(f"q{i:02d}", f"p{i:02d}", 1)
        return w.finish(name=name, source="synthetic", revision="test")

    final, _ = build_staged(root / "data", name, build)
    return final


def make_checkout(root: Path) -> None:
    """``root`` as a checkout of the project: a git repo with the flows next to its params.yaml."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "flows").symlink_to(REPO / "flows")


def project_params(tmp: Path, tracking_uri: str, artifact_root: Path, **overrides) -> dict:
    params = {
        "data": {"dataset": "synth", "source": "demo", "calibration_fraction": 0.5, "seed": 0},
        "backbones": [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 8}],
        # one process: worker processes would cost seconds each; test_encode_sharded.py runs the Dask path
        "encode": {"runner": "inline"},
        "calibrate": {"pairs": 50, "gamma": 0.1, "rho": 0.2, "random_trials": 3},
        "evaluate": {"gammas": [0.2, 0.1], "methods": ["sap", "random", "eos_topk"], "windows": ["sr", "0-1"],
                     "random_trials": 3},
        "promote": {"min_retention": 0.9, "min_queries": 5, "bootstrap_resamples": 500},
        "index": {"backend": "local", "name": "test-index", "dtype": "float32"},
        "tracking": {"uri": tracking_uri, "artifact_root": str(artifact_root), "experiment": "anchorprune"},
    }
    for section, values in overrides.items():
        params[section] = {**params.get(section, {}), **values}
    return params


@pytest.fixture
def project(tmp_path, mlflow_template, monkeypatch):
    """A tmp project checkout: git repo, flows/, params.yaml (mock backbone), synthetic data, its own MLflow store."""
    from mlflow_store import fresh_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    make_checkout(root)
    tracking = fresh_tracking(mlflow_template, root / "mlruns")
    params = project_params(root, tracking.uri, tracking.artifact_root)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_synthetic_dataset(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def served_project(tmp_path_factory, mlflow_template):
    """Like ``project``, with a champion and a serving index: the pipeline runs once per test module."""
    from flows.pipeline import pipeline_flow

    from mlflow_store import fresh_tracking

    root = tmp_path_factory.mktemp("served") / "proj"
    root.mkdir()
    make_checkout(root)
    tracking = fresh_tracking(mlflow_template, root / "mlruns")
    (root / "params.yaml").write_text(yaml.safe_dump(project_params(root, tracking.uri, tracking.artifact_root)))
    write_synthetic_dataset(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        pipeline_flow(params="params.yaml", root=str(root))
        yield root
    shutil.rmtree(root, ignore_errors=True)
