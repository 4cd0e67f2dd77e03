"""One identity per dataset: its reports folder, registered model names, index name and data version.

The demo dataset (``data.dataset: rdocs-demo``, the default) keeps the project's plain names
(``reports/``, ``anchorprune-<backbone>``, ``index.name``); every other dataset gets its own,
suffixed with its name, so building, promoting and serving a second dataset never changes what the
first one serves:

>>> dataset_suffix("rdocs-demo"), dataset_suffix("My PDFs")
('', '-my-pdfs')
>>> scoped_name("anchorprune", "my-pdfs"), scoped_name("anchorprune-my-pdfs", "my-pdfs")
('anchorprune-my-pdfs', 'anchorprune-my-pdfs')
>>> scoped_reports("reports", "rdocs-demo"), scoped_reports("reports", "my-pdfs")
('reports', 'reports/my-pdfs')

The data version a stage, a champion or an index records is the dataset's own content hash
(:func:`anchorprune.data.validation.dataset_content_hash`, the hash the GX check computes), not
``data.dvc``'s md5 of all of ``data/``: adding or changing another dataset never invalidates it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

#: the demo's dataset name (config default of ``data.dataset``): the one that keeps the plain names
DEMO_DATASET = "rdocs-demo"


def dataset_slug(dataset: str) -> str:
    """``dataset`` as a name part any index backend accepts (lowercase letters, digits, '-' and '_')."""
    return re.sub(r"[^a-z0-9_-]+", "-", dataset.lower()).strip("-_") or "dataset"


def dataset_suffix(dataset: str | None) -> str:
    """``''`` for the demo dataset (or none), else ``-<slug>``."""
    if dataset is None or dataset == DEMO_DATASET:
        return ""
    return f"-{dataset_slug(dataset)}"


def scoped_name(base: str, dataset: str | None) -> str:
    """``base`` with the dataset's suffix (once: a name that already ends with it is kept)."""
    suffix = dataset_suffix(dataset)
    return base if not suffix or base.endswith(suffix) else base + suffix


def scoped_reports(base: str, dataset: str | None) -> str:
    """``<reports_dir>/<dataset>`` for a dataset other than the demo (once), else ``reports_dir``."""
    if not dataset_suffix(dataset):
        return str(base)
    part = dataset_slug(dataset)
    return str(base) if PurePosixPath(str(base)).name == part else str(PurePosixPath(str(base)) / part)
