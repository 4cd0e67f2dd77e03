"""The Prefect stage cache is keyed on everything that changes a result: data content, library code, config."""

from __future__ import annotations

import shutil

import yaml
from flows.common import STAGE_POLICY, provenance_key

from anchorprune.orchestration import provenance

BACKBONES = [{"name": "b", "kind": "mock", "model_id": "anchorprune/mock"}]  # a config needs one


def _project(tmp_path):
    root = tmp_path / "proj"
    data = root / "data" / "synth"
    data.mkdir(parents=True)
    (data / "pages.jsonl").write_text('{"page_id": "p0", "text": "a"}\n')
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"dataset": "synth"}, "backbones": BACKBONES}))
    return root


def _key(root):
    return STAGE_POLICY.compute_key(None, {"params": "params.yaml", "root": str(root), "backbone": "b"}, {})


def test_data_content_change_invalidates(tmp_path):
    root = _project(tmp_path)
    before = _key(root)
    assert _key(root) == before                                   # stable when nothing changed
    (root / "data" / "synth" / "pages.jsonl").write_text('{"page_id": "p0", "text": "b"}\n')  # untracked edit
    assert _key(root) != before


def test_config_change_invalidates(tmp_path):
    root = _project(tmp_path)
    before = _key(root)
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"dataset": "synth", "seed": 3}, "backbones": BACKBONES}))
    assert _key(root) != before


def test_library_code_change_invalidates(tmp_path, monkeypatch):
    root = _project(tmp_path)
    code = tmp_path / "code"
    shutil.copytree(provenance.CODE_DIRS[0], code / "anchorprune", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "CODE_DIRS", (code / "anchorprune",))
    before = _key(root)
    target = code / "anchorprune" / "evaluation" / "grid.py"
    target.write_text(target.read_text() + "\n# a change in library code\n")
    assert _key(root) != before


def test_version_is_part_of_the_key(tmp_path, monkeypatch):
    root = _project(tmp_path)
    before = provenance_key(None, {"params": "params.yaml", "root": str(root)})
    monkeypatch.setattr(provenance.anchorprune, "__version__", "9.9.9")
    assert provenance_key(None, {"params": "params.yaml", "root": str(root)}) != before
