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
    assert again.exit_code == 1 and "no healthy version that served before the serving one" in again.output


def test_status_of_an_empty_index_says_how_to_build_one(tmp_path):
    out = runner.invoke(app, ["index", "status", "--params", str(_params(tmp_path))])
    assert out.exit_code == 0 and "anchorprune index build" in out.output


# ---------------------------------------------------------------- faults: errors, not tracebacks
def _two_versions(tmp_path):
    idx = LocalIndex(tmp_path / "indexes", "cli-idx")
    for s in range(2):
        idx.swap(idx.build(make_pages(n=3, seed=s), {}))
    return idx


def _no_traceback(out) -> None:
    assert "Traceback" not in out.output and out.exception is None or isinstance(out.exception, SystemExit)


def test_a_truncated_serving_version_status_reports_it_search_refuses_rollback_recovers(tmp_path):
    params = _params(tmp_path)
    idx = _two_versions(tmp_path)
    f = idx.dir / "v2" / "vectors.bin"
    f.write_bytes(f.read_bytes()[:10])
    status = runner.invoke(app, ["index", "status", "--params", str(params)])
    assert status.exit_code == 0, status.output
    assert "* v2  DAMAGED (served): v2/vectors.bin has 10 bytes" in status.output
    assert "fix: `anchorprune index rollback` serves v1" in status.output
    search = runner.invoke(app, ["index", "search", "anything", "--params", str(params)])
    assert search.exit_code == 1 and "v2/vectors.bin" in search.output and "index rollback" in search.output
    _no_traceback(search)
    verify = runner.invoke(app, ["index", "verify", "--params", str(params)])
    assert verify.exit_code == 1 and "v1: ok" in verify.output and "v2: DAMAGED (serving)" in verify.output
    back = runner.invoke(app, ["index", "rollback", "--params", str(params)])
    assert back.exit_code == 0 and "rolled back from v2 to v1" in back.output
    js = json.loads(runner.invoke(app, ["index", "status", "--params", str(params), "--json"]).output)
    assert js["current"]["version"] == 1 and [h["ok"] for h in js["health"]] == [True, False]


def test_a_missing_pages_json_and_a_garbage_current(tmp_path):
    params = _params(tmp_path)
    idx = _two_versions(tmp_path)
    (idx.dir / "v1" / "pages.json").unlink()
    (idx.dir / "CURRENT").write_text("garbage")
    status = runner.invoke(app, ["index", "status", "--params", str(params)])
    assert status.exit_code == 0 and "! serving pointer:" in status.output and "'garbage'" in status.output
    assert "v1  DAMAGED (served): v1/pages.json is missing" in status.output
    back = runner.invoke(app, ["index", "rollback", "--params", str(params)])
    assert back.exit_code == 0 and "rolled back from a broken pointer to v2" in back.output, back.output
    assert LocalIndex(tmp_path / "indexes", "cli-idx").current().number == 2
    again = runner.invoke(app, ["index", "rollback", "--params", str(params)])
    assert again.exit_code == 1 and "no healthy version that served" in again.output
    _no_traceback(again)


def test_search_errors_empty_query_and_missing_index(tmp_path):
    params = _params(tmp_path)
    empty = runner.invoke(app, ["index", "search", "  ", "--params", str(params)])
    assert empty.exit_code == 2 and "query is empty" in empty.output
    missing = runner.invoke(app, ["index", "search", "r packages", "--params", str(params)])
    assert missing.exit_code == 1 and "no serving version" in missing.output and "anchorprune index build" in missing.output
    _no_traceback(missing)


def test_verify_a_healthy_index_and_unlock_an_unlocked_one(tmp_path):
    params = _params(tmp_path)
    _two_versions(tmp_path)
    ok = runner.invoke(app, ["index", "verify", "--params", str(params)])
    assert ok.exit_code == 0 and ok.output.splitlines() == ["v1: ok", "v2: ok (serving)"]
    none = runner.invoke(app, ["index", "verify", "--version", "7", "--params", str(params)])
    assert none.exit_code == 1 and "no version v7" in none.output
    unlock = runner.invoke(app, ["index", "unlock", "--params", str(params)])
    assert unlock.exit_code == 0 and unlock.output.strip().endswith("not locked")


def test_build_without_a_champion_says_to_promote(tmp_path, tracking_config, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "paths": {"index_dir": str(tmp_path / "indexes")}, "index": {"name": "cli-idx"},
        "tracking": {"uri": tracking_config.uri, "artifact_root": str(tracking_config.artifact_root),
                     "experiment": tracking_config.experiment}}))
    monkeypatch.chdir(tmp_path)
    nothing = runner.invoke(app, ["index", "build", "--params", str(params)])
    # a config without backbones is refused at load, before any index work
    assert nothing.exit_code == 2 and "lists no backbone" in nothing.output, nothing.output
    cfg = yaml.safe_load(params.read_text())
    cfg["backbones"] = [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock"}]
    params.write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["index", "build", "--params", str(params)])
    assert out.exit_code == 1 and "@champion" in out.output and "anchorprune promote" in out.output, out.output
    _no_traceback(out)
    assert not (tmp_path / "indexes" / "cli-idx" / ".lock.owner").exists()     # the lock was released


def test_status_says_which_first_stage_searches_use(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"paths": {"index_dir": str(tmp_path / "indexes")},
                                 "index": {"name": "fs", "first_stage": "auto", "first_stage_threshold": 5,
                                           "candidates": 3, "token_ivf": {"centroids": 2}},
                                 "backbones": [{"name": "m", "kind": "mock", "model_id": "m"}]}))
    idx = LocalIndex(tmp_path / "indexes", "fs", first_stage="auto", first_stage_params={"centroids": 2})
    idx.swap(idx.build(make_pages(n=4, seed=0), {}))              # 4 pages: below the threshold of 5
    out = runner.invoke(app, ["index", "status", "--params", str(p)]).output
    assert "first stage auto (token_ivf from 5 pages, exact below)" in out.splitlines()[0]
    assert "built for token_ivf" in out and "searches use: exact MaxSim over every page" in out
    idx.swap(idx.build(make_pages(n=6, seed=1), {}))              # 6 pages: the first stage answers
    out = runner.invoke(app, ["index", "status", "--params", str(p)]).output
    assert "searches use: token_ivf, candidates 3 (pinned in params.yaml" in out
    LocalIndex(tmp_path / "indexes", "fs", first_stage="none").build(make_pages(n=7, seed=2), {})
    idx.swap(3)                                                    # a version without lists falls back
    out = runner.invoke(app, ["index", "status", "--params", str(p)]).output
    assert "v3 was built for none, so it falls back: rebuild to use token_ivf" in out


def test_status_line_for_a_rebuilds_first_stage_says_carried_or_retrained_and_why():
    from anchorprune.cli.index import _update_line

    carried = {"mode": "reuse", "centroids_from": "v3", "reason": "drift and changed share under their thresholds",
               "drift": -0.0213}
    assert _update_line(carried) == ("centroids carried from v3: drift and changed share under their thresholds; "
                                     "drift -0.021")
    retrained = {"mode": "retrain", "reason": "0.300 of the tokens changed since the centroids were trained"}
    assert _update_line(retrained).startswith("k-means trained: 0.300 of the tokens changed")
