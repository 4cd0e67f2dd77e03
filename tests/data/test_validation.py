"""GX validation: every bad input is a named error naming rows and ids, and data/ stays as it was."""

from __future__ import annotations

import pytest
from pdf_fixtures import tree_digest
from PIL import Image

from anchorprune.data.schema import DatasetWriter
from anchorprune.data.validation import DataValidationError, validate_dataset_dir
from anchorprune.data.versioning import build_staged


def write(d, pages=None, queries=(("q0", "first question"), ("q1", "second question")),
          qrels=(("q0", "p0", 1), ("q1", "p1", 1))):
    w = DatasetWriter(d)
    if pages is None:
        pages = [(f"p{i}", Image.new("RGB", (48, 64), (i * 30, 10, 10)), f"text {i}") for i in range(3)]
    for pid, img, text in pages:
        w.add_page(pid, img, text=text, source_doc="doc.pdf", page_number=1)
    for qid, text in queries:
        w.add_query(qid, text)
    for qid, pid, rel in qrels:
        w.add_qrel(qid, pid, rel)
    return w.finish(name="ds", source="test", revision="0")


@pytest.fixture
def data_root(tmp_path):
    """A valid dataset already in data/: every failing rebuild below must leave it byte-for-byte."""
    root = tmp_path / "data"
    build_staged(root, "ds", write)
    return root


def assert_rejected(data_root, build, *fragments):
    before = tree_digest(data_root)
    with pytest.raises(DataValidationError) as info:
        build_staged(data_root, "ds", build)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, msg
    assert tree_digest(data_root) == before
    assert sorted(p.name for p in data_root.parent.iterdir()) == ["data"]
    return info.value.report


def test_valid_dataset_passes_with_no_warnings(tmp_path):
    write(tmp_path / "ok")
    report = validate_dataset_dir(tmp_path / "ok")
    assert report.success and not report.warnings and len(report.results) > 20


def test_corrupt_image_bytes(data_root):
    def build(d):
        pages = [("p0", Image.new("RGB", (48, 64)), "a"), ("p1", b"\x89PNG\r\n\x1a\n-truncated", "b")]
        write(d, pages=pages)
    report = assert_rejected(data_root, build, "every page image decodes", "'p1", "images/000001.png")
    assert [r.ids for r in report.failures if r.table == "images"][0][0].startswith("p1 (")


def test_image_too_small(data_root):
    def build(d):
        write(d, pages=[("p0", Image.new("RGB", (4, 64)), "a"), ("p1", Image.new("RGB", (48, 64)), "b")])
    assert_rejected(data_root, build, "image width is 16..20000 px", "'p0'")


def test_qrel_to_a_missing_page(data_root):
    report = assert_rejected(data_root, lambda d: write(d, qrels=(("q0", "p0", 1), ("q1", "p-0931", 1))),
                             "every qrel points to an existing page", "rows [1]", "'q1->p-0931'")
    assert len(report.failures) == 1


def test_qrel_to_a_missing_query(data_root):
    assert_rejected(data_root, lambda d: write(d, qrels=(("q0", "p0", 1), ("q1", "p1", 1), ("q9", "p1", 1))),
                    "every qrel points to an existing query", "'q9->p1'")


def test_query_without_qrel(data_root):
    assert_rejected(data_root, lambda d: write(d, qrels=(("q0", "p0", 1),)),
                    "every query has a qrel", "'q1'")


def test_duplicate_page_ids(data_root):
    def build(d):
        write(d, pages=[("p0", Image.new("RGB", (48, 64)), "a"), ("p1", Image.new("RGB", (48, 64), "red"), "b"),
                        ("p1", Image.new("RGB", (48, 64), "blue"), "c")])
    assert_rejected(data_root, build, "duplicate page_id", "rows [1, 2]", "'p1'")


def test_duplicate_query_ids_and_qrel_pairs(data_root):
    report = assert_rejected(
        data_root,
        lambda d: write(d, queries=(("q0", "a"), ("q1", "b"), ("q1", "c")),
                        qrels=(("q0", "p0", 1), ("q1", "p1", 1), ("q1", "p1", 2))),
        "duplicate query_id", "(query_id, page_id) pairs are unique")
    assert {r.table for r in report.failures} == {"queries", "qrels"}


def test_empty_dataset(data_root):
    assert_rejected(data_root, lambda d: write(d, pages=[], queries=(), qrels=()), "corpus is not empty")


def test_negative_relevance_and_empty_query_text(data_root):
    assert_rejected(data_root, lambda d: write(d, queries=(("q0", "a"), ("q1", "")),
                                               qrels=(("q0", "p0", -1), ("q1", "p1", 1))),
                    "relevance is >= 0", "query text is not empty")


def test_duplicate_content_is_flagged_not_fatal(tmp_path, caplog):
    img = Image.new("RGB", (48, 64), "white")
    write(tmp_path / "d", pages=[("p0", img, "same"), ("p1", img, "same"), ("p2", img, "other")])
    report = validate_dataset_dir(tmp_path / "d")
    assert report.success
    [w] = report.warnings
    assert "duplicate page content" in w.check and w.ids == ["p0", "p1"]
    assert "duplicate page content" in caplog.text
