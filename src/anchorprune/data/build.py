"""Build the dataset ``params.yaml`` names (``data.source``: demo | vidore | pdfs), staged and validated.

This is what the data stage (CLI and Prefect flow) calls; the per-source builders live in
:mod:`~anchorprune.data.demo`, :mod:`~anchorprune.data.vidore` and :mod:`~anchorprune.data.pdfs`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from anchorprune.config import Settings
from anchorprune.data.schema import MANIFEST_FILE

log = logging.getLogger(__name__)


def data_root(settings: Settings, root: str | Path) -> Path:
    """``paths.data_dir``: as written when absolute, else under the project root (the params file's folder).

    >>> from anchorprune.config import Settings
    >>> s = Settings.model_validate({"backbones": [{"name": "m", "kind": "mock", "model_id": "mock"}]})
    >>> data_root(s, "proj").as_posix(), dataset_dir(s, "proj", "x").as_posix()
    ('proj/data', 'proj/data/x')
    """
    p = Path(settings.paths.data_dir)
    return p if p.is_absolute() else Path(root) / p


def dataset_dir(settings: Settings, root: str | Path, name: str | None = None) -> Path:
    """``data/<name>`` (default: ``data.dataset``) under :func:`data_root`."""
    return data_root(settings, root) / (name or settings.data.dataset)


def build_demo_dataset(settings: Settings, root: str | Path, *, variant: str | None = None, name: str | None = None,
                       cache_dir: str | Path | None = None, pdf_dir: str | Path | None = None,
                       max_pages_per_doc: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Build a demo corpus (``small``, ``large`` or ``debian``; default ``data.demo_variant``) into ``data/<name>``.

    The one builder of the demo variants: the data stage and ``anchorprune data build-demo`` both call it.
    ``pdf_dir`` (R manuals already on disk, instead of apt) applies to the R-manual variants only.
    """
    root = Path(root)
    d = settings.data
    variant = variant or d.demo_variant
    name = name or d.dataset
    cache_dir = cache_dir or root / "cache" / "debs"
    max_pages_per_doc = max_pages_per_doc or d.limit
    if variant == "debian":
        from anchorprune.data.debian_bench import build_debian_bench

        if pdf_dir is not None:
            raise ValueError("--pdf-dir applies to the R-manual demo variants (small, large), not 'debian'")
        return build_debian_bench(data_root(settings, root), name=name, dpi=d.dpi, cache_dir=cache_dir,
                                  blank_titles=d.blank_titles, max_pages_per_doc=max_pages_per_doc)
    from anchorprune.data.demo import build_demo

    return build_demo(data_root(settings, root), name=name, dpi=d.dpi, variant=variant, cache_dir=cache_dir,
                      pdf_dir=pdf_dir, blank_titles=d.blank_titles, max_pages_per_doc=max_pages_per_doc)


class DatasetSourceChangedError(ValueError):
    """``data.source``/``pdf_dir``/``vidore_ids``/``demo_variant`` no longer match what ``data/<dataset>`` was built from."""


def requested_source(settings: Settings, root: str | Path) -> dict[str, Any]:
    """What params.yaml asks ``data/<dataset>`` to hold, in the terms a manifest records."""
    d = settings.data
    if d.source == "pdfs":
        pdf_dir = None if d.pdf_dir is None else d.pdf_dir.expanduser()
        pdf_dir = pdf_dir if pdf_dir is None or pdf_dir.is_absolute() else Path(root) / pdf_dir
        return {"source": "pdfs", "pdf_dir": None if pdf_dir is None else str(Path(pdf_dir).resolve())}
    if d.source == "vidore":
        return {"source": "vidore", "vidore_ids": sorted(d.vidore_ids)}
    return {"source": "demo", "demo_variant": d.demo_variant}


def recorded_source(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What a dataset's manifest says it was built from (``None``: a source params.yaml cannot name)."""
    source, extra = str(manifest.get("source", "")), manifest.get("extra") or {}
    if source == "pdfs":
        return {"source": "pdfs", "pdf_dir": extra.get("pdf_dir")}
    if source == "vidore":
        return {"source": "vidore", "vidore_ids": sorted(extra.get("sources") or {})}
    if source.startswith("debian:"):
        return {"source": "demo", "demo_variant": extra.get("variant")}
    return None


def check_source_unchanged(settings: Settings, root: str | Path, final: str | Path | None = None) -> None:
    """Refuse to use ``data/<dataset>`` when params.yaml now names another source for it.

    Switching data is explicit: the dataset's manifest records its source, and a change of
    ``data.source``, ``data.pdf_dir``, ``data.vidore_ids`` or ``data.demo_variant`` for an existing
    dataset name raises :class:`DatasetSourceChangedError` with the command that rebuilds it, instead
    of silently serving the old pages. (A manifest that lacks a field, e.g. a PDF folder built by an
    older version, is not compared on it.)
    """
    import json

    final = Path(final) if final is not None else dataset_dir(settings, root)
    try:
        manifest = json.loads((final / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return
    have, want = recorded_source(manifest), requested_source(settings, root)
    if have is None:
        return
    changed = [k for k in want if have.get(k) is not None and have.get(k) != want[k]]
    if have["source"] != want["source"]:
        changed = ["source", *[k for k in changed if k != "source"]]
    if not changed:
        return
    name = settings.data.dataset
    was = ", ".join(f"{k}={have.get(k)!r}" for k in have if have.get(k) is not None)
    now = ", ".join(f"{k}={want[k]!r}" for k in want)
    raise DatasetSourceChangedError(
        f"data/{name} was built from {was}, but params.yaml now asks for {now}; it would keep serving the old "
        f"pages. Rebuild it with `anchorprune pipeline --rebuild-data` (the data stage), or give the new data "
        f"its own name (data.dataset) so each keeps its own index and champion")


def build_dataset(settings: Settings, root: str | Path, *, rebuild: bool = False,
                  cache_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Build ``data/<data.dataset>`` from ``data.source`` (skipped when it exists and ``rebuild`` is off).

    Returns (dataset folder, manifest). Nothing in ``data/`` changes unless the new build validates.
    """
    import json

    from anchorprune.data.versioning import build_staged

    root = Path(root)
    d = settings.data
    final = dataset_dir(settings, root)
    if final.exists() and not rebuild:
        check_source_unchanged(settings, root, final)
        log.info("dataset %s exists; not rebuilding (pass rebuild=True to rebuild)", final)
        return final, json.loads((final / MANIFEST_FILE).read_text())
    data_dir = final.parent
    if d.source == "demo":
        return build_demo_dataset(settings, root, cache_dir=cache_dir)
    if d.source == "vidore":
        from anchorprune.data.vidore import build_vidore_dataset

        if not d.vidore_ids:
            raise ValueError("data.source is 'vidore' but data.vidore_ids is empty in params.yaml")
        return build_staged(data_dir, d.dataset, lambda s: build_vidore_dataset(
            list(d.vidore_ids), s, name=d.dataset, limit=d.limit, languages=d.vidore_languages,
            protocol=d.vidore_protocol))
    if d.source == "pdfs":
        from anchorprune.data.pdfs import build_pdf_dataset

        if d.pdf_dir is None:
            raise ValueError("data.source is 'pdfs' but data.pdf_dir is not set in params.yaml")
        pdf_dir = d.pdf_dir.expanduser()
        pdf_dir = pdf_dir if pdf_dir.is_absolute() else root / pdf_dir
        return build_staged(data_dir, d.dataset, lambda s: build_pdf_dataset(
            pdf_dir, s, name=d.dataset, dpi=d.dpi, blank_titles=d.blank_titles, limit=d.limit,
            strict=d.strict_pdfs))
    raise ValueError(f"unknown data.source {d.source!r}")
