"""One builder per data source: the data stage and the CLI reach the same demo builder for every variant."""

from __future__ import annotations

from pathlib import Path

import pytest

import anchorprune.data.debian_bench as debian_bench
import anchorprune.data.demo as demo
from anchorprune.config import Settings
from anchorprune.data.build import build_dataset, build_demo_dataset, data_root, dataset_dir


@pytest.fixture
def calls(monkeypatch):
    seen: list[tuple[str, dict]] = []

    def fake(kind):
        def build(root, **kw):
            seen.append((kind, {"root": Path(root), **kw}))
            return Path(root) / kw["name"], {"counts": {}}
        return build

    monkeypatch.setattr(demo, "build_demo", fake("rdocs"))
    monkeypatch.setattr(debian_bench, "build_debian_bench", fake("debian"))
    return seen


BACKBONES = [{"name": "mock", "kind": "mock", "model_id": "mock"}]


def _settings(paths: dict | None = None, **data) -> Settings:
    return Settings.model_validate({"data": {"source": "demo", **data}, "paths": paths or {}, "backbones": BACKBONES})


@pytest.mark.parametrize("variant, builder", [("small", "rdocs"), ("large", "rdocs"), ("debian", "debian")])
def test_stage_and_cli_builder_agree_for_every_variant(tmp_path, calls, variant, builder):
    s = _settings(demo_variant=variant, dataset="d1")
    build_dataset(s, tmp_path)                       # what the data stage calls
    build_demo_dataset(s, tmp_path)                  # what `anchorprune data build-demo` calls
    assert [c[0] for c in calls] == [builder, builder]
    assert calls[0][1] == calls[1][1]                # same folder, name, dpi, cache, caps
    assert calls[0][1]["root"] == tmp_path / "data" and calls[0][1]["name"] == "d1"


def test_pdf_dir_is_refused_for_the_debian_variant(tmp_path, calls):
    with pytest.raises(ValueError, match="not 'debian'"):
        build_demo_dataset(_settings(demo_variant="debian"), tmp_path, pdf_dir=tmp_path)
    assert calls == []


def test_data_dir_relative_to_root_or_absolute(tmp_path):
    rel = _settings(paths={"data_dir": "elsewhere/data"}, dataset="x")
    assert data_root(rel, tmp_path) == tmp_path / "elsewhere" / "data"
    assert dataset_dir(rel, tmp_path) == tmp_path / "elsewhere" / "data" / "x"
    absolute = _settings(paths={"data_dir": str(tmp_path / "abs")})
    assert data_root(absolute, "/nowhere") == tmp_path / "abs"
