"""Helpers for the data tests: tiny hand-written PDFs: text in Helvetica, an optional outline, optional encryption.

pypdfium2 cannot write outlines, and no PDF writer with outlines is installed, so the few
objects a PDF needs are written here (catalog, pages, font, content streams, outline, xref).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: Sequence[Sequence[str]], outline: Sequence[tuple[str, int]] = (),
             encrypted: bool = False) -> bytes:
    """A letter-size PDF; ``pages[i]`` are lines of text (the first one large, like a heading);
    ``outline`` holds (title, page index) bookmarks; ``encrypted`` adds a Standard security handler
    whose user password is not empty (so it cannot be opened without one)."""
    objs: list[bytes] = []

    def add(body: str | bytes) -> int:
        objs.append(body.encode("latin-1") if isinstance(body, str) else body)
        return len(objs)

    catalog = add("")            # filled in below
    pages_obj = add("")
    font = add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for i, lines in enumerate(pages):
        ops = [f"0.{i % 9 + 1} g 400 60 {40 + 10 * i} 40 re f 0 g"]
        y = 720
        for j, line in enumerate(lines):
            size = 20 if j == 0 else 11
            ops.append(f"BT /F1 {size} Tf 72 {y} Td ({_esc(line)}) Tj ET")
            y -= 30 if j == 0 else 16
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(add(f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 612 792] "
                            f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content} 0 R >>"))
    objs[pages_obj - 1] = (f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] "
                           f"/Count {len(page_ids)} >>").encode()
    cat = f"<< /Type /Catalog /Pages {pages_obj} 0 R"
    if outline:
        root = add("")
        first = len(objs) + 1
        items = list(range(first, first + len(outline)))
        for k, (title, pidx) in enumerate(outline):
            links = f"/Parent {root} 0 R"
            if k > 0:
                links += f" /Prev {items[k - 1]} 0 R"
            if k < len(outline) - 1:
                links += f" /Next {items[k + 1]} 0 R"
            add(f"<< /Title ({_esc(title)}) {links} /Dest [{page_ids[pidx]} 0 R /XYZ 0 792 0] >>")
        objs[root - 1] = (f"<< /Type /Outlines /First {items[0]} 0 R /Last {items[-1]} 0 R "
                          f"/Count {len(items)} >>").encode()
        cat += f" /Outlines {root} 0 R /PageMode /UseOutlines"
    objs[catalog - 1] = (cat + " >>").encode()
    trailer_extra = ""
    if encrypted:
        enc = add("<< /Filter /Standard /V 1 /R 2 /O <" + "ab" * 32 + "> /U <" + "cd" * 32 + "> /P -4 >>")
        trailer_extra = f" /Encrypt {enc} 0 R /ID [<{'01' * 16}> <{'01' * 16}>]"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root {catalog} 0 R{trailer_extra} >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)


def tree_digest(root):
    """sha256 over every path and file's bytes under root (None when root does not exist)."""
    if not root.exists():
        return None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
