"""Which run wrote a report, kept beside the report instead of in it.

A stage's report under ``reports/<stage>/`` is a DVC output: if it carried the MLflow run ids or the git
commit of the run that wrote it, every rerun would change ``dvc.lock`` although nothing it measured
changed. So each report is written as two files: the figures (the DVC output) and, at
:func:`provenance_path`, who made them. This module is the one place that draws the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: meta keys that say which run made a file, not what is in it: kept out of DVC outputs
PROVENANCE_KEYS = ("git_commit",)


def provenance_path(path: Path) -> Path:
    """``reports/<stage>/<file>`` -> ``reports/.provenance/<stage>/<file>``: beside the DVC outputs, in none of them
    (``reports/`` is ignored by git), so run ids and commits never change ``dvc.lock``.

    >>> provenance_path(Path("reports/encode/minilm.json")).as_posix()
    'reports/.provenance/encode/minilm.json'
    """
    return path.parent.parent / ".provenance" / path.parent.name / path.name


def without_provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` without the keys that name the run (:data:`PROVENANCE_KEYS`)."""
    return {k: v for k, v in meta.items() if k not in PROVENANCE_KEYS}


def provenance_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``meta`` that name the run."""
    return {k: meta[k] for k in PROVENANCE_KEYS if k in meta}


def strip_run_ids(obj: Any) -> Any:
    """``obj`` without ``run_id`` anywhere and without :data:`PROVENANCE_KEYS` in any ``meta``-like mapping
    (one that carries a ``config_hash``)."""
    if isinstance(obj, dict):
        return {k: strip_run_ids(v) for k, v in obj.items()
                if k != "run_id" and not (k in PROVENANCE_KEYS and "config_hash" in obj)}
    if isinstance(obj, list):
        return [strip_run_ids(v) for v in obj]
    return obj


def write_report(path: Path, figures: Mapping[str, Any] | str, provenance: Mapping[str, Any]) -> None:
    """Write ``provenance`` at :func:`provenance_path` first, then the report itself atomically (a JSON
    string is written as it is); the report is the file later stages and DVC read, so it is written last."""
    from anchorprune.ioutil import write_json, write_text_atomic

    write_json(provenance_path(path), dict(provenance))
    if isinstance(figures, str):
        write_text_atomic(path, figures)
    else:
        write_json(path, dict(figures))
