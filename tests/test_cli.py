from pathlib import Path

from typer.testing import CliRunner

from anchorprune.cli import app

runner = CliRunner()
CONFS = Path(__file__).parent / "confs"


def test_help_lists_every_stage():
    out = runner.invoke(app, ["--help"]).output
    for cmd in ["data", "encode", "calibrate", "evaluate", "promote", "index", "pipeline", "serve", "doctor"]:
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
