"""One identity per dataset: its reports folder, registered model name, index name and data version.

The project's own dataset (the one its ``params.yaml`` names: the demo's ``rdocs-demo`` after
``make demo``) keeps the plain names (``reports/``, ``anchorprune-<backbone>``, ``index.name``).
A params file next to it that names another dataset (``params-my-pdfs.yaml``: ``data.dataset:
my-pdfs``) gets names of its own, suffixed ``-<dataset>``, so building, promoting and serving a
second dataset never changes what the first one serves. :func:`anchorprune.config.load_settings`
decides, and records the suffix in ``data.identity``:

>>> identity_suffix("My PDFs", primary="rdocs-demo"), identity_suffix("rdocs-demo", "rdocs-demo")
('-my-pdfs', '')
>>> identity_suffix("anything", primary=None)
''
>>> scoped_name("anchorprune", "-my-pdfs"), scoped_name("anchorprune-my-pdfs", "-my-pdfs")
('anchorprune-my-pdfs', 'anchorprune-my-pdfs')
>>> scoped_reports("reports", ""), scoped_reports("reports", "-my-pdfs")
('reports', 'reports/my-pdfs')

The data version a stage, a champion or an index records is the dataset's own content hash
(:func:`anchorprune.data.validation.dataset_content_hash`, the hash the GX check computes), not
``data.dvc``'s md5 of all of ``data/``: adding or changing another dataset never invalidates it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath


def dataset_slug(dataset: str) -> str:
    """``dataset`` as a name part any index backend accepts (lowercase letters, digits, '-' and '_')."""
    return re.sub(r"[^a-z0-9_-]+", "-", dataset.lower()).strip("-_") or "dataset"


def identity_suffix(dataset: str, primary: str | None) -> str:
    """``''`` for the project's own dataset (or when there is no project file to compare with), else ``-<slug>``."""
    if primary is None or dataset == primary:
        return ""
    return f"-{dataset_slug(dataset)}"


def scoped_name(base: str, suffix: str | None) -> str:
    """``base`` with the identity suffix (once: a name that already ends with it is kept)."""
    return base if not suffix or base.endswith(suffix) else base + suffix


def scoped_reports(base: str, suffix: str | None) -> str:
    """``<reports_dir>/<slug>`` for a suffixed identity (once), else ``reports_dir``."""
    if not suffix:
        return str(base)
    part = suffix.removeprefix("-")
    return str(base) if PurePosixPath(str(base)).name == part else str(PurePosixPath(str(base)) / part)
