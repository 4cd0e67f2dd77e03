"""Staging (build, validate, then one rename into ``data/``) and DVC versioning of ``data/``.

- :func:`build_staged` builds a dataset in a temporary folder next to ``data/`` (same
  filesystem, so the final move is one ``rename``), validates it with the GX suites and only
  then moves it to ``data/<name>``. An existing dataset is replaced only after validation
  succeeded; a failed build leaves ``data/`` byte-for-byte as it was (it is not even created).
- :func:`dvc_add` runs ``dvc init`` when the repository has no ``.dvc/`` yet, configures a
  default local remote (``.dvc-remote/`` at the repository root, gitignored) so that
  ``dvc push`` / ``dvc pull`` work out of the box, then ``dvc add data``.
- :func:`data_version` is the md5 recorded in ``data.dvc``: every later artefact records it.

DVC is driven through its CLI (``python -m dvc``, the same interpreter) so that its own
logging, locking and config handling are exactly what a user gets by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DATA_DVC = "data.dvc"
DEFAULT_REMOTE_NAME = "local"
DEFAULT_REMOTE_DIR = ".dvc-remote"


class DataVersionError(RuntimeError):
    """DVC failed, or ``data.dvc`` is unreadable."""


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
        raise ValueError(f"dataset name {name!r} must be a plain folder name (no '/', not starting with '.')")


def build_staged(data_root: str | Path, name: str, build: Callable[[Path], Any], *,
                 validate: bool = True) -> tuple[Path, Any]:
    """Build ``data_root/name`` through a staging folder; returns (final path, build's return value).

    ``build(staging_dir)`` writes the dataset (a :class:`~anchorprune.data.schema.DatasetWriter`
    pointed at ``staging_dir``). Any exception from ``build`` or from validation removes the
    staging folder and propagates; ``data_root`` is untouched.
    """
    _check_name(name)
    data_root = Path(data_root)
    parent = data_root.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = parent / f".staging-{name}-{token}"
    staging.mkdir()
    try:
        result = build(staging)
        if validate:
            from anchorprune.data.validation import validate_dataset_dir

            validate_dataset_dir(staging)
        final = data_root / name
        data_root.mkdir(parents=True, exist_ok=True)
        old = parent / f".replaced-{name}-{token}"
        if final.exists():
            final.rename(old)           # the previous dataset stays whole until the new one is in place
        try:
            staging.rename(final)
        except OSError:
            if old.exists():
                old.rename(final)
            raise
        shutil.rmtree(old, ignore_errors=True)
        log.info("dataset %s written to %s", name, final)
        return final, result
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _dvc(repo_root: Path, *args: str, check: bool = True) -> str | None:
    """Run a DVC command; its stdout, or ``None`` when it failed and ``check`` is off."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        if not check:
            return None
        out = (proc.stderr or proc.stdout).strip()
        raise DataVersionError(f"`dvc {' '.join(args)}` failed in {repo_root} (exit {proc.returncode}): {out}")
    return proc.stdout


def ensure_dvc(repo_root: str | Path) -> None:
    """``dvc init`` (``--no-scm`` outside git) if needed, and a default local remote if none is set."""
    root = Path(repo_root).resolve()
    if not (root / ".dvc").is_dir():
        scm = [] if (root / ".git").exists() else ["--no-scm"]
        _dvc(root, "init", "-q", *scm)
        log.info("initialised DVC in %s", root)
    if _dvc(root, "remote", "default", check=False) is None:     # exit 1: no default remote
        remotes = (_dvc(root, "remote", "list") or "").split()
        if DEFAULT_REMOTE_NAME in remotes:
            _dvc(root, "remote", "default", DEFAULT_REMOTE_NAME)
        else:
            _dvc(root, "remote", "add", "-d", DEFAULT_REMOTE_NAME, DEFAULT_REMOTE_DIR)
        (root / DEFAULT_REMOTE_DIR).mkdir(exist_ok=True)
        log.info("default DVC remote '%s' -> %s", DEFAULT_REMOTE_NAME, root / DEFAULT_REMOTE_DIR)


def dvc_add(repo_root: str | Path, data_dir: str | Path = "data", *, push: bool = True) -> str:
    """Track ``data_dir`` with DVC (``data.dvc``), optionally push to the default remote; returns the version."""
    root = Path(repo_root).resolve()
    data = Path(data_dir)
    data_abs = data if data.is_absolute() else root / data
    if not data_abs.is_dir():
        raise DataVersionError(f"{data_abs} does not exist; build a dataset first "
                               "(e.g. `anchorprune data build-demo`)")
    ensure_dvc(root)
    rel = os.path.relpath(data_abs, root)
    _dvc(root, "add", "-q", rel)
    if push:
        _dvc(root, "push", "-q", rel + ".dvc")
    version = data_version(root, dvc_file=rel + ".dvc")
    assert version is not None  # dvc add just wrote it
    log.info("data version %s (%s.dvc)", version, rel)
    return version


def data_version(repo_root: str | Path, dvc_file: str = DATA_DVC) -> str | None:
    """The md5 that ``data.dvc`` records for ``data/`` (``None`` when data is not tracked yet).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> data_version(root) is None
    True
    >>> _ = (root / "data.dvc").write_text("outs:\\n- md5: 6a2d41b618723cb65dcd366bb4fe6e68.dir\\n  path: data\\n")
    >>> data_version(root)
    '6a2d41b618723cb65dcd366bb4fe6e68'
    """
    path = Path(repo_root) / dvc_file
    if not path.exists():
        return None
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        out = doc["outs"][0]
        md5 = out.get("md5") or out.get("hash")
    except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DataVersionError(f"{path} is not a DVC file with an 'outs' md5 ({exc}); "
                               "re-create it with `anchorprune data add`") from exc
    if not isinstance(md5, str) or not md5:
        raise DataVersionError(f"{path} has no md5 for its output; re-create it with `anchorprune data add`")
    return md5.removesuffix(".dir")
