"""No dead ends: a damaged or broken index always has a command that gets it serving again, and every failure of
`index build` / `rollback` / `status` / `search` is one line (the fault campaign's cases, through the CLI)."""

from __future__ import annotations

import errno
import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.index import LocalIndex
from synth import build_synth, sap_champion

runner = CliRunner()
N = 6
SPEC_BACKBONE = {"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 3}


@pytest.fixture
def project(tmp_path, tracking_config, monkeypatch):
    """A workspace with a small dataset and a champion (the registry's answer patched in): `index build` works."""
    import anchorprune.promotion.registry as registry

    root = tmp_path / "proj"
    root.mkdir()
    build_synth(root, N)
    params = {"data": {"dataset": "synth"}, "backbones": [SPEC_BACKBONE],
              "index": {"backend": "local", "name": "t", "dtype": "float32"},
              "tracking": {"uri": tracking_config.uri, "artifact_root": str(tracking_config.artifact_root)}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cand, spec = sap_champion(SPEC_BACKBONE)
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    monkeypatch.chdir(root)
    return root


def cli(project, *args):
    out = runner.invoke(app, [*args, "--params", str(project / "params.yaml")])
    assert out.exception is None or isinstance(out.exception, SystemExit), out.output
    assert "Traceback" not in out.output
    return out


def index_dir(project):
    return project / "indexes" / "t"


def damage_same_size(project, n: int) -> None:
    """A third of ``vectors.bin`` overwritten in place: same size, so only a checksum finds it."""
    f = index_dir(project) / f"v{n}" / "vectors.bin"
    data = bytearray(f.read_bytes())
    data[: len(data) // 3] = b"\x11" * (len(data) // 3)
    f.write_bytes(bytes(data))


def test_the_fault_campaign_sequence_ends_serving_with_no_file_edited_by_hand(project):
    assert cli(project, "index", "build").exit_code == 0                     # v1
    assert cli(project, "index", "build", "--force").exit_code == 0          # v2 serves, v1 served before
    damage_same_size(project, 2)
    status = cli(project, "index", "status")                                 # what every search refuses is DAMAGED
    assert status.exit_code == 0 and "* v2  DAMAGED (served): v2/vectors.bin" in status.output, status.output
    repair = cli(project, "index", "build")                                  # re-encodes the damaged pages: v3
    assert repair.exit_code == 0 and "now serves v3" in repair.output, repair.output
    # retention removed the damaged v2 and kept the healthy v1 that served
    assert sorted(p.name for p in index_dir(project).glob("v*")) == ["v1", "v3"]
    verify = cli(project, "index", "verify")
    assert verify.exit_code == 0 and verify.output.splitlines() == ["v1: ok", "v3: ok (serving)"], verify.output

    # now the only older version is damaged and the serving one is truncated
    damage_same_size(project, 1)
    f = index_dir(project) / "v3" / "vectors.bin"
    f.write_bytes(f.read_bytes()[:10])
    back = cli(project, "index", "rollback")
    assert back.exit_code == 1 and "index build --force" in back.output, back.output
    status = cli(project, "index", "status")
    assert "fix: no healthy version that served is left: `anchorprune index build --force`" in status.output
    rebuilt = cli(project, "index", "build")                                  # a broken serving version is rebuilt
    assert rebuilt.exit_code == 0 and "now serves v4" in rebuilt.output and f"re-encoded {N}" in rebuilt.output, \
        rebuilt.output
    assert sorted(p.name for p in index_dir(project).glob("v*")) == ["v4"]   # both damaged versions removed
    assert cli(project, "index", "verify").exit_code == 0
    hits = cli(project, "index", "search", "which page is about topic:t3?", "-k", "1")
    assert hits.exit_code == 0 and "p3" in hits.output, hits.output


@pytest.mark.parametrize("breakage", ["pages.json deleted", "garbage CURRENT", "CURRENT names a missing version"])
def test_build_force_serves_whatever_the_pointer_and_older_versions_hold(project, breakage):
    assert cli(project, "index", "build").exit_code == 0
    assert cli(project, "index", "build", "--force").exit_code == 0
    damage_same_size(project, 1)
    if breakage == "pages.json deleted":
        (index_dir(project) / "v2" / "pages.json").unlink()
    elif breakage == "garbage CURRENT":
        (index_dir(project) / "CURRENT").write_text("garbage")
    else:
        (index_dir(project) / "CURRENT").write_text("v9\n")
    if breakage == "pages.json deleted":        # the serving v2 is broken and v1 damaged: no rollback target
        assert cli(project, "index", "rollback").exit_code == 1
    out = cli(project, "index", "build", "--force")
    assert out.exit_code == 0 and "now serves v3" in out.output, out.output
    assert LocalIndex(project / "indexes", "t").current().number == 3
    assert cli(project, "index", "verify").exit_code == 0


def test_a_report_that_cannot_be_written_after_the_swap_is_a_warning_naming_what_serves(project, monkeypatch):
    import anchorprune.stages.index as stage

    assert cli(project, "index", "build").exit_code == 0

    def full(path, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(stage, "write_json", full)
    out = cli(project, "index", "build", "--force")
    assert out.exit_code == 0, out.output
    assert "now serves v2" in out.output
    assert "warning: index t now serves v2, but writing" in out.output and "No space left on device" in out.output
    assert LocalIndex(project / "indexes", "t").current().number == 2


def test_disk_full_under_the_index_dir_is_one_line_and_serving_is_untouched(project, monkeypatch):
    assert cli(project, "index", "build").exit_code == 0
    real = os.write

    def write(fd, data):
        if "/indexes/t/.build-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    import anchorprune.index.local.files as files

    def write_file(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "write_file", write_file)
    monkeypatch.setattr("anchorprune.index.local.build.write_file", write_file, raising=False)
    monkeypatch.setattr("builtins.open", _enospc_open(open), raising=True)
    out = cli(project, "index", "build", "--force")
    assert out.exit_code == 1 and len(out.output.strip().splitlines()[-1]) > 0
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device (ENOSPC)" in last and "free space" in last, last
    monkeypatch.undo()
    assert LocalIndex(project / "indexes", "t").current().number == 1


def _enospc_open(real):
    def fake(file, mode="r", *a, **kw):
        if "w" in str(mode) and "/indexes/t/.build-" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")     # no file name: the CLI names the index dir
        return real(file, mode, *a, **kw)
    return fake


@pytest.mark.parametrize("command", [["index", "build", "--force"], ["index", "rollback"]])
def test_a_read_only_index_dir_is_one_line_naming_the_lock(project, monkeypatch, command):
    import filelock

    assert cli(project, "index", "build").exit_code == 0
    assert cli(project, "index", "build", "--force").exit_code == 0

    def read_only(self, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(self.lock_file))

    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    out = cli(project, *command)
    last = out.output.strip().splitlines()[-1]
    assert out.exit_code == 1 and last.startswith("error: ") and ".lock: Read-only file system (EROFS)" in last, last
    assert "writable" in last


def test_an_index_dir_that_is_a_file_is_one_line_naming_the_setting(project):
    (project / "indexes").write_text("not a folder")
    for command in (["index", "build"], ["index", "status"], ["index", "search", "r packages"]):
        out = cli(project, *command)
        assert out.exit_code != 0 and "paths.index_dir" in out.output and "is a file, not a folder" in out.output


def test_a_missing_data_dir_is_one_line(project):
    import shutil

    shutil.rmtree(project / "data")
    out = cli(project, "index", "build")
    assert out.exit_code == 1 and out.output.strip().splitlines()[-1].startswith("error: "), out.output


def test_a_query_of_invisible_characters_is_refused_as_empty(project):
    out = cli(project, "index", "search", "\u200b\u200b")
    assert out.exit_code == 2 and "query is empty (only invisible characters" in out.output


def test_a_truncated_mlflow_db_is_one_line_naming_it(project, tmp_path):
    db = tmp_path / "broken" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)       # a header and nothing else: "malformed"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tracking"]["uri"] = f"sqlite:///{db}"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = cli(project, "index", "build")
    last = out.output.strip().splitlines()[-1]
    assert out.exit_code == 1 and "the MLflow tracking database" in last and "cannot be read" in last, out.output
    assert str(db) in last                               # the store the params name, not MLflow's default one
    assert len(out.output.strip().splitlines()) <= 3


def test_elasticsearch_down_is_one_line(project, monkeypatch):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["index"]["backend"] = "elasticsearch"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9")             # discard port: nothing listens
    out = cli(project, "index", "build")
    lines = [ln for ln in out.output.strip().splitlines() if ln.startswith("error: ")]
    assert out.exit_code != 0 and len(lines) == 1 and "Elasticsearch at http://127.0.0.1:9 does not answer" in lines[0], out.output
    status = cli(project, "index", "status")
    assert status.exit_code != 0 and "does not answer" in status.output, status.output


def test_the_json_status_marks_same_size_damage(project):
    assert cli(project, "index", "build").exit_code == 0
    damage_same_size(project, 1)
    js = json.loads(cli(project, "index", "status", "--json").output)
    assert [h["ok"] for h in js["health"]] == [False]
