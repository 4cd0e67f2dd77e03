from pathlib import Path

from typer.testing import CliRunner

from anchorprune.cli import app

runner = CliRunner()
CONFS = Path(__file__).parent / "confs"


def test_help_lists_every_stage():
    out = runner.invoke(app, ["--help"]).output
    for cmd in ["data", "encode", "calibrate", "evaluate", "promote", "index", "pipeline", "serve", "deploy", "doctor"]:
        assert cmd in out


def test_check_config_rejects_typo_naming_key():
    res = runner.invoke(app, ["check-config", "--params", str(CONFS / "invalid" / "typo-key.yaml")])
    assert res.exit_code == 2
    assert "calibrate.gama" in res.output


def test_doctor_reports_stack(monkeypatch):
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "torch" in res.output and "2.13.0" in res.output
    assert "colpali-engine" in res.output
    assert "ELASTICSEARCH_URL not set" in res.output
    assert "mlflow tracking" in res.output


def test_doctor_redacts_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:secret@mlflow.example")
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    res = runner.invoke(app, ["doctor"])
    assert "secret" not in res.output and "***@mlflow.example" in res.output


def test_every_bad_config_is_one_line_and_exit_2():
    for path in sorted((CONFS / "invalid").glob("*.yaml")):
        res = runner.invoke(app, ["check-config", "--params", str(path)])
        assert res.exit_code == 2, (path.name, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0], res.output


def test_doctor_survives_a_bad_params_file():
    for name in ("not-utf8.yaml", "a-directory.yaml"):
        res = runner.invoke(app, ["doctor", "--params", str(CONFS / "invalid" / name)])
        assert res.exit_code == 0 and res.exception is None, res.output
        assert f"INVALID: config file {CONFS / 'invalid' / name}" in res.output


def test_paths_resolve_against_the_params_folder(tmp_path, monkeypatch):
    """Run from another folder: the params file's folder is the project root, the cwd gets nothing."""
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    proj.mkdir()
    elsewhere.mkdir()
    (proj / "params.yaml").write_text("backbones: [{name: m, kind: mock, model_id: m}]\n")
    (proj / "data.dvc").write_text("outs:\n- md5: 6a2d41b618723cb65dcd366bb4fe6e68.dir\n  path: data\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = runner.invoke(app, ["data", "version", "--params", "../proj/params.yaml"])
    assert res.output.strip() == "6a2d41b618723cb65dcd366bb4fe6e68", res.output
    res = runner.invoke(app, ["promote", "--params", "../proj/params.yaml"])
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception    # no traceback
    assert f"dataset folder {proj.resolve() / 'data' / 'rdocs-demo'} does not exist" in res.output
    assert list(elsewhere.iterdir()) == []          # no stray mlruns/ (or anything else) in the cwd


def test_doctor_marks_optional_parts_and_pings_prefect(monkeypatch):
    monkeypatch.delenv("ELASTICSEARCH_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")   # nothing listens on port 9
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("colpali-engine"))
    assert "optional" in line
    assert "http://127.0.0.1:9/api does not answer" in res.output


def test_doctor_reports_a_live_prefect_api(monkeypatch):
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            ok = self.path == "/api/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"true" if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from anchorprune.cli.doctor import prefect_status

        assert "answers (health True)" in prefect_status(f"http://127.0.0.1:{server.server_port}/api")
    finally:
        server.shutdown()


def test_the_distribution_ships_the_cli_and_no_top_level_flows():
    """pyproject's package discovery, as setuptools runs it: only ``anchorprune*``, the entry point in it."""
    import tomllib

    from setuptools import find_namespace_packages, find_packages

    repo = Path(__file__).resolve().parents[1]
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    packages = {p for where in find.get("where", ["."])
                for p in finder(str(repo / where), include=find.get("include", ["*"]), exclude=find.get("exclude", []))}
    assert {"anchorprune", "anchorprune.cli", "anchorprune.stages"} <= packages
    assert {p.split(".")[0] for p in packages} == {"anchorprune"}, sorted(packages)
    assert project["project"]["scripts"] == {"anchorprune": "anchorprune.cli:app"}
    assert (repo / "flows" / "pipeline.py").is_file()          # the flows stay in the checkout


def test_known_errors_exit_with_one_line_and_their_familys_code(capsys):
    import pytest
    import typer

    from anchorprune.cli.errors import CONFIG, DATA, exit_on
    from anchorprune.config import ConfigError

    with pytest.raises(typer.Exit) as exit_info, exit_on(CONFIG, DATA):
        raise ConfigError("bad key\n  calibrate.gama")        # a ValueError too: the most specific type wins
    assert exit_info.value.exit_code == 2
    assert capsys.readouterr().err == "error: bad key calibrate.gama\n"
    with pytest.raises(typer.Exit) as exit_info, exit_on(CONFIG, DATA):
        raise FileNotFoundError("no dataset")
    assert exit_info.value.exit_code == 1
    with pytest.raises(KeyError), exit_on(CONFIG, DATA):   # not a known error: a bug keeps its traceback
        raise KeyError("x")


def test_the_cli_turns_usage_reporting_off_unless_the_user_chose(monkeypatch):
    """``anchorprune …`` outside make: Prefect's server telemetry (a traceback offline), MLflow's, GX's and
    DVC's are off before any command runs; a value the user set is kept."""
    from anchorprune.cli.main import main
    from anchorprune.orchestration.environment import TELEMETRY_OFF

    for key in TELEMETRY_OFF:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_TELEMETRY", "true")
    main(verbose=False)
    import os

    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DVC_NO_ANALYTICS"] == "1"
    assert os.environ["MLFLOW_ENABLE_TELEMETRY"] == "true"
