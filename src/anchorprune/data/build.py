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


def dataset_dir(settings: Settings, root: str | Path) -> Path:
    data_root = Path(settings.paths.data_dir)
    return (data_root if data_root.is_absolute() else Path(root) / data_root) / settings.data.dataset


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
        log.info("dataset %s exists; not rebuilding (pass rebuild=True to rebuild)", final)
        return final, json.loads((final / MANIFEST_FILE).read_text())
    data_root = final.parent
    if d.source == "demo" and d.demo_variant == "debian":
        from anchorprune.data.debian_bench import build_debian_bench

        return build_debian_bench(data_root, name=d.dataset, dpi=d.dpi, cache_dir=cache_dir or root / "cache" / "debs",
                                  blank_titles=d.blank_titles, max_pages_per_doc=d.limit)
    if d.source == "demo":
        from anchorprune.data.demo import build_demo

        return build_demo(data_root, name=d.dataset, dpi=d.dpi, variant=d.demo_variant,
                          cache_dir=cache_dir or root / "cache" / "debs", blank_titles=d.blank_titles,
                          max_pages_per_doc=d.limit)
    if d.source == "vidore":
        from anchorprune.data.vidore import build_vidore_dataset

        if not d.vidore_ids:
            raise ValueError("data.source is 'vidore' but data.vidore_ids is empty in params.yaml")
        return build_staged(data_root, d.dataset, lambda s: build_vidore_dataset(
            list(d.vidore_ids), s, name=d.dataset, limit=d.limit, languages=d.vidore_languages,
            protocol=d.vidore_protocol))
    if d.source == "pdfs":
        from anchorprune.data.pdfs import build_pdf_dataset

        if d.pdf_dir is None:
            raise ValueError("data.source is 'pdfs' but data.pdf_dir is not set in params.yaml")
        pdf_dir = d.pdf_dir if d.pdf_dir.is_absolute() else root / d.pdf_dir
        return build_staged(data_root, d.dataset, lambda s: build_pdf_dataset(
            pdf_dir, s, name=d.dataset, dpi=d.dpi, blank_titles=d.blank_titles, limit=d.limit))
    raise ValueError(f"unknown data.source {d.source!r}")
