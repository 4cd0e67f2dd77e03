"""`anchorprune index status | rollback` on a local index (build/search go through the pipeline stages)."""

from __future__ import annotations

import json

import yaml
from index_helpers import make_pages
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.index import LocalIndex

runner = CliRunner()


def _params(tmp_path, name="cli-idx"):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"paths": {"index_dir": str(tmp_path / "indexes")}, "index": {"name": name},
                                 "backbones": [{"name": "m", "kind": "mock", "model_id": "m"}]}))  # a config needs one
    return p


def test_status_lists_versions_and_marks_the_serving_one(tmp_path):
    params = _params(tmp_path)
    idx = LocalIndex(tmp_path / "indexes", "cli-idx", dtype="float16")
    for s in range(2):
        idx.swap(idx.build(make_pages(n=3, seed=s), {"model": "m", "model_version": str(s + 1), "data_version": "d"}))
    out = runner.invoke(app, ["index", "status", "--params", str(params)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("index cli-idx (local, float16")
    assert any(line.strip().startswith("* v2") and "model m:2" in line for line in lines)
    assert any(line.strip().startswith("v1") for line in lines)
    js = runner.invoke(app, ["index", "status", "--params", str(params), "--json"])
    assert json.loads(js.output)["current"]["version"] == 2


def test_rollback_serves_the_previous_version_and_fails_clearly_without_one(tmp_path):
    params = _params(tmp_path)
    idx = LocalIndex(tmp_path / "indexes", "cli-idx")
    for s in range(2):
        idx.swap(idx.build(make_pages(n=3, seed=s), {}))
    out = runner.invoke(app, ["index", "rollback", "--params", str(params)])
    assert out.exit_code == 0 and "rolled back from v2 to v1" in out.output
    assert idx.current().number == 1
    again = runner.invoke(app, ["index", "rollback", "--params", str(params)])
    assert again.exit_code == 1 and "no version older than the serving one" in again.output


def test_status_of_an_empty_index_says_how_to_build_one(tmp_path):
    out = runner.invoke(app, ["index", "status", "--params", str(_params(tmp_path))])
    assert out.exit_code == 0 and "anchorprune index build" in out.output
