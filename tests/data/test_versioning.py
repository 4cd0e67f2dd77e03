"""Staging (validate, then one rename) and DVC tracking in a throwaway git repo."""

from __future__ import annotations

import subprocess

import pytest
from pdf_fixtures import tree_digest
from PIL import Image

from anchorprune.data.schema import DatasetWriter, load_dataset_dir
from anchorprune.data.validation import DataValidationError
from anchorprune.data.versioning import DataVersionError, build_staged, data_version, dvc_add


def good(n_pages=2, tag="a"):
    def build(d):
        w = DatasetWriter(d)
        for i in range(n_pages):
            w.add_page(f"p{i}", Image.new("RGB", (32, 32), (i * 50, 0, 0)), text=f"{tag}{i}", source_doc="d")
        w.add_query("q0", "hello")
        w.add_qrel("q0", "p0")
        return w.finish(name="ds", source="test", revision=tag)
    return build


def bad_qrel(d):
    w = DatasetWriter(d)
    w.add_page("p0", Image.new("RGB", (32, 32)), text="x", source_doc="d")
    w.add_query("q0", "hello")
    w.add_qrel("q0", "p-missing")
    w.finish(name="ds", source="test", revision="bad")


def test_build_staged_moves_a_valid_dataset_in(tmp_path):
    final, manifest = build_staged(tmp_path / "data", "ds", good())
    assert final == tmp_path / "data" / "ds"
    assert load_dataset_dir(final).manifest["revision"] == "a" and manifest["counts"]["pages"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data"]   # no staging left behind


def test_failed_build_creates_nothing(tmp_path):
    with pytest.raises(DataValidationError, match="p-missing"):
        build_staged(tmp_path / "data", "ds", bad_qrel)
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_leaves_data_byte_for_byte(tmp_path):
    build_staged(tmp_path / "data", "ds", good())
    before = tree_digest(tmp_path / "data")
    with pytest.raises(DataValidationError):
        build_staged(tmp_path / "data", "ds", bad_qrel)

    def crash(d):
        good()(d)
        raise RuntimeError("source went away")
    with pytest.raises(RuntimeError, match="went away"):
        build_staged(tmp_path / "data", "ds", crash)
    assert tree_digest(tmp_path / "data") == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_valid_rebuild_replaces(tmp_path):
    build_staged(tmp_path / "data", "ds", good(tag="a"))
    build_staged(tmp_path / "data", "ds", good(n_pages=3, tag="b"))
    ds = load_dataset_dir(tmp_path / "data" / "ds")
    assert ds.manifest["revision"] == "b" and len(ds) == 3


def test_bad_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="plain folder name"):
        build_staged(tmp_path / "data", "../escape", good())


def test_dvc_add_push_pull_in_a_fresh_git_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert data_version(repo) is None
    with pytest.raises(DataVersionError, match="does not exist"):
        dvc_add(repo)
    build_staged(repo / "data", "ds", good())
    v1 = dvc_add(repo)
    assert len(v1) == 32 and data_version(repo) == v1
    assert (repo / ".dvc" / "config").read_text().count("remote") >= 1
    assert any((repo / ".dvc-remote").rglob("*"))            # pushed
    # a new build gives a new version; pull restores a deleted tree from the remote
    build_staged(repo / "data", "ds", good(n_pages=3, tag="b"))
    v2 = dvc_add(repo)
    assert v2 != v1
    digest = tree_digest(repo / "data")
    import shutil
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    subprocess.run([__import__("sys").executable, "-m", "dvc", "pull", "-q"], cwd=repo, check=True)
    assert tree_digest(repo / "data") == digest


def test_malformed_dvc_file_is_named(tmp_path):
    (tmp_path / "data.dvc").write_text("outs: []\n")
    with pytest.raises(DataVersionError, match="data.dvc"):
        data_version(tmp_path)
