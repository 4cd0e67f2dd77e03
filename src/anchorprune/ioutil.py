"""Files: atomic writes ("write aside, then rename") and content hashes of folders, one home each.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("x")
>>> k1 = tree_hash(d); _ = (d / "a.txt").write_text("y")
>>> tree_hash(d) != k1
True
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and one rename.

    A reader sees the old file or the new one, never half of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def tree_hash(root: Path, pattern: str = "**/*") -> str:
    """sha256 over the relative paths and bytes of the files under ``root`` matching ``pattern`` (sorted).

    A missing folder hashes to a fixed value, so "no data" is a state like any other.
    """
    h = hashlib.sha256()
    root = Path(root)
    if not root.exists():
        return hashlib.sha256(b"<missing>").hexdigest()
    for path in sorted(p for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
