"""The "Index your own PDFs" recipe (docs/data.md, README) run as written, on two small PDFs, next to a demo.

The recipe's own lines are applied to the repository's params.yaml; the test then only swaps the
backbone for the mock (the text stand-in would take minutes) and keeps the encode inline. It checks
that the new dataset lives on its own identity: its reports folder, registered model and index, and
that nothing of the demo's (its reports, its model name, its index) is touched.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from typer.testing import CliRunner

from anchorprune.cli import app

REPO = Path(__file__).resolve().parents[2]


def make_pdf(*args, **kwargs) -> bytes:
    """tests/data/pdf_fixtures.make_pdf (that folder is not on this directory's import path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pdf_fixtures", REPO / "tests" / "data" / "pdf_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_pdf(*args, **kwargs)
RECIPE = REPO / "docs" / "data.md"
N = 30      # outline entries per PDF: 60 weak-label queries, ~18 to calibrate (>= calibrate.min_pairs), ~42 to evaluate


def recipe_sed() -> list[str]:
    """The recipe's `sed` line (docs/data.md, "Index your own PDFs"), as a command."""
    text = RECIPE.read_text()
    block = text[text.index("## Index your own PDFs"):]
    cmd = re.search(r"```bash\n(sed .*?params-my-pdfs\.yaml)\n", block, re.S).group(1)
    return ["bash", "-c", cmd.replace("\\\n", " ")]


def two_pdfs(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, base in (("first report.pdf", 0), ("second-report.pdf", N)):
        pages = [[f"Section {i}", f"this page is about topic:t{i}", "more words on it"] for i in range(base, base + N)]
        outline = [(f"What is in section {i} topic:t{i}?", i - base) for i in range(base, base + N)]
        (folder / name).write_bytes(make_pdf(pages, outline))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")         # skipped, named, counted


def test_the_recipe_indexes_two_pdfs_on_their_own_identity(tmp_path, mlflow_template, monkeypatch):
    from anchorprune.promotion.registry import current_champion, model_name
    from anchorprune.stages.workspace import Workspace
    from mlflow_store import fresh_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "flows").symlink_to(REPO / "flows")
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    home = tmp_path / "home"
    two_pdfs(home / "my-pdfs")
    subprocess.run(recipe_sed(), cwd=root, check=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})

    params = yaml.safe_load((root / "params-my-pdfs.yaml").read_text())
    assert params["data"] | {} == {**params["data"], "dataset": "my-pdfs", "source": "pdfs",
                                   "pdf_dir": str(home / "my-pdfs")}
    tracking = fresh_tracking(mlflow_template, root / "mlruns")
    params["tracking"] = {"uri": tracking.uri, "artifact_root": str(tracking.artifact_root), "experiment": "anchorprune"}
    params["backbones"] = [{"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 8}]
    params["encode"] = {"runner": "inline"}
    params["evaluate"] = {**params["evaluate"], "methods": ["sap", "random"], "random_trials": 2}
    params["promote"] = {**params["promote"], "bootstrap_resamples": 300}
    (root / "params-my-pdfs.yaml").write_text(yaml.safe_dump(params))

    res = CliRunner().invoke(app, ["pipeline", "--params", str(root / "params-my-pdfs.yaml")])
    assert res.exit_code == 0, res.output
    assert "index anchorprune-my-pdfs now serves version 1" in res.output, res.output
    res = CliRunner().invoke(app, ["index", "search", "What is in section 7 topic:t7?",
                                   "--params", str(root / "params-my-pdfs.yaml")])
    assert res.exit_code == 0 and "first_report:p0008" in res.output, res.output

    ws = Workspace.from_params(root / "params-my-pdfs.yaml")
    manifest = ws.dataset.manifest
    assert manifest["extra"]["skipped"][0]["file"] == "broken.pdf" and manifest["counts"]["pages"] == 2 * N
    assert (root / "reports" / "my-pdfs" / "promotion" / "mock.json").exists()
    assert not (root / "reports" / "promotion").exists()                      # the demo's reports: untouched
    assert ws.settings.data.identity == "-my-pdfs"
    assert current_champion(ws.tracker, "mock", ws.settings.data.identity) is not None
    assert current_champion(ws.tracker, "mock") is None                       # the demo's model name: untouched
    assert model_name("mock", ws.settings.data.identity) == "anchorprune-mock-my-pdfs"
    assert sorted(p.name for p in (root / "indexes").iterdir() if not p.name.startswith(".")) == ["anchorprune-my-pdfs"]
