"""The Debian scale benchmark corpus: every page of four packages, outline titles as weak-label queries.

The builder runs on tiny stand-in package folders written here (the real packages are downloaded
by ``benchmarks/debian_bench.py``, not by the tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pdf_fixtures import make_pdf

from anchorprune.config import load_settings
from anchorprune.data.build import build_dataset
from anchorprune.data.debian_bench import PACKAGES, bench_doc_id, build_debian_bench_dataset, list_bench_pdfs
from anchorprune.data.schema import load_dataset_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def roots(tmp_path):
    out = {}
    for package in PACKAGES:
        d = tmp_path / package
        (d / "sub").mkdir(parents=True)
        out[package] = d
    r = out["r-doc-pdf"]
    (r / "fullrefman.pdf").write_bytes(make_pdf([["Reference", "abs"], ["abs returns"]], [("abs", 1)]))
    (r / "refman.pdf").write_bytes(make_pdf([["Reference", "abs"], ["abs returns"]], [("abs", 1)]))
    (out["gnuplot-doc"] / "gnuplot.pdf").write_bytes(make_pdf([["Plotting"], ["Introduction", "set term"]],
                                                              [("Introduction", 1)]))
    (out["octave-doc"] / "octave.pdf").write_bytes(make_pdf([["Octave"], ["Introduction", "matrices"]],
                                                            [("Introduction", 1)]))
    (out["octave-doc"] / "empty.pdf").write_bytes(b"")                 # Debian's zero-byte placeholders
    tex = out["texlive-latex-recommended-doc"]
    (tex / "sub" / "caption.pdf").write_bytes(make_pdf([["Captions", "Options here"]]))   # no outline
    (tex / "caption.pdf").write_bytes(make_pdf([["Other caption manual"]]))
    return out


def test_lists_every_pdf_but_the_duplicate_refman_and_empty_files(roots):
    found = [(p, str(f.relative_to(r))) for p, r, f in list_bench_pdfs(roots)]
    assert ("r-doc-pdf", "refman.pdf") not in found and ("octave-doc", "empty.pdf") not in found
    assert ("r-doc-pdf", "fullrefman.pdf") in found
    assert ("texlive-latex-recommended-doc", "sub/caption.pdf") in found
    assert len(found) == 5


def test_doc_ids_unique_across_packages_and_folders():
    assert bench_doc_id("octave-doc", Path("octave.pdf")) == "octave-octave"
    assert bench_doc_id("texlive-latex-recommended-doc", Path("sub/caption.pdf")) != \
        bench_doc_id("texlive-latex-recommended-doc", Path("caption.pdf"))


def test_build_pages_queries_and_recurring_titles(roots, tmp_path):
    manifest = build_debian_bench_dataset(roots, tmp_path / "out", name="bench", dpi=40)
    ds = load_dataset_dir(tmp_path / "out")
    assert manifest["counts"]["pages"] == 2 + 2 + 2 + 1 + 1
    # "Introduction" recurs in two manuals: two queries, each pointing at its own manual's page
    intro = sorted(q for q, t in ds.queries.items() if t == "Introduction")
    assert intro == ["gnuplot-gnuplot:q0001", "octave-octave:q0001"]
    assert ds.qrels["octave-octave:q0001"] == {"octave-octave:p0002": 1}
    # the title is blanked on its target page only (blank_scope target)
    pages = {p.page_id: p for p in ds.pages()}
    assert "Introduction" not in pages["octave-octave:p0002"].text
    assert "matrices" in pages["octave-octave:p0002"].text
    assert manifest["extra"]["skipped"] == {"r-doc-pdf/refman.pdf": "the same manual as fullrefman.pdf "
                                                                    "(Debian ships it twice)"}


def test_benchmark_params_select_the_debian_variant_outside_dvc_data():
    s = load_settings(ROOT / "benchmarks" / "debian-bench.yaml")
    assert s.data.demo_variant == "debian" and s.data.dataset == "debian-bench"
    assert not str(s.paths.data_dir).startswith("data")     # never inside the DVC-tracked data/


def test_data_stage_dispatches_the_debian_variant(roots, tmp_path, monkeypatch):
    import anchorprune.data.debian_bench as bench

    monkeypatch.setattr(bench, "fetch_packages", lambda cache_dir: (roots, {}))
    s = load_settings(ROOT / "params.yaml", overrides={"data": {"demo_variant": "debian", "dataset": "b", "dpi": 40}})
    final, manifest = build_dataset(s, tmp_path)
    assert final == tmp_path / "data" / "b" and manifest["counts"]["pages"] == 8
    assert manifest["source"].startswith("debian:r-doc-pdf,")
