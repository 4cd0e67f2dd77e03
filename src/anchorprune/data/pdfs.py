"""A folder of PDFs as a dataset: rendered pages, their text layer, and weak-label queries.

Each page is rendered with ``pypdfium2`` at ``dpi`` (``params.yaml: data.dpi``) and keeps its
text layer. Each outline (bookmark) entry becomes a query ``title -> the page it points to``
(relevance 1); the same title twice in one PDF is one query with several relevant pages.
These labels come from the document's own structure, not from assessors: say so when
reporting numbers on them.

The title is printed on its target page, which makes the query trivially readable off the
page. With ``blank_titles`` its box is painted white on the image and its characters are
dropped from the text (``blank_scope="target"``: on the target page;
``"document"``: on every page of that PDF, e.g. contents pages and cross-references too).

A PDF without an outline still gives its pages, with zero queries and a
:class:`NoOutlineWarning`. A PDF that cannot be opened raises :class:`BrokenPdfError` or
:class:`EncryptedPdfError` naming the file.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anchorprune.data.schema import DatasetWriter

log = logging.getLogger(__name__)

_SKIP_CHARS = {"\ufffe", "\x02", "\u00ad", "\x00"}   # pdfium's hyphenation marks, soft hyphen
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-"})
_PASSWORD_ERROR = 4                                  # FPDF_ERR_PASSWORD


class PdfError(ValueError):
    """A PDF could not be read; ``path`` names it."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


class BrokenPdfError(PdfError):
    """The file is not a readable PDF (truncated, corrupt, not a PDF at all)."""


class EncryptedPdfError(PdfError):
    """The PDF is password-protected."""


class NoOutlineWarning(UserWarning):
    """A PDF has no outline: its pages are kept but it contributes no weak-label queries."""


@dataclass(frozen=True)
class OutlineEntry:
    title: str
    page_index: int          # 0-based target page
    level: int


@dataclass
class PdfStats:
    path: Path
    pages: int = 0
    queries: int = 0
    qrels: int = 0
    titles_blanked: int = 0
    titles_not_found: list[str] = field(default_factory=list)


def open_pdf(path: str | Path, data: bytes | None = None):
    """Open a PDF with pypdfium2, mapping failures to :class:`BrokenPdfError` / :class:`EncryptedPdfError`."""
    import pypdfium2 as pdfium

    path = Path(path)
    try:
        return pdfium.PdfDocument(data if data is not None else path)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == _PASSWORD_ERROR:
            raise EncryptedPdfError(path, "the PDF is encrypted (password-protected); decrypt it first "
                                    "(e.g. `qpdf --decrypt in.pdf out.pdf`) or remove it from the folder") from None
        raise BrokenPdfError(path, f"not a readable PDF ({exc}); repair or remove it") from None
    except OSError as exc:
        raise BrokenPdfError(path, f"cannot read the file ({exc})") from None


def read_outline(pdf) -> list[OutlineEntry]:
    """Outline entries that point to a page of this document, in outline order."""
    n = len(pdf)
    out = []
    for item in pdf.get_toc():
        dest = item.get_dest()
        idx = dest.get_index() if dest is not None else None
        title = " ".join((item.get_title() or "").split())
        if idx is None or not 0 <= idx < n or not title:
            continue
        out.append(OutlineEntry(title=title, page_index=int(idx), level=int(item.level)))
    return out


def _normalise(text: str) -> tuple[str, list[int]]:
    """NFKC, plain quotes, hyphenation marks dropped, whitespace runs as one space; with each char's source index."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch in _SKIP_CHARS:
            continue
        for c in unicodedata.normalize("NFKC", ch).translate(_QUOTES):
            if c.isspace():
                if chars and chars[-1] == " ":
                    continue
                c = " "
            chars.append(c)
            index.append(i)
    return "".join(chars), index


def find_spans(text: str, needle: str) -> list[tuple[int, int]]:
    """(start, count) char spans of ``needle`` in ``text``, insensitive to line breaks and hyphenation marks.

    >>> find_spans("2.1 What is\\r\\nR?\\r\\nsee [What is R?]", "What is R?")
    [(4, 11), (22, 10)]
    """
    norm, index = _normalise(text)
    pat, _ = _normalise(needle)
    pat = pat.strip()
    spans = []
    start = norm.find(pat) if pat else -1
    while start >= 0:
        first, last = index[start], index[start + len(pat) - 1]
        spans.append((first, last - first + 1))
        start = norm.find(pat, start + len(pat))
    return spans


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch not in _SKIP_CHARS)


def render_page(pdf, index: int, dpi: int, blank: Iterable[str] = (), pad_px: int = 2) -> tuple[Any, str, int, list[str]]:
    """Render page ``index``; blank every occurrence of each string in ``blank`` (image and text).

    Returns (PIL image, text layer, number of boxes blanked, strings not found on the page).
    """
    from PIL import ImageDraw

    page = pdf[index]
    try:
        scale = dpi / 72.0
        image = page.render(scale=scale).to_pil().convert("RGB")
        textpage = page.get_textpage()
        text = textpage.get_text_range()
        spans: list[tuple[int, int]] = []
        missing: list[str] = []
        if blank:
            if len(text) != textpage.count_chars():     # indices would not line up with char boxes
                log.warning("page %d: text layer length differs from its char count; titles not blanked", index)
                missing = list(blank)
            else:
                for s in blank:
                    found = find_spans(text, s)
                    spans += found
                    if not found:
                        missing.append(s)
        if spans:
            left, bottom, right, top = page.get_cropbox()
            draw = ImageDraw.Draw(image)
            for start, count in spans:
                for r in range(textpage.count_rects(start, count)):
                    x0, y0, x1, y1 = textpage.get_rect(r)
                    draw.rectangle([(x0 - left) * scale - pad_px, (top - y1) * scale - pad_px,
                                    (x1 - left) * scale + pad_px, (top - y0) * scale + pad_px], fill="white")
            drop = set()
            for start, count in spans:
                drop.update(range(start, start + count))
            text = "".join(ch for i, ch in enumerate(text) if i not in drop)
        textpage.close()
        return image, _clean_text(text), len(spans), missing
    finally:
        page.close()


def _doc_id(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)


def document_ids(paths: Sequence[Path], root: Path | None = None) -> dict[Path, str]:
    """A document id per PDF, unique within the dataset.

    The id is the file's stem with spaces and punctuation replaced by ``_``; names that collide that way
    (``a b.pdf`` and ``a_b.pdf``, or ``x/a.pdf`` and ``y/a.pdf``) each get ``-<6 hex of their path>``,
    so every id stays stable whatever else is in the folder.

    >>> ids = document_ids([Path("a b.pdf"), Path("a_b.pdf"), Path("c.pdf")])
    >>> ids[Path("c.pdf")], ids[Path("a b.pdf")] != ids[Path("a_b.pdf")], ids[Path("a b.pdf")].startswith("a_b-")
    ('c', True, True)
    """
    import hashlib

    plain = {p: _doc_id(p) for p in paths}
    counts: dict[str, int] = {}
    for doc in plain.values():
        counts[doc] = counts.get(doc, 0) + 1
    out = {}
    for p, doc in plain.items():
        if counts[doc] > 1:
            rel = p.relative_to(root) if root is not None and p.is_relative_to(root) else Path(p.name)
            doc = f"{doc}-{hashlib.sha256(rel.as_posix().encode()).hexdigest()[:6]}"
        out[p] = doc
    return out


def page_id(doc_id: str, page_number: int) -> str:
    return f"{doc_id}:p{page_number:04d}"


def add_pdf(writer: DatasetWriter, path: str | Path, *, dpi: int, blank_titles: bool = True,
            blank_scope: str = "target", query_filter: Callable[[OutlineEntry], bool] | None = None,
            query_text: Callable[[str], str] | None = None, with_queries: bool = True,
            max_pages: int | None = None, doc_id: str | None = None) -> PdfStats:
    """Render one PDF into ``writer``: its pages, and (``with_queries``) its outline as queries."""
    from tqdm import tqdm

    if blank_scope not in ("target", "document"):
        raise ValueError(f"blank_scope must be 'target' or 'document', got {blank_scope!r}")
    path = Path(path)
    doc = doc_id or _doc_id(path)
    pdf = open_pdf(path)
    stats = PdfStats(path=path)
    try:
        n_pages = len(pdf) if max_pages is None else min(len(pdf), max_pages)
        if n_pages == 0:
            raise BrokenPdfError(path, "the PDF has no pages")
        entries = read_outline(pdf) if with_queries else []
        if with_queries and not entries:
            msg = f"{path} has no outline (bookmarks): its {n_pages} pages are kept, with no weak-label queries"
            warnings.warn(msg, NoOutlineWarning, stacklevel=2)
            log.warning(msg)
        if query_filter is not None:
            entries = [e for e in entries if query_filter(e)]
        entries = [e for e in entries if e.page_index < n_pages]
        # one query per distinct title; its relevant pages are every page an entry with that title targets
        targets: dict[str, list[int]] = {}
        for e in entries:
            pages_for = targets.setdefault(e.title, [])
            if e.page_index not in pages_for:
                pages_for.append(e.page_index)
        blank_on: dict[int, list[str]] = {}
        if blank_titles:
            for title, idxs in targets.items():
                for i in (range(n_pages) if blank_scope == "document" else idxs):
                    blank_on.setdefault(i, []).append(title)
        found_any: set[str] = set()
        for i in tqdm(range(n_pages), desc=f"render {path.name}", unit="page", leave=False, disable=n_pages < 20):
            try:
                image, text, n_blanked, missing = render_page(pdf, i, dpi, blank_on.get(i, ()))
            except Exception as exc:  # noqa: BLE001 - pdfium fails per page with several types
                raise BrokenPdfError(path, f"page {i + 1} cannot be rendered ({exc})") from exc
            stats.titles_blanked += n_blanked
            found_any.update(t for t in blank_on.get(i, ()) if t not in missing)
            writer.add_page(page_id(doc, i + 1), image, text=text, source_doc=path.name, page_number=i + 1)
            stats.pages += 1
        if blank_titles:
            stats.titles_not_found = sorted(set(targets) - found_any)
            if stats.titles_not_found:
                log.warning("%s: %d outline titles not found in the text layer (left on the image): %s",
                            path.name, len(stats.titles_not_found), stats.titles_not_found[:5])
        for k, (title, idxs) in enumerate(targets.items(), 1):
            qid = f"{doc}:q{k:04d}"
            writer.add_query(qid, query_text(title) if query_text else title)
            for i in idxs:
                writer.add_qrel(qid, page_id(doc, i + 1), 1)
                stats.qrels += 1
            stats.queries += 1
    finally:
        pdf.close()
    log.info("%s: %d pages, %d queries, %d title boxes blanked", path.name, stats.pages, stats.queries,
             stats.titles_blanked)
    return stats


def list_pdfs(pdf_dir: str | Path) -> list[Path]:
    pdf_dir = Path(pdf_dir)
    if not pdf_dir.is_dir():
        raise FileNotFoundError(f"PDF folder {pdf_dir} does not exist")
    pdfs = sorted(p for p in pdf_dir.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())
    if not pdfs:
        raise FileNotFoundError(f"no .pdf files under {pdf_dir}")
    return pdfs


class SkippedPdfWarning(UserWarning):
    """An unreadable PDF in a folder was skipped (``data.strict_pdfs: false``)."""


def build_pdf_dataset(pdfs: str | Path | Sequence[str | Path], out_dir: str | Path, *, name: str, dpi: int,
                      blank_titles: bool = True, limit: int | None = None,
                      image_format: str = "png", strict: bool = False) -> dict[str, Any]:
    """Write a dataset from a folder (or list) of PDFs into ``out_dir`` (a staging folder); returns the manifest.

    Every PDF is opened first, before any page is rendered. A broken or encrypted one is skipped with a
    :class:`SkippedPdfWarning` naming it, and listed in ``manifest.json: extra.skipped``; with
    ``strict`` (``data.strict_pdfs: true``) it stops the build instead, as does a folder where no PDF
    can be read. ``limit`` caps the number of pages (whole PDFs in order, the last one cut).
    Document ids are unique (:func:`document_ids`).
    """
    root = Path(pdfs) if isinstance(pdfs, str | Path) else None
    paths = list_pdfs(pdfs) if isinstance(pdfs, str | Path) else [Path(p) for p in pdfs]
    skipped: list[dict[str, str]] = []
    readable = []
    for p in paths:                      # fail fast (or skip), naming the file, before rendering anything
        try:
            open_pdf(p).close()
        except PdfError as exc:
            if strict:
                raise
            msg = f"skipping {p}: {str(exc).removeprefix(f'{p}: ')} (data.strict_pdfs: true stops the build instead)"
            warnings.warn(msg, SkippedPdfWarning, stacklevel=2)
            log.warning(msg)
            skipped.append({"file": p.name, "reason": type(exc).__name__ + ": " + str(exc).removeprefix(f"{p}: ")})
            continue
        readable.append(p)
    if not readable:
        raise BrokenPdfError(root or paths[0], f"none of the {len(paths)} PDFs can be read: "
                                               + "; ".join(f"{s['file']} ({s['reason']})" for s in skipped))
    ids = document_ids(readable, root)
    writer = DatasetWriter(Path(out_dir), image_format=image_format)
    stats = []
    for p in readable:
        left = None if limit is None else limit - writer.num_pages
        if left is not None and left <= 0:
            break
        stats.append(add_pdf(writer, p, dpi=dpi, blank_titles=blank_titles, max_pages=left, doc_id=ids[p]))
    return writer.finish(
        name=name, source="pdfs", revision="local",
        extra={"dpi": dpi, "blank_titles": blank_titles, "limit": limit,
               "pdf_dir": str(Path(pdfs).resolve()) if isinstance(pdfs, str | Path) else None,
               "documents": [{"file": s.path.name, "id": ids[s.path], "pages": s.pages, "queries": s.queries,
                              "titles_not_found": len(s.titles_not_found)} for s in stats],
               "skipped": skipped, "skipped_count": len(skipped),
               "labels": "weak: PDF outline title -> target page"})
