"""The page viewer: one static page (``static/viewer.html``, no build step, nothing from a CDN) and the JSON
it draws from: the evaluation grid, and the vectors a method keeps on a page, as boxes on the page image.

What a kept vector is drawn as:

- **text stand-in** (``minilm-text``): the box of the kept token in the PDF's text layer. The token's
  characters come from the tokenizer's offsets into the stored text layer; their boxes from the page of
  the source PDF (pypdfium2 char boxes), found by the corpus's ``source_doc`` under the configured PDF
  folder or the demo's extracted Debian package, and aligned to the stored text (which drops blanked
  titles and hyphenation marks). No PDF found: the kept tokens are shown highlighted in the text instead.
- **image backbones**: the kept patch's cell on the patch grid (rows x columns from the token count).
- **merging methods** (``kept`` is None: they create vectors): the token nearest to each stored vector.

The page's cached features (the features cache, every layer captured) are pruned with
:func:`anchorprune.pruning.build_pruner` for the chosen method and γ, with the champion's window.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MERGING = {"cluster_merge", "hier_pool", "anchor_merge", "anchor_kmeans"}


def _align(stored: str, raw: str) -> list[int]:
    """For each char of ``stored``, its index in ``raw`` (-1: not found), matching greedily in order.

    >>> _align("ab\\ncd", "xa-b\\r\\ncd")
    [1, 3, 4, 6, 7]
    """
    out, j = [], 0
    norm = raw.replace("\r", "\n")
    for ch in stored:
        k = j
        limit = min(len(norm), j + 400)            # a blanked title or a dropped mark is short
        while k < limit and norm[k] != ch:
            k += 1
        if k < limit:
            out.append(k)
            j = k + 1
        else:
            out.append(-1)
    return out


class Overlays:
    """Kept-vector overlays for the pages of a workspace (features cache + pruners), cached per page."""

    def __init__(self, state, catalog):
        self.state, self.catalog = state, catalog
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- grid
    def grid(self) -> dict[str, Any]:
        ev = self.state.ws.settings.evaluate
        p = self.state.current()
        methods = [m for m in ev.methods if m != "eos_adaptive" or p.spec.kappa is not None]
        champion = {"method": p.spec.method, "gamma": p.spec.gamma, "window": p.spec.window}
        if champion["method"] not in methods:
            methods.append(champion["method"])
        gammas = sorted({*ev.gammas, p.spec.gamma}, reverse=True)
        return {"methods": methods, "gammas": gammas, "champion": champion, "backbone": p.spec.backbone.get("kind"),
                "version": p.number}

    # ---------------------------------------------------------------- features and pruning
    def features(self, page_id: str):
        from anchorprune.backbones.base import LayerCapture
        from anchorprune.features.cache import FeaturesCache
        from anchorprune.pages import Page

        rec = self.catalog.get(page_id)
        p = self.state.current()
        backbone = self.state.encoder(p.spec)
        cache = FeaturesCache(self.state.ws.features_dir)
        got = cache.get(backbone, Page(rec.page_id, rec.content_hash, text=rec.text), LayerCapture.all())
        if got is None:                         # not encoded with every layer yet: encode this one page once
            from PIL import Image

            image = Image.open(rec.image).convert("RGB") if rec.image and rec.image.is_file() else None
            with self._lock:
                got = cache.get_or_encode(backbone, [Page(rec.page_id, rec.content_hash, image=image, text=rec.text)],
                                          LayerCapture.all(), progress=False)[0]
        return backbone, got

    def kept(self, page_id: str, method: str, gamma: float) -> dict[str, Any]:
        import torch

        from anchorprune.pruning import build_pruner

        p = self.state.current()
        backbone, feats = self.features(page_id)
        spec = p.spec
        pruner = build_pruner(method, window=spec.window or _default_window(feats), seed=0,
                              kappa=spec.kappa if method == "eos_adaptive" else None)
        pruned = pruner.prune(feats, gamma)
        n = int(feats.embeddings.shape[0])
        if pruned.kept is not None:
            kept = sorted(int(i) for i in pruned.kept)
            how = "kept tokens"
        else:                                   # merged vectors: the token nearest to each
            sims = pruned.vectors.float() @ feats.embeddings.float().T      # [k, N]
            kept = sorted({int(i) for i in torch.argmax(sims, dim=1)})
            how = "token nearest to each merged vector"
        out: dict[str, Any] = {"page_id": page_id, "method": method, "gamma": gamma, "tokens": n,
                               "vectors": int(pruned.vectors.shape[0]), "drawn": len(kept), "how": how}
        if hasattr(backbone, "tokenizer"):
            out.update(self._text_boxes(page_id, backbone, kept, n))
        else:
            rows = int(math.floor(math.sqrt(n))) or 1
            cols = math.ceil(n / rows)
            out.update({"kind": "grid", "rows": rows, "cols": cols,
                        "boxes": [[(i % cols) / cols, (i // cols) / rows, 1 / cols, 1 / rows] for i in kept]})
        return out

    # ---------------------------------------------------------------- text layer boxes
    def _text_boxes(self, page_id: str, backbone, kept: list[int], n: int) -> dict[str, Any]:
        rec = self.catalog.get(page_id)
        enc = backbone.tokenizer(rec.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) != n:
            return {"kind": "text", "boxes": [], "spans": [], "note": f"{len(offsets)} tokens in the text, {n} cached"}
        spans = [list(offsets[i]) for i in kept]
        boxes, note = [], None
        layer = _char_boxes(self._pdf_for(rec.document), rec.page_number, rec.text)
        if layer is None:
            note = "no source PDF found for the text layer: kept tokens shown in the text"
        else:
            for a, b in spans:
                bs = [layer[c] for c in range(a, b) if layer[c] is not None]
                if bs:
                    boxes.append([min(x[0] for x in bs), min(x[1] for x in bs),
                                  max(x[0] + x[2] for x in bs) - min(x[0] for x in bs),
                                  max(x[1] + x[3] for x in bs) - min(x[1] for x in bs)])
        return {"kind": "text", "boxes": boxes, "spans": spans, "text": rec.text, "note": note}

    def _pdf_for(self, document: str) -> Path | None:
        from anchorprune.data.demo import MANUAL_DIR

        ws = self.state.ws
        name = Path(document).name                 # a corpus value, never a client's; no folders in it
        roots = []
        if ws.settings.data.pdf_dir:
            roots.append(ws.path(ws.settings.data.pdf_dir))
        roots += sorted((ws.root / "cache" / "debs").glob(f"*/{MANUAL_DIR}"))
        for r in roots:
            for cand in (r / name, *r.rglob(name)):
                if cand.is_file():
                    return cand
        return None


def _default_window(feats) -> list[int]:
    layers = list(getattr(feats, "layers", []) or [])
    return layers[len(layers) // 2: len(layers) // 2 + 2] or [0]


@functools.lru_cache(maxsize=64)
def _char_boxes(pdf: Path | None, page_number: int | None, stored: str) -> tuple | None:
    """Per char of the stored text layer: its box ``(x, y, w, h)`` as fractions of the page, or None."""
    if pdf is None or page_number is None:
        return None
    from anchorprune.data.pdfs import open_pdf

    doc = open_pdf(pdf)
    try:
        page = doc[page_number - 1]
        left, bottom, right, top = page.get_cropbox()
        w, h = right - left, top - bottom
        tp = page.get_textpage()
        raw = tp.get_text_range()
        where = _align(stored, raw)
        if sum(i >= 0 for i in where) < 0.9 * max(1, len(stored)):
            return None                            # not the text this page was built from
        boxes: list[tuple[float, float, float, float] | None] = []
        for i in where:
            if i < 0 or i >= tp.count_chars():
                boxes.append(None)
                continue
            x0, y0, x1, y1 = tp.get_charbox(i)
            if x1 <= x0 or y1 <= y0:
                boxes.append(None)
                continue
            boxes.append(((x0 - left) / w, (top - y1) / h, (x1 - x0) / w, (y1 - y0) / h))
        tp.close()
        page.close()
        return tuple(boxes)
    finally:
        doc.close()


def mount(app: FastAPI, state, catalog) -> None:
    """``GET /`` (the page), ``GET /viewer/grid`` and ``GET /pages/{page_id}/kept?method=&gamma=``."""
    from anchorprune.serving.errors import ClientError

    overlays = Overlays(state, catalog)
    page_html = (STATIC / "viewer.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(page_html)

    @app.get("/viewer/grid")
    def grid():
        return overlays.grid()

    @app.get("/pages/{page_id}/kept")
    def kept(page_id: str, method: str, gamma: float):
        if catalog.get(page_id) is None:
            raise ClientError(f"unknown page {page_id[:80]!r}", 404)
        g = overlays.grid()
        if method not in g["methods"]:
            raise ClientError(f"method must be one of {g['methods']}, got {method[:40]!r}")
        if not 0 < gamma <= 1:
            raise ClientError(f"gamma must be in (0, 1], got {gamma}")
        return overlays.kept(page_id, method, gamma)
