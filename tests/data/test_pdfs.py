"""A folder of PDFs -> dataset: rendering, text layer, outline queries, title blanking, bad PDFs."""

from __future__ import annotations

import numpy as np
import pytest
from pdf_fixtures import make_pdf, tree_digest

from anchorprune.data.pdfs import (
    BrokenPdfError,
    EncryptedPdfError,
    NoOutlineWarning,
    add_pdf,
    build_pdf_dataset,
    find_spans,
    open_pdf,
)
from anchorprune.data.schema import DatasetWriter, load_dataset_dir
from anchorprune.data.validation import validate_dataset_dir
from anchorprune.data.versioning import build_staged

FAQ = [["What is R?", "R is a language for statistics.", "See also What is S? below."],
       ["What is S?", "S is an older language.", "It came from Bell Labs."],
       ["Appendix", "Nothing to ask here."]]
OUTLINE = [("What is R?", 0), ("What is S?", 1)]


@pytest.fixture
def pdf_dir(tmp_path):
    d = tmp_path / "pdfs"
    d.mkdir()
    (d / "faq.pdf").write_bytes(make_pdf(FAQ, OUTLINE))
    return d


def _dark(img):
    return int((np.asarray(img.convert("L")) < 128).sum())


def test_pages_text_and_outline_queries(pdf_dir, tmp_path):
    manifest = build_pdf_dataset(pdf_dir, tmp_path / "out", name="faq", dpi=72, blank_titles=False)
    ds = load_dataset_dir(tmp_path / "out")
    assert manifest["counts"] == {"pages": 3, "queries": 2, "qrels": 2}
    pages = list(ds.pages())
    assert [p.page_id for p in pages] == ["faq:p0001", "faq:p0002", "faq:p0003"]
    assert pages[0].image.size == (612, 792)                  # letter at 72 dpi
    assert "R is a language for statistics." in pages[0].text
    assert sorted(ds.queries.values()) == ["What is R?", "What is S?"]
    by_text = {t: q for q, t in ds.queries.items()}
    assert ds.qrels[by_text["What is S?"]] == {"faq:p0002": 1}
    validate_dataset_dir(tmp_path / "out")


def test_dpi_scales_the_render(pdf_dir, tmp_path):
    build_pdf_dataset(pdf_dir, tmp_path / "out", name="faq", dpi=144, blank_titles=False)
    assert next(load_dataset_dir(tmp_path / "out").pages()).image.size == (1224, 1584)


def test_blanking_removes_the_title_from_image_and_text(pdf_dir, tmp_path):
    build_pdf_dataset(pdf_dir, tmp_path / "plain", name="faq", dpi=72, blank_titles=False)
    build_pdf_dataset(pdf_dir, tmp_path / "blank", name="faq", dpi=72, blank_titles=True)
    plain = list(load_dataset_dir(tmp_path / "plain").pages())
    blank = list(load_dataset_dir(tmp_path / "blank").pages())
    # target page of "What is R?": heading gone from text and image; the body stays
    assert "What is R?" not in blank[0].text and "R is a language" in blank[0].text
    assert _dark(blank[0].image) < _dark(plain[0].image)
    # scope 'target': the cross-reference to "What is S?" on page 1 stays
    assert "What is S?" in blank[0].text
    # the page without a query title is untouched
    assert np.array_equal(np.asarray(blank[2].image), np.asarray(plain[2].image))
    assert blank[0].content_hash != plain[0].content_hash


def test_document_scope_blanks_every_occurrence(pdf_dir, tmp_path):
    w = DatasetWriter(tmp_path / "out")
    stats = add_pdf(w, pdf_dir / "faq.pdf", dpi=72, blank_scope="document")
    w.finish(name="faq", source="test", revision="0")
    texts = [p.text for p in load_dataset_dir(tmp_path / "out").pages()]
    assert not any("What is S?" in t or "What is R?" in t for t in texts)
    assert stats.titles_blanked == 3 and stats.titles_not_found == []


def test_query_filter_and_text(pdf_dir, tmp_path):
    w = DatasetWriter(tmp_path / "out")
    add_pdf(w, pdf_dir / "faq.pdf", dpi=72, query_filter=lambda e: "S" in e.title, query_text=str.lower)
    w.finish(name="faq", source="test", revision="0")
    assert list(load_dataset_dir(tmp_path / "out").queries.values()) == ["what is s?"]


def test_pdf_without_outline_gives_pages_no_queries_and_a_warning(pdf_dir, tmp_path):
    (pdf_dir / "plain.pdf").write_bytes(make_pdf([["Just a page", "no bookmarks"]]))
    with pytest.warns(NoOutlineWarning, match="plain.pdf has no outline"):
        manifest = build_pdf_dataset(pdf_dir, tmp_path / "out", name="x", dpi=72)
    assert manifest["counts"]["pages"] == 4 and manifest["counts"]["queries"] == 2
    assert [d["queries"] for d in manifest["extra"]["documents"]] == [2, 0]
    validate_dataset_dir(tmp_path / "out")


def test_only_outline_less_pdfs_still_build(tmp_path):
    d = tmp_path / "pdfs"
    d.mkdir()
    (d / "plain.pdf").write_bytes(make_pdf([["Just a page"]]))
    with pytest.warns(NoOutlineWarning):
        final, manifest = build_staged(tmp_path / "data", "x",
                                       lambda s: build_pdf_dataset(d, s, name="x", dpi=72))
    assert manifest["counts"] == {"pages": 1, "queries": 0, "qrels": 0}
    report = validate_dataset_dir(final)
    assert any("there are queries" in w.check for w in report.warnings)


def test_limit_caps_pages(pdf_dir, tmp_path):
    (pdf_dir / "zz.pdf").write_bytes(make_pdf(FAQ, OUTLINE))
    m = build_pdf_dataset(pdf_dir, tmp_path / "out", name="x", dpi=72, limit=4)
    assert m["counts"]["pages"] == 4
    # queries whose page was cut are dropped: zz.pdf kept only page 1
    assert m["counts"]["queries"] == 3
    validate_dataset_dir(tmp_path / "out")


@pytest.mark.parametrize("content, error, match", [
    (b"%PDF-1.4\nthis is not really a pdf", BrokenPdfError, "not a readable PDF"),
    (b"", BrokenPdfError, "not a readable PDF"),
    (make_pdf(FAQ, OUTLINE)[:300], BrokenPdfError, "not a readable PDF"),
    (make_pdf(FAQ, OUTLINE, encrypted=True), EncryptedPdfError, "encrypted"),
])
def test_broken_or_encrypted_pdf_is_named_and_data_unchanged(pdf_dir, tmp_path, content, error, match):
    build_staged(tmp_path / "data", "x", lambda s: build_pdf_dataset(pdf_dir, s, name="x", dpi=72))
    before = tree_digest(tmp_path / "data")
    (pdf_dir / "bad.pdf").write_bytes(content)
    with pytest.raises(error, match=match) as info:      # data.strict_pdfs: true
        build_staged(tmp_path / "data", "x", lambda s: build_pdf_dataset(pdf_dir, s, name="x", dpi=72, strict=True))
    assert "bad.pdf" in str(info.value) and info.value.path.name == "bad.pdf"
    assert tree_digest(tmp_path / "data") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pdfs"]


def test_open_pdf_on_a_missing_file(tmp_path):
    with pytest.raises(BrokenPdfError, match="missing.pdf"):
        open_pdf(tmp_path / "missing.pdf")


def test_find_spans_ignores_line_breaks_hyphenation_and_quotes():
    assert find_spans("Why doesn\u2019t R\r\nwork?", "Why doesn't R work?") == [(0, 20)]
    assert find_spans("co\ufffeoperate", "cooperate") == [(0, 10)]
    assert find_spans("nothing here", "What is R?") == []


@pytest.mark.parametrize("content", [b"", make_pdf(FAQ, OUTLINE, encrypted=True)], ids=["broken", "encrypted"])
def test_an_unreadable_pdf_is_skipped_with_a_warning_naming_it_and_counted(pdf_dir, tmp_path, content):
    from anchorprune.data.pdfs import SkippedPdfWarning

    (pdf_dir / "bad.pdf").write_bytes(content)
    with pytest.warns(SkippedPdfWarning, match=r"skipping .*bad\.pdf"):
        final, manifest = build_staged(tmp_path / "data", "x",
                                       lambda s: build_pdf_dataset(pdf_dir, s, name="x", dpi=72))
    assert manifest["extra"]["skipped_count"] == 1 and manifest["extra"]["skipped"][0]["file"] == "bad.pdf"
    assert [d["file"] for d in manifest["extra"]["documents"]] == ["faq.pdf"]
    assert load_dataset_dir(final).manifest["counts"]["pages"] == 3


def test_only_unreadable_pdfs_stop_the_build(tmp_path):
    d = tmp_path / "pdfs"
    d.mkdir()
    (d / "bad.pdf").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(BrokenPdfError, match=r"none of the 1 PDFs can be read: bad\.pdf"):
        build_pdf_dataset(d, tmp_path / "out", name="x", dpi=72)


def test_names_that_differ_in_spaces_or_punctuation_get_distinct_document_ids(tmp_path):
    d = tmp_path / "pdfs"
    d.mkdir()
    (d / "a b.pdf").write_bytes(make_pdf(FAQ, OUTLINE))
    (d / "a_b.pdf").write_bytes(make_pdf(FAQ[:2], OUTLINE))
    final, manifest = build_staged(tmp_path / "data", "x", lambda s: build_pdf_dataset(d, s, name="x", dpi=72))
    ids = {doc["file"]: doc["id"] for doc in manifest["extra"]["documents"]}
    assert len(set(ids.values())) == 2 and all(i.startswith("a_b-") for i in ids.values())
    ds = load_dataset_dir(final)
    assert ds.corpus["page_id"].is_unique and len(ds.corpus) == 5


def test_a_duplicate_page_id_error_names_the_source_files(tmp_path):
    from anchorprune.data.validation import DataValidationError

    w = DatasetWriter(tmp_path / "x")
    w.add_page("a_b:p0001", None, text="one", source_doc="a b.pdf", page_number=1)
    w.add_page("a_b:p0001", None, text="two", source_doc="a_b.pdf", page_number=1)
    w.add_query("q", "one?")
    w.add_qrel("q", "a_b:p0001", 1)
    w.finish(name="x", source="pdfs", revision="local")
    with pytest.raises(DataValidationError, match=r"duplicate page_id.*'a_b:p0001'.*from 'a b\.pdf', 'a_b\.pdf'"):
        validate_dataset_dir(tmp_path / "x")
