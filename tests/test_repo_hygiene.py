"""The repository stands alone: no machine paths, no references outside it, every doc link resolves.

Fast and import-free: it reads the git-tracked text files (``git ls-files``) and nothing else.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Absolute paths of the machines the project was built on. A user who clones the repo has none of them.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root)/|(?<![\w.~-])/home/[A-Za-z0-9_.-]+/")
# Files that lived beside the repository while it was written; the repo's own docs replace them.
OUTSIDE_REF = re.compile(
    r"(?<![\w/.-])shared/|\bSPEC\.md\b|\bARCHITECTURE\.md\b|(?<![\w/.-])notes/[\w.-]+\.md\b"
    # the outside notes by their bare names (their in-repo successors are docs/checkpoints.md, docs/vidore.md, ...)
    r"|(?<![\w/.-])(?:real-checkpoints|vidore-datasets|elasticsearch-and-peers|stack-probe"
    r"|window-capture)\.md\b"
)
DOC_REF = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)\b")
MD_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]\n]*\]\(([^)\s]+)\)")


@cache
def tracked_text_files() -> tuple[Path, ...]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing to check")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" in head:                      # binary (images, pickles)
            continue
        files.append(path)
    return tuple(files)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def offenders(pattern: re.Pattern[str], files=None) -> list[str]:
    found = []
    for path in files if files is not None else tracked_text_files():
        for n, line in enumerate(read(path).splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:160]}")
    return found


def test_no_absolute_machine_paths():
    bad = offenders(MACHINE_PATH)
    assert not bad, "absolute machine paths (use paths relative to the repo):\n" + "\n".join(bad)


def test_docs_name_no_temporary_paths():
    docs = [p for p in tracked_text_files() if p.suffix == ".md"]
    bad = offenders(re.compile(r"(?<![\w.~-])/tmp/"), docs)
    assert not bad, "machine-specific /tmp paths in the docs:\n" + "\n".join(bad)


def test_no_references_outside_the_repo():
    me = Path(__file__).resolve()
    bad = offenders(OUTSIDE_REF, [p for p in tracked_text_files() if p.resolve() != me])
    assert not bad, "references to files outside the repository (point at docs/ instead):\n" + "\n".join(bad)


def test_every_cited_doc_exists():
    missing = []
    for path in tracked_text_files():
        for n, line in enumerate(read(path).splitlines(), 1):
            for name in DOC_REF.findall(line):
                if not (ROOT / "docs" / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{n}: docs/{name}")
    assert not missing, "docs cited but not in docs/:\n" + "\n".join(missing)


def markdown_files() -> list[Path]:
    return [p for p in tracked_text_files()
            if p.suffix == ".md" and (p.parent == ROOT / "docs" or p == ROOT / "README.md")]


def test_markdown_links_resolve():
    broken = []
    for path in markdown_files():
        text = re.sub(r"```.*?```", "", read(path), flags=re.S)       # code blocks are not links
        for m in MD_LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue                                              # URLs, mailto:, in-page anchors
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            inside = resolved == ROOT or ROOT in resolved.parents
            if not inside or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: ({target})")
    assert not broken, "relative links that do not resolve to a file in the repo:\n" + "\n".join(broken)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", read(path), flags=re.S)
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_markdown_anchors_resolve():
    broken = []
    for path in markdown_files():
        text = re.sub(r"```.*?```", "", read(path), flags=re.S)
        for m in MD_LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if "#" not in target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, fragment = target.split("#", 1)
            doc = (path.parent / file_part).resolve() if file_part else path
            if doc.suffix == ".md" and doc.is_file() and fragment not in anchors(doc):
                broken.append(f"{path.relative_to(ROOT)}: ({target})")
    assert not broken, "links to headings that do not exist:\n" + "\n".join(broken)


def test_the_docs_the_code_cites_are_present():
    for name in ("method.md", "architecture.md", "checkpoints.md", "vidore.md", "elasticsearch-fidelity.md"):
        assert (ROOT / "docs" / name).is_file(), name
