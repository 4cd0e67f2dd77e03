"""The Debian demo corpus: R-FAQ questions as queries, other manuals as distractors, titles stripped.

The builder runs on tiny stand-in manuals written here; the real r-doc-pdf build runs (on the
first pages only, marked slow) when apt knows the package or the .deb is already cached.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pdf_fixtures import make_pdf, tree_digest
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.data.demo import VARIANTS, DemoAssetsError, apt_sha256, build_demo, download_deb
from anchorprune.data.schema import load_dataset_dir
from anchorprune.data.versioning import data_version

FAQ_PAGES = [
    ["Table of Contents", "1 What is R? ..... 2", "2 Citing R ..... 2", "3 Why is R named R? ..... 3"],
    ["Introduction", "This FAQ answers questions."],
    ["What is R?", "R is a system for statistical computation.", "See Why is R named R? later."],
    ["Why is R named R?", "Partly after the first names of its authors."],
]
FAQ_OUTLINE = [("Introduction", 1), ("What is R?", 2), ("Citing R", 2), ("Why is R named R?", 3)]


@pytest.fixture
def manuals(tmp_path):
    d = tmp_path / "manuals"
    d.mkdir()
    (d / "R-FAQ.pdf").write_bytes(make_pdf(FAQ_PAGES, FAQ_OUTLINE))
    for doc in VARIANTS["large"][1:]:
        (d / f"{doc}.pdf").write_bytes(make_pdf([[f"{doc} manual"], ["What is R? is also asked here."]],
                                                [("Is this a question?", 1)]))
    return d


def test_demo_queries_pages_and_title_stripping(manuals, tmp_path):
    final, manifest = build_demo(tmp_path / "data", pdf_dir=manuals, dpi=50)
    ds = load_dataset_dir(final)
    assert manifest["counts"] == {"pages": 4 + 3 * 2, "queries": 2, "qrels": 2}
    # only R-FAQ's questions are queries, pointing at their outline target
    assert sorted(ds.queries.values()) == ["What is R?", "Why is R named R?"]
    by_text = {t: q for q, t in ds.queries.items()}
    assert ds.qrels[by_text["What is R?"]] == {"R-FAQ:p0003": 1}
    assert ds.qrels[by_text["Why is R named R?"]] == {"R-FAQ:p0004": 1}
    # every question title is gone from every R-FAQ page, contents page included; the rest stays
    faq = [p for p in ds.pages() if p.meta["source_doc"] == "R-FAQ.pdf"]
    assert len(faq) == 4 and all(p.text for p in faq)
    assert not any("What is R?" in p.text or "Why is R named R?" in p.text for p in faq)
    assert "Citing R" in faq[0].text and "R is a system" in faq[2].text
    assert manifest["extra"]["documents"]["R-FAQ"]["titles_not_found"] == []
    # distractor manuals are left as they are (their text keeps the phrase)
    admin = [p for p in ds.pages() if p.meta["source_doc"] == "R-admin.pdf"]
    assert "What is R?" in admin[1].text
    assert {p.image.mode for p in ds.pages()} == {"L"}
    assert manifest["source"] == "debian:r-doc-pdf" and manifest["revision"] == "local-pdfs"


def test_large_variant_adds_three_manuals(manuals, tmp_path):
    _, manifest = build_demo(tmp_path / "data", pdf_dir=manuals, dpi=36, variant="large")
    assert manifest["counts"]["pages"] == 4 + 6 * 2
    assert sorted(manifest["extra"]["documents"]) == sorted(VARIANTS["large"])


def test_missing_manual_is_named_and_data_unchanged(manuals, tmp_path):
    build_demo(tmp_path / "data", pdf_dir=manuals, dpi=36)
    before = tree_digest(tmp_path / "data")
    (manuals / "R-data.pdf").unlink()
    with pytest.raises(FileNotFoundError, match=r"R-data\.pdf"):
        build_demo(tmp_path / "data", pdf_dir=manuals, dpi=36)
    assert tree_digest(tmp_path / "data") == before


def test_faq_without_questions_builds_with_a_warning(manuals, tmp_path, caplog):
    (manuals / "R-FAQ.pdf").write_bytes(make_pdf([["Nothing asked"]], [("Introduction", 0)]))
    (manuals / "R-admin.pdf").write_bytes(make_pdf([["Nothing asked"]]))   # same content as R-FAQ's page
    _, manifest = build_demo(tmp_path / "data", pdf_dir=manuals, dpi=36)
    assert manifest["counts"]["queries"] == 0                      # warned, not failed
    assert "there are queries" in caplog.text and "duplicate page content" in caplog.text


def test_cli_build_demo_validate_add_version(manuals, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shutil.copy("params.yaml", repo / "params.yaml")
    monkeypatch.chdir(repo)
    runner = CliRunner()
    r = runner.invoke(app, ["data", "build-demo", "--pdf-dir", str(manuals)])
    assert r.exit_code == 0, r.output
    assert "10 pages, 2 queries" in r.output
    r = runner.invoke(app, ["data", "validate"])
    assert r.exit_code == 0 and "0 failed" in r.output
    assert runner.invoke(app, ["data", "version"]).output.strip() == "untracked"
    r = runner.invoke(app, ["data", "add"])
    assert r.exit_code == 0, r.output
    assert data_version(repo) in r.output
    assert runner.invoke(app, ["data", "version"]).output.strip() == data_version(repo)
    # a bad rebuild through the CLI: named error, exit 1, data/ unchanged
    before = tree_digest(repo / "data")
    (manuals / "R-intro.pdf").write_bytes(b"%PDF-1.4 broken")
    r = runner.invoke(app, ["data", "build-demo", "--pdf-dir", str(manuals)])
    assert r.exit_code == 1 and "R-intro.pdf" in r.output
    assert tree_digest(repo / "data") == before


def test_apt_sha256_picks_the_version():
    out = "Package: r-doc-pdf\nVersion: 4.2.2-1\nSHA256: 11\n\nPackage: r-doc-pdf\nVersion: 4.2.2-2\nSHA256: 22\n"
    assert apt_sha256(out, "4.2.2-2") == "22" and apt_sha256(out, "9") is None


def _apt_knows_r_doc_pdf() -> bool:
    try:
        out = subprocess.run(["apt-cache", "show", "r-doc-pdf"], capture_output=True, text=True)
    except FileNotFoundError:
        return False
    return out.returncode == 0 and "SHA256" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not _apt_knows_r_doc_pdf(), reason="needs apt lists with r-doc-pdf (run apt-get update)")
def test_real_r_doc_pdf_first_pages(tmp_path):
    """Download (or reuse cache/debs), verify sha256, unpack, build on the first 8 pages of each manual."""
    from pathlib import Path

    cache = Path("cache/debs") if Path("cache/debs").is_dir() else tmp_path / "debs"
    deb = download_deb(cache)
    assert deb.path.exists() and len(deb.sha256) == 64
    final, manifest = build_demo(tmp_path / "data", cache_dir=cache, dpi=50, max_pages_per_doc=8)
    assert manifest["counts"]["pages"] == 32
    assert manifest["extra"]["deb"]["sha256"] == deb.sha256
    ds = load_dataset_dir(final)
    assert ds.queries and all(t.endswith("?") for t in ds.queries.values())
    faq = [p for p in ds.pages() if p.meta["source_doc"] == "R-FAQ.pdf"]
    assert not any(t in p.text for p in faq for t in ds.queries.values())


def test_tampered_deb_is_rejected(tmp_path, monkeypatch):
    import anchorprune.data.demo as demo

    show = "Package: r-doc-pdf\nVersion: 1.0-1\nSHA256: " + "0" * 64 + "\n"

    def fake_run(cmd, cwd=None):
        if cmd[:2] == ["apt-cache", "show"]:
            return subprocess.CompletedProcess(cmd, 0, show, "")
        if cmd[:2] == ["apt-cache", "policy"]:
            return subprocess.CompletedProcess(cmd, 0, "Candidate: 1.0-1\n", "")
        (cwd / "r-doc-pdf_1.0-1_all.deb").write_bytes(b"not the package")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(demo, "_run", fake_run)
    with pytest.raises(DemoAssetsError, match="sha256"):
        download_deb(tmp_path)
    assert not (tmp_path / "r-doc-pdf_1.0-1_all.deb").exists()
