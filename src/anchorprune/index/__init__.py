"""The pruned index: one contract (:class:`Index`), two backends (local default, Elasticsearch).

:func:`open_index` picks the backend from ``IndexConfig.backend``: ``local``
(versioned directories under ``root``) unless it says ``elasticsearch``, which
needs ``ELASTICSEARCH_URL`` (and optionally ``ELASTICSEARCH_API_KEY``) in the
environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anchorprune.config import IndexConfig
from anchorprune.index.base import (
    CorruptVersionError,
    Hit,
    Index,
    IndexInputError,
    IndexLockedError,
    IndexStats,
    IndexStoreError,
    IndexVersion,
    NoServingVersionError,
    VersionNotFoundError,
)
from anchorprune.index.lifecycle import SwapConflictError, VersionHealth
from anchorprune.index.local import LocalIndex, index_root

__all__ = [
    "CorruptVersionError", "Hit", "Index", "IndexInputError", "IndexLockedError", "IndexStats", "IndexStoreError",
    "IndexVersion", "LocalIndex", "index_root", "NoServingVersionError", "SwapConflictError", "VersionHealth",
    "VersionNotFoundError", "open_index",
]


class BackendConfigError(IndexStoreError, ValueError):
    """The configured backend cannot be opened (e.g. Elasticsearch without ``ELASTICSEARCH_URL``)."""


def open_index(cfg: IndexConfig, root: Path | str, calibration_queries: Any = None) -> Index:
    """The index named by ``cfg`` (local under ``root/<cfg.name>/``, or the Elasticsearch alias ``cfg.name``).

    ``calibration_queries``: what a local token_ivf build calibrates on when ``index.calibration.source`` is
    ``queries`` or ``auto`` (query matrices, a :class:`~anchorprune.index.calibration.QuerySample` or a
    callable giving one; see :class:`LocalIndex`); searching never needs it. Elasticsearch does not calibrate
    (``docs/index.md``, "Recall targets") and ignores it.

    >>> import tempfile
    >>> from anchorprune.config import IndexConfig
    >>> open_index(IndexConfig(name="demo", dtype="bits"), tempfile.mkdtemp()).dtype
    'bits'
    """
    if cfg.backend == "elasticsearch":
        if not os.environ.get("ELASTICSEARCH_URL"):
            raise BackendConfigError(
                "index.backend is 'elasticsearch' but ELASTICSEARCH_URL is not set: export ELASTICSEARCH_URL "
                "(and ELASTICSEARCH_API_KEY if the cluster needs one), or set index.backend: local")
        from anchorprune.index.elasticsearch import ElasticsearchIndex

        return ElasticsearchIndex.from_env(cfg.name, dtype=cfg.dtype, two_stage=cfg.two_stage,
                                           candidates=cfg.candidates, **first_stage_kwargs(cfg))
    kwargs = first_stage_kwargs(cfg)
    pinned = cfg.pinned()                   # explicit settings win; the rest come from the version's calibration
    if "nprobe" not in pinned:
        kwargs["first_stage_params"] = {k: v for k, v in kwargs["first_stage_params"].items() if k != "nprobe"}
    return LocalIndex(Path(root), cfg.name, dtype=cfg.dtype, two_stage=cfg.two_stage,
                      candidates=pinned.get("candidates"), target_recall=cfg.target_recall,
                      calibration=cfg.calibration.model_dump(), calibration_queries=calibration_queries, **kwargs)


def first_stage_kwargs(cfg: IndexConfig) -> dict:
    """The first-stage arguments both backends take, from ``index.*`` (the parameters of the stage built)."""
    from anchorprune.index.first_stage import built_stage, resolve_first_stage

    stage = built_stage(resolve_first_stage(cfg.first_stage, cfg.two_stage), cfg.first_stage_auto)
    params = cfg.token_ivf if stage == "token_ivf" else cfg.muvera
    return {"first_stage": cfg.first_stage, "first_stage_params": params.model_dump(),
            "first_stage_threshold": cfg.first_stage_threshold, "first_stage_auto": cfg.first_stage_auto}
