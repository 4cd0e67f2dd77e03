"""The offline demo corpus, built from Debian's ``r-doc-pdf`` (the R manuals as PDFs).

- queries: the 75 natural-language questions of R-FAQ's outline (entries ending in ``?``),
  written by the R FAQ's authors; the relevant page is the one the outline entry points to;
- corpus: every page of R-FAQ, R-admin, R-data and R-intro (291 pages); ``variant="large"``
  adds R-exts, R-ints and R-lang (677 pages);
- every question title is blanked on **every** R-FAQ page (contents pages and cross-references
  too), on the image and in the text layer, so no query can be read off a page verbatim.

The labels come from the document's own structure (heading -> page), not from assessors.

Getting the PDFs needs apt (no root for these two steps once the apt lists exist):
``apt-get download r-doc-pdf`` into ``cache/debs/``, its sha256 checked against
``apt-cache show r-doc-pdf``, then ``dpkg-deb -x``. When the apt lists are missing,
``apt-get update`` is run if we are root; otherwise the error says what to run.
A folder that already holds the PDFs can be given instead (``pdf_dir``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchorprune.data.pdfs import OutlineEntry, add_pdf
from anchorprune.data.schema import DatasetWriter

log = logging.getLogger(__name__)

DEB_PACKAGE = "r-doc-pdf"
MANUAL_DIR = Path("usr/share/R/doc/manual")
QUERY_DOC = "R-FAQ"
VARIANTS: dict[str, tuple[str, ...]] = {
    "small": ("R-FAQ", "R-admin", "R-data", "R-intro"),
    "large": ("R-FAQ", "R-admin", "R-data", "R-intro", "R-exts", "R-ints", "R-lang"),
}
DEFAULT_CACHE = Path("cache/debs")


class DemoAssetsError(RuntimeError):
    """The Debian package with the R manuals could not be fetched, verified or unpacked."""


@dataclass(frozen=True)
class DebInfo:
    path: Path
    version: str
    sha256: str


def is_question(entry: OutlineEntry) -> bool:
    """An outline entry that is a natural-language question.

    >>> is_question(OutlineEntry("What is R?", 6, 1)), is_question(OutlineEntry("Citing R", 11, 1))
    (True, False)
    """
    return entry.title.rstrip().endswith("?")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def apt_sha256(show_output: str, version: str) -> str | None:
    """The SHA256 of ``version`` in ``apt-cache show`` output (several stanzas possible).

    >>> apt_sha256("Package: x\\nVersion: 1.0\\nSHA256: aa\\n\\nPackage: x\\nVersion: 2.0\\nSHA256: bb\\n", "2.0")
    'bb'
    """
    for stanza in re.split(r"\n\s*\n", show_output):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+):\s*(.*)$", stanza, flags=re.M))
        if fields.get("Version") == version and "SHA256" in fields:
            return fields["SHA256"].strip()
    return None


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise DemoAssetsError(f"`{cmd[0]}` is not installed: the demo corpus needs a Debian/Ubuntu system with "
                              "apt, or pass --pdf-dir with the R manuals (R-FAQ.pdf, ...)") from exc


def download_deb(cache_dir: Path, package: str = DEB_PACKAGE) -> DebInfo:
    """``apt-get download`` the package into ``cache_dir`` (reusing a verified copy); sha256-checked."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    show = _run(["apt-cache", "show", package])
    if show.returncode != 0 or "SHA256" not in show.stdout:
        if os.geteuid() == 0:
            log.info("apt lists have no %s: running apt-get update", package)
            upd = _run(["apt-get", "update", "-q"])
            if upd.returncode != 0:
                raise DemoAssetsError(f"`apt-get update` failed: {upd.stderr.strip()[-500:]}")
            show = _run(["apt-cache", "show", package])
        if show.returncode != 0 or "SHA256" not in show.stdout:
            raise DemoAssetsError(f"apt does not know {package}: run `sudo apt-get update` (Debian main), "
                                  "or pass --pdf-dir with the R manuals")
    versions = re.findall(r"^Version:\s*(\S+)", show.stdout, flags=re.M)
    pol = _run(["apt-cache", "policy", package])
    cand = re.search(r"Candidate:\s*(\S+)", pol.stdout)
    version = cand.group(1) if cand and cand.group(1) != "(none)" else versions[0]
    expected = apt_sha256(show.stdout, version)
    if not expected:
        raise DemoAssetsError(f"apt-cache show {package} has no SHA256 for version {version}")
    fname = f"{package}_{version.replace(':', '%3a')}_all.deb"      # apt writes an epoch's ':' as %3a
    deb = cache_dir / fname
    if not (deb.exists() and sha256_file(deb) == expected):
        got = _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=cache_dir)
        if got.returncode != 0 or not deb.exists():
            raise DemoAssetsError(f"`apt-get download {package}={version}` failed in {cache_dir}: "
                                  f"{(got.stderr or got.stdout).strip()[-500:]}")
    actual = sha256_file(deb)
    if actual != expected:
        deb.unlink()
        raise DemoAssetsError(f"{deb} has sha256 {actual}, but apt-cache show says {expected}; "
                              "the download was removed, try again")
    log.info("%s %s verified (sha256 %s)", package, version, expected[:16])
    return DebInfo(path=deb, version=version, sha256=expected)


def extract_manuals(deb: DebInfo, cache_dir: Path) -> Path:
    """``dpkg-deb -x`` into ``cache_dir/<deb stem>/``; returns the folder holding the PDFs."""
    return extract_deb(deb, cache_dir, MANUAL_DIR)


def extract_deb(deb: DebInfo, cache_dir: Path, inner: Path | str = ".") -> Path:
    """``dpkg-deb -x`` into ``cache_dir/<deb stem>/`` (once per verified sha256); returns ``inner`` in it."""
    target = cache_dir / deb.path.stem
    manuals = target / inner
    stamp = target / ".sha256"
    if manuals.is_dir() and stamp.exists() and stamp.read_text().strip() == deb.sha256:
        return manuals
    tmp = cache_dir / f".{deb.path.stem}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    res = _run(["dpkg-deb", "-x", str(deb.path), str(tmp)])
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DemoAssetsError(f"`dpkg-deb -x {deb.path}` failed: {res.stderr.strip()[-500:]}")
    (tmp / ".sha256").write_text(deb.sha256 + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return manuals


def fetch_r_manuals(cache_dir: str | Path = DEFAULT_CACHE) -> tuple[Path, DebInfo]:
    """The folder of R manual PDFs from Debian's r-doc-pdf (downloaded, verified, unpacked, cached)."""
    cache_dir = Path(cache_dir)
    deb = download_deb(cache_dir)
    return extract_manuals(deb, cache_dir), deb


def build_demo_dataset(pdf_dir: str | Path, out_dir: str | Path, *, name: str = "rdocs-demo", dpi: int = 100,
                       variant: str = "small", blank_titles: bool = True, max_pages_per_doc: int | None = None,
                       deb: DebInfo | None = None) -> dict[str, Any]:
    """Write the demo dataset from a folder holding the R manual PDFs; returns the manifest."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    pdf_dir = Path(pdf_dir)
    docs = VARIANTS[variant]
    missing = [d for d in docs if not (pdf_dir / f"{d}.pdf").is_file()]
    if missing:
        raise FileNotFoundError(f"{pdf_dir} lacks {[d + '.pdf' for d in missing]} (from Debian's {DEB_PACKAGE})")
    writer = DatasetWriter(Path(out_dir), grayscale=True)        # black-on-white manuals: a third of RGB's bytes
    per_doc = {}
    for doc in docs:
        queries = doc == QUERY_DOC
        st = add_pdf(writer, pdf_dir / f"{doc}.pdf", dpi=dpi, with_queries=queries,
                     query_filter=is_question if queries else None, blank_titles=blank_titles,
                     blank_scope="document", max_pages=max_pages_per_doc, doc_id=doc)
        per_doc[doc] = {"pages": st.pages, "queries": st.queries, "title_boxes_blanked": st.titles_blanked,
                        "titles_not_found": st.titles_not_found}
    return writer.finish(
        name=name, source=f"debian:{DEB_PACKAGE}",
        revision=deb.version if deb else "local-pdfs",
        extra={"variant": variant, "dpi": dpi, "blank_titles": blank_titles, "documents": per_doc,
               "max_pages_per_doc": max_pages_per_doc,
               "deb": {"file": deb.path.name, "sha256": deb.sha256} if deb else None,
               "labels": "R-FAQ outline questions -> the page each points to (document structure, not assessors)"})


def build_demo(data_root: str | Path, *, name: str = "rdocs-demo", dpi: int = 100, variant: str = "small",
               cache_dir: str | Path = DEFAULT_CACHE, pdf_dir: str | Path | None = None, blank_titles: bool = True,
               max_pages_per_doc: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Fetch the R manuals (unless ``pdf_dir``), build, validate and move into ``data_root/name``.

    Returns (dataset folder, manifest). A failure at any step leaves ``data_root`` unchanged.
    """
    from anchorprune.data.versioning import build_staged

    deb = None
    if pdf_dir is None:
        pdf_dir, deb = fetch_r_manuals(cache_dir)
    return build_staged(data_root, name, lambda staging: build_demo_dataset(
        pdf_dir, staging, name=name, dpi=dpi, variant=variant, blank_titles=blank_titles,
        max_pages_per_doc=max_pages_per_doc, deb=deb))
