"""`dvc plots` rendered offline: DVC fills the templates (``.dvc/plots/``), vl-convert draws SVG.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, so it is blank without a
network. Here DVC still does the plotting work (``dvc plots show/diff --json``: the specs
from ``dvc.yaml``, with data and revisions filled in) and vl-convert (Vega bundled in a
wheel, no network) turns each Vega-Lite spec into inline SVG in one self-contained page.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path


class PlotsError(RuntimeError):
    """DVC could not produce the plots (no reports yet, not a DVC repository, ...)."""


def dvc_plot_specs(root: Path, revs: list[str] | None = None) -> dict[str, dict]:
    """``{plot name: Vega-Lite spec}`` from ``dvc plots show --json`` (``dvc plots diff`` with revisions)."""
    args = ["plots", "diff", *revs] if revs else ["plots", "show"]
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        raise PlotsError(f"`dvc {' '.join(args)} --json` failed in {root}: {(proc.stderr or proc.stdout).strip()}")
    doc = json.loads(proc.stdout)
    specs = {}
    for name, items in (doc.get("data") or {}).items():
        for item in items:
            if item.get("type") == "vega":
                content = item["content"]
                specs[name] = json.loads(content) if isinstance(content, str) else content
    if not specs:
        errors = "; ".join(f"{e.get('name', '')}: {e.get('msg', e.get('type', ''))}" for e in doc.get("errors", []))
        raise PlotsError("no plot data: run the pipeline first (`make demo` or `make repro`)"
                         + (f" ({errors})" if errors else ""))
    return specs


def render_page(specs: dict[str, dict], title: str = "anchorprune plots") -> str:
    """One self-contained HTML page: an inline SVG per plot (no scripts, no network)."""
    import vl_convert

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>",
             "<body style='font-family: sans-serif'>", f"<h1>{html.escape(title)}</h1>"]
    for name, spec in specs.items():
        spec = {**spec}
        for dim, size in (("width", 560), ("height", 320)):
            if not isinstance(spec.get(dim), int | float):
                spec[dim] = size                  # DVC's "container" sizing needs a browser layout
        parts += [f"<h2>{html.escape(name)}</h2>", vl_convert.vegalite_to_svg(spec)]
    parts.append("</body></html>")
    return "\n".join(parts)


def check_revisions(root: Path, revs: list[str], files: tuple[str, ...]) -> None:
    """Refuse (one line) a revision whose commit lacks the plots data: ``dvc plots diff`` would silently draw
    the workspace's data for it."""
    for rev in revs:
        if rev == "workspace":
            continue
        for f in files:
            proc = subprocess.run(["git", "cat-file", "-e", f"{rev}:{f}"], cwd=root, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PlotsError(f"revision {rev!r} has no {f} in git (committed before plots data was tracked, "
                                 "or not a revision): nothing of its own to draw")


def render_offline(root: Path, out: Path, revs: list[str] | None = None) -> Path:
    """Write ``out/index.html`` for the workspace (or the given revisions); returns its path."""
    if revs:
        from anchorprune.tracking.outputs import PLOTS_DIR, PLOTS_FILES

        check_revisions(root, revs, tuple(f"{PLOTS_DIR}/{f}" for f in PLOTS_FILES))
    page = render_page(dvc_plot_specs(root, revs), "anchorprune plots" + (f": {' vs '.join(revs)}" if revs else ""))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page)
    return path
