"""The dataset's pages as the service shows them: document, page number, title, snippet, the rendered image.

Looked up by page id in the corpus table only: a client never names a file.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNIPPET_CHARS = 200


def snippet(text: str | None, query: str = "", width: int = SNIPPET_CHARS) -> str:
    """Up to ``width`` characters of ``text`` around the first word of ``query`` it contains (else its start).

    >>> snippet("Intro.\\nTo install R packages use install.packages().", "install packages", 30)
    '...R packages use...'
    >>> snippet(None, "x")
    ''
    """
    flat = " ".join((text or "").split())
    if not flat:
        return ""
    at = 0
    for word in sorted(set(re.findall(r"\w{3,}", query.lower())), key=len, reverse=True):
        i = flat.lower().find(word)
        if i >= 0:
            at = i
            break
    start = max(0, at - width // 4)
    if start:                                       # start on a word boundary
        sp = flat.find(" ", start)
        start = sp + 1 if 0 <= sp < at else start
    end = start + width
    if end < len(flat):
        sp = flat.rfind(" ", start, end)
        end = sp if sp > at else end
    return ("..." if start else "") + flat[start:end].strip() + ("..." if end < len(flat) else "")


@dataclass(frozen=True)
class PageRecord:
    page_id: str
    document: str
    page_number: int | None
    title: str
    text: str
    content_hash: str
    image: Path | None               # resolved from the corpus table, inside the dataset folder


class Catalog:
    """The workspace dataset's corpus by page id (reloaded when a version built on other data serves)."""

    def __init__(self, ws):
        self.ws = ws
        self._lock = threading.Lock()
        self._by_id: dict[str, PageRecord] = {}
        self.data_version: str | None = None
        self._stamp: int | None = None
        self.reload()

    def _manifest_stamp(self) -> int | None:
        try:
            return (self.ws.dataset_dir / "manifest.json").stat().st_mtime_ns
        except OSError:
            return None

    def reload(self) -> None:
        from anchorprune.data.schema import load_dataset_dir
        from anchorprune.orchestration.summary import first_line

        self._stamp = self._manifest_stamp()
        ds = load_dataset_dir(self.ws.dataset_dir)
        root = Path(ds.path).resolve()
        by_id = {}
        for rec in ds.corpus.to_dict("records"):
            img = rec.get("image_path")
            path = (root / str(img)).resolve() if img else None
            if path is not None and root not in path.parents:     # a corpus row pointing outside its dataset
                path = None
            pn = rec.get("page_number")
            by_id[str(rec["page_id"])] = PageRecord(
                str(rec["page_id"]), str(rec.get("source_doc") or "?"), int(pn) if pn is not None else None,
                first_line(rec.get("text")), str(rec.get("text") or ""),
                str(rec.get("content_hash") or ""), path)
        with self._lock:
            self._by_id = by_id
            self.data_version = ds.manifest.get("content_hash") or ds.manifest.get("revision")

    def get(self, page_id: str) -> PageRecord | None:
        return self._by_id.get(page_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def ensure(self, page_ids: list[str]) -> None:
        """Reload when a hit names a page this catalog does not know and the dataset changed on disk since it
        loaded (a version built on new data now serves); pages the dataset does not have are shown as such."""
        if any(p not in self._by_id for p in page_ids) and self._manifest_stamp() != self._stamp:
            self.reload()

    def describe(self, page_id: str) -> dict[str, Any]:
        r = self.get(page_id)
        if r is None:
            return {"page_id": page_id, "document": "?", "page_number": None, "title": "(not in the dataset)"}
        return {"page_id": r.page_id, "document": r.document, "page_number": r.page_number, "title": r.title,
                "has_image": bool(r.image and r.image.is_file())}

    def image(self, page_id: str) -> tuple[bytes, str] | None:
        r = self.get(page_id)
        if r is None or r.image is None or not r.image.is_file():
            return None
        media = mimetypes.guess_type(r.image.name)[0] or "application/octet-stream"
        return r.image.read_bytes(), media
