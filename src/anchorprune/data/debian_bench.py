"""The scale benchmark corpus: every page of four Debian documentation packages (~10.7k pages).

``r-doc-pdf`` (the R manuals and the full reference manual), ``gnuplot-doc``, ``octave-doc`` and
``texlive-latex-recommended-doc`` (about 150 LaTeX package manuals), each downloaded with
``apt-get download``, sha256-checked against ``apt-cache show`` and unpacked like the demo's
package (:mod:`anchorprune.data.demo`). Every PDF page is a corpus page; every outline (bookmark)
entry is a weak-label query ``title -> the page it points to``, its title blanked on that page
(:func:`anchorprune.data.pdfs.add_pdf`). These labels come from the documents' structure, not
from assessors; many titles ("Introduction", "Options") recur across manuals, so the queries are
ambiguous by construction: use them for first-stage recall against exact MaxSim and for relative
comparisons, not as an absolute quality figure.

It is a benchmark corpus, not the demo: ``data.demo_variant: debian`` builds it through the usual
staged, validated data path (``benchmarks/debian-bench.yaml`` points it outside the DVC-tracked
``data/``).

``refman.pdf`` is skipped: Debian ships the same R reference manual twice (``refman.pdf`` and
``fullrefman.pdf``: same size, same 2,415 pages; only the PDF's id differs), and a corpus with
2,415 exact duplicate pages would make every exact top-10 a tie.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anchorprune.data.demo import DebInfo, download_deb, extract_deb
from anchorprune.data.pdfs import NoOutlineWarning, add_pdf, open_pdf
from anchorprune.data.schema import DatasetWriter

log = logging.getLogger(__name__)

PACKAGES: dict[str, str] = {          # package -> folder of its PDFs inside the .deb
    "r-doc-pdf": "usr/share/R/doc/manual",
    "gnuplot-doc": "usr/share/doc/gnuplot",
    "octave-doc": "usr/share/doc/octave",
    "texlive-latex-recommended-doc": "usr/share/doc/texlive-doc",
}
SHORT = {"r-doc-pdf": "r", "gnuplot-doc": "gnuplot", "octave-doc": "octave", "texlive-latex-recommended-doc": "tex"}
SKIP = {("r-doc-pdf", "refman.pdf"): "the same manual as fullrefman.pdf (Debian ships it twice)"}


def bench_doc_id(package: str, rel: Path) -> str:
    """A document id unique across packages: ``<short package>-<path inside its folder>``.

    >>> bench_doc_id("texlive-latex-recommended-doc", Path("latex/caption/caption.pdf"))
    'tex-latex_caption_caption'
    """
    stem = "_".join(rel.with_suffix("").parts)
    return f"{SHORT[package]}-{stem}"


def list_bench_pdfs(roots: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """(package, folder, pdf) for every regular, non-empty PDF in each package folder, sorted, skips applied."""
    out = []
    for package, root in roots.items():
        for pdf in sorted(root.rglob("*.pdf")):
            rel = pdf.relative_to(root)
            if pdf.is_symlink() or not pdf.is_file() or pdf.stat().st_size == 0:
                continue
            if (package, str(rel)) in SKIP:
                log.info("skipping %s/%s: %s", package, rel, SKIP[(package, str(rel))])
                continue
            out.append((package, root, pdf))
    return out


def fetch_packages(cache_dir: str | Path) -> tuple[dict[str, Path], dict[str, DebInfo]]:
    """Download, verify and unpack the four packages; returns their PDF folders and .deb infos."""
    cache_dir = Path(cache_dir)
    roots, debs = {}, {}
    for package, inner in PACKAGES.items():
        deb = download_deb(cache_dir, package)
        roots[package] = extract_deb(deb, cache_dir, inner)
        debs[package] = deb
    return roots, debs


def build_debian_bench_dataset(roots: dict[str, Path], out_dir: str | Path, *, name: str, dpi: int,
                               blank_titles: bool = True, max_pages_per_doc: int | None = None,
                               debs: dict[str, DebInfo] | None = None) -> dict[str, Any]:
    """Write the benchmark corpus from the unpacked package folders; returns the manifest."""
    import warnings

    from tqdm.auto import tqdm

    pdfs = list_bench_pdfs(roots)
    ids: dict[str, Path] = {}
    for package, root, pdf in pdfs:                   # fail before rendering: unreadable PDF or id clash
        open_pdf(pdf).close()
        doc = bench_doc_id(package, pdf.relative_to(root))
        if doc in ids:
            raise ValueError(f"document id {doc!r} is shared by {ids[doc]} and {pdf}")
        ids[doc] = pdf
    writer = DatasetWriter(Path(out_dir), grayscale=True)
    per_doc: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoOutlineWarning)   # logged by add_pdf; many small examples have none
        for package, root, pdf in tqdm(pdfs, desc="debian bench corpus", unit="pdf"):
            doc = bench_doc_id(package, pdf.relative_to(root))
            st = add_pdf(writer, pdf, dpi=dpi, blank_titles=blank_titles, blank_scope="target",
                         max_pages=max_pages_per_doc, doc_id=doc)
            per_doc[doc] = {"package": package, "file": str(pdf.relative_to(root)), "pages": st.pages,
                            "queries": st.queries, "titles_not_found": len(st.titles_not_found)}
    return writer.finish(
        name=name, source="debian:" + ",".join(PACKAGES), revision=",".join(
            f"{p}={d.version}" for p, d in (debs or {}).items()) or "local-pdfs",
        extra={"variant": "debian", "dpi": dpi, "blank_titles": blank_titles, "documents": per_doc,
               "max_pages_per_doc": max_pages_per_doc, "skipped": {f"{p}/{f}": why for (p, f), why in SKIP.items()},
               "debs": {p: {"file": d.path.name, "sha256": d.sha256} for p, d in (debs or {}).items()},
               "labels": "weak: every PDF outline title -> its target page (document structure, not assessors); "
                         "titles recur across manuals"})


def build_debian_bench(data_root: str | Path, *, name: str = "debian-bench", dpi: int = 100,
                       cache_dir: str | Path = "cache/debs", blank_titles: bool = True,
                       max_pages_per_doc: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Fetch the four packages, build, validate and move into ``data_root/name`` (unchanged on failure)."""
    from anchorprune.data.versioning import build_staged

    roots, debs = fetch_packages(cache_dir)
    return build_staged(data_root, name, lambda staging: build_debian_bench_dataset(
        roots, staging, name=name, dpi=dpi, blank_titles=blank_titles, max_pages_per_doc=max_pages_per_doc,
        debs=debs))
