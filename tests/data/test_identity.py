"""One identity per dataset (names, reports, data version), and switching a dataset's source is explicit."""

from __future__ import annotations

import pytest
import yaml
from pdf_fixtures import make_pdf

from anchorprune.config import load_settings
from anchorprune.data.build import DatasetSourceChangedError, build_dataset
from anchorprune.data.schema import DatasetWriter
from anchorprune.promotion.registry import model_name
from anchorprune.stages.workspace import Workspace

BACKBONES = [{"name": "mock", "kind": "mock", "model_id": "m"}]


def _ws(root, name="params.yaml", **data) -> Workspace:
    (root / name).write_text(yaml.safe_dump({"data": data, "backbones": BACKBONES,
                                             "index": {"name": "anchorprune"}, "paths": {"reports_dir": "reports"}}))
    return Workspace(load_settings(root / name), root)


def _dataset(d, n=3, text="page"):
    w = DatasetWriter(d)
    for i in range(n):
        w.add_page(f"p{i}", None, text=f"{text} {i}", source_doc="s", page_number=i + 1)
        w.add_query(f"q{i}", f"q {i}?")
        w.add_qrel(f"q{i}", f"p{i}", 1)
    w.finish(name=d.name, source="test", revision="0")


def test_the_demo_keeps_its_names_and_another_dataset_gets_its_own(tmp_path):
    demo, mine = _ws(tmp_path), _ws(tmp_path, "params-mine.yaml", dataset="My Reports")
    assert (demo.settings.index.name, demo.reports, model_name("minilm-text", demo.settings.data.identity)) == \
        ("anchorprune", tmp_path / "reports", "anchorprune-minilm-text")
    assert (mine.settings.index.name, mine.reports, model_name("minilm-text", mine.settings.data.identity)) == \
        ("anchorprune-my-reports", tmp_path / "reports" / "my-reports", "anchorprune-minilm-text-my-reports")
    again = type(mine.settings).model_validate(mine.settings.model_dump())     # a round trip adds nothing
    assert again.index.name == "anchorprune-my-reports" and again.config_hash() == mine.settings.config_hash()
    plain = type(demo.settings).model_validate({"backbones": BACKBONES, "data": {"dataset": "x"}})
    assert plain.data.identity == "" and plain.index.name == "anchorprune"      # no params file: plain names
    assert plain.config_hash() == type(demo.settings).model_validate(
        {"backbones": BACKBONES, "data": {"dataset": "x", "identity": None}}).config_hash()


def test_the_projects_own_params_file_keeps_the_plain_names_whatever_its_dataset(tmp_path):
    own = _ws(tmp_path, dataset="synth")            # params.yaml itself: the project's dataset
    assert (own.settings.index.name, own.reports, own.settings.data.identity) == ("anchorprune", tmp_path / "reports", "")
    other = _ws(tmp_path, "params-b.yaml", dataset="b")
    assert (other.settings.index.name, other.settings.data.identity) == ("anchorprune-b", "-b")


def test_the_data_version_is_the_datasets_own(tmp_path):
    _dataset(tmp_path / "data" / "rdocs-demo")
    demo = _ws(tmp_path)
    before = demo.data_version()
    assert len(before) == 32 and before != "untracked"
    _dataset(tmp_path / "data" / "other", n=5)              # a second dataset under data/
    assert _ws(tmp_path).data_version() == before           # the demo's version (and so its index) is unchanged
    assert _ws(tmp_path, "p2.yaml", dataset="other").data_version() != before
    assert "data_dvc" in demo.meta(demo.settings.backbones[0])


def test_switching_a_datasets_pdf_folder_is_refused_with_the_rebuild_command(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}.pdf").write_bytes(make_pdf([["Title", "text"]], [("Title", 0)]))
    ws = _ws(tmp_path, dataset="mine", source="pdfs", pdf_dir=str(tmp_path / "a"), dpi=72)
    build_dataset(ws.settings, tmp_path)
    ws.check_dataset()
    moved = _ws(tmp_path, dataset="mine", source="pdfs", pdf_dir=str(tmp_path / "b"), dpi=72)
    for use in (moved.check_dataset, lambda: build_dataset(moved.settings, tmp_path)):
        with pytest.raises(DatasetSourceChangedError, match=r"data/mine was built from .*'/.*/a'.*now asks for "
                                                            r".*'/.*/b'.*anchorprune pipeline --rebuild-data"):
            use()
    build_dataset(moved.settings, tmp_path, rebuild=True)    # the explicit switch
    moved.check_dataset()
    demo = _ws(tmp_path, dataset="mine", source="demo")
    with pytest.raises(DatasetSourceChangedError, match="source="):
        demo.check_dataset()
