"""The one line between a report's figures (a DVC output) and the run that wrote them."""

from __future__ import annotations

import json

from anchorprune.provenance import provenance_path, strip_run_ids, without_provenance, write_report


def test_write_report_splits_figures_from_the_run(tmp_path):
    path = tmp_path / "reports" / "promotion" / "b.json"
    record = {"champion": {"name": "sap@0.1", "run_id": "r1", "meta": {"config_hash": "h", "git_commit": "c"}},
              "candidates": [{"name": "x", "run_id": "r2"}]}
    write_report(path, strip_run_ids(record), {"promote_run_id": "p1", "git_commit": "c"})
    figures = json.loads(path.read_text())
    assert figures == {"champion": {"name": "sap@0.1", "meta": {"config_hash": "h"}}, "candidates": [{"name": "x"}]}
    assert provenance_path(path) == tmp_path / "reports" / ".provenance" / "promotion" / "b.json"
    assert json.loads(provenance_path(path).read_text()) == {"promote_run_id": "p1", "git_commit": "c"}


def test_a_rerun_by_another_commit_leaves_the_figures_byte_identical(tmp_path):
    path = tmp_path / "reports" / "encode" / "b.json"
    meta = {"backbone": "b", "git_commit": "aaa"}
    write_report(path, {**without_provenance(meta), "pages": 3}, {"git_commit": "aaa"})
    first = path.read_bytes()
    write_report(path, {**without_provenance({**meta, "git_commit": "bbb"}), "pages": 3}, {"git_commit": "bbb"})
    assert path.read_bytes() == first
    assert json.loads(provenance_path(path).read_text()) == {"git_commit": "bbb"}


def test_a_meta_key_named_like_provenance_outside_a_meta_mapping_is_kept():
    # only mappings that carry a config_hash are run metadata; a figure called git_commit elsewhere stays
    assert strip_run_ids({"git_commit": "x", "rows": [{"run_id": 1, "v": 2}]}) == {"git_commit": "x", "rows": [{"v": 2}]}
