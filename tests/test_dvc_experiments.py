"""`dvc exp run -S ...` on a small project (mock backbone): the stages rerun through the CLI and `dvc exp show`
lists the headline metrics, keyed per configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anchorprune.data.schema import DatasetWriter
from synth import add_topic_pages

pytestmark = pytest.mark.slow

N = 12
DVC_YAML = {
    "stages": {
        "calibrate": {"cmd": "anchorprune calibrate", "deps": ["data/one"], "params": ["calibrate"],
                      "outs": [{"reports/calibration": {"cache": False}}]},
        "evaluate": {"cmd": "anchorprune evaluate", "deps": ["reports/calibration"], "params": ["evaluate"],
                     "outs": [{"reports/evaluation": {"cache": False}}]},
        "promote": {"cmd": "anchorprune promote", "deps": ["reports/evaluation"], "params": ["promote"],
                    "outs": [{"reports/promotion": {"cache": False}}],
                    "metrics": [{"metrics.json": {"cache": False}}]},
    },
}


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_dvc_exp_run_changes_a_param_and_exp_show_lists_the_metrics(tmp_path):
    repo = tmp_path / "proj"
    add_topic_pages(DatasetWriter(repo / "data" / "one"), N, text="page about topic:t{i} and some filler words",
                    source_doc="d").finish(name="one", source="test", revision="test")
    params = {
        "data": {"dataset": "one", "calibration_fraction": 0.25},
        "backbones": [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted"}],
        "calibrate": {"pairs": 20, "random_trials": 2, "min_pairs": 3},
        "evaluate": {"gammas": [0.25, 0.5], "methods": ["sap", "random"], "windows": ["sr"], "random_trials": 2},
        "promote": {"min_queries": 1, "bootstrap_resamples": 200, "min_retention": 0.5},
        "tracking": {"uri": "sqlite:///mlruns/mlflow.db", "artifact_root": "mlruns/artifacts"},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / ".gitignore").write_text("/mlruns/\n/cache/\n/reports/.provenance/\n/.validation/\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_ENABLE_TELEMETRY": "false",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], repo, env)
    _run([*dvc, "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "project"], repo, env)
    _run([*dvc, "repro", "-q"], repo, env)
    before = json.loads((repo / "metrics.json").read_text())
    assert "mock/sap/sr/0.5/ndcg@5_retention" in before and "mock/full/ndcg@5" in before
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)

    _run([*dvc, "exp", "run", "-S", "evaluate.gammas=[0.25]"], repo, env)
    after = json.loads((repo / "metrics.json").read_text())          # the experiment is applied to the workspace
    assert "mock/sap/sr/0.25/ndcg@5_retention" in after and "mock/sap/sr/0.5/ndcg@5_retention" not in after
    assert yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["gammas"] == [0.25]

    shown = json.loads(_run([*dvc, "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(shown)
    assert "mock/sap/sr/0.25/ndcg@5_retention" in text and "evaluate" in text
