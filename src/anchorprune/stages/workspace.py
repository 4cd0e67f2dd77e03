"""Where a pipeline run reads and writes: the settings, the project root and the paths under it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from anchorprune.config import BackboneConfig, Settings
from anchorprune.tracking.tracker import Tracker, git_commit

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """Where a pipeline run reads and writes: the settings plus the project root."""

    settings: Settings
    root: Path

    @classmethod
    def from_params(cls, params: str | Path, root: str | Path | None = None) -> Workspace:
        """The workspace of a params file: its settings, rooted at ``root``.

        Without ``root`` the params file's own folder is the project root (``config.project_root``);
        with it, a relative ``params`` is relative to ``root`` (an absolute one is taken as is).
        Raises :class:`~anchorprune.config.ConfigError` for a missing or invalid file.
        """
        from anchorprune.config import load_settings, project_root

        if root is None:
            return cls(load_settings(params), project_root(params))
        root = Path(root).resolve()
        return cls(load_settings(root / params), root)

    def path(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    @property
    def dataset_dir(self) -> Path:
        from anchorprune.data.build import dataset_dir

        return dataset_dir(self.settings, self.root)

    @property
    def data_root(self) -> Path:
        """``paths.data_dir`` under the root: the folder DVC tracks (``data.dvc``)."""
        from anchorprune.data.build import data_root

        return data_root(self.settings, self.root)

    @property
    def reports(self) -> Path:
        return self.path(self.settings.paths.reports_dir)

    @property
    def features_dir(self) -> str | Path:
        """The features cache: a folder under the root, or an fsspec URL (``paths.features_dir``)."""
        return self.settings.paths.resolve(self.settings.paths.features_dir, self.root)

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker.from_config(self.settings.tracking, self.root)

    def check_dataset(self) -> str:
        """Run the GX suites on the dataset before a stage uses it; a pass is cached by content hash.

        Raises :class:`~anchorprune.data.validation.DataValidationError` (duplicate page ids,
        qrels to missing pages, ...) before anything is written or logged.
        """
        from anchorprune.data.build import check_source_unchanged
        from anchorprune.data.validation import ensure_valid

        if self.dataset_dir.is_dir():
            check_source_unchanged(self.settings, self.root, self.dataset_dir)   # switching data is explicit
        return ensure_valid(self.dataset_dir, self.path(self.settings.paths.validation_dir))

    @cached_property
    def dataset(self):
        from anchorprune.data.schema import load_dataset_dir

        self.check_dataset()
        return load_dataset_dir(self.dataset_dir)

    def split(self) -> tuple[list[str], list[str]]:
        from anchorprune.data.schema import split_queries

        d = self.settings.data
        calib, evalq = split_queries(self.dataset, d.calibration_fraction, d.seed)
        return list(calib), list(evalq)

    def data_version(self) -> str:
        """The version of *this* dataset: the first 32 hex digits of its content hash (the hash the GX
        check keys on), so a change to another dataset under ``data/`` never changes it.

        ``data.dvc`` stays the project's record of all of ``data/`` (:meth:`dvc_version`, also in
        :meth:`meta`); champions and indexes compare this one (anchorprune.identity).
        """
        from anchorprune.data.validation import dataset_content_hash

        if not self.dataset_dir.is_dir():
            return "missing"
        return dataset_content_hash(self.dataset_dir)[:32]

    def dvc_version(self) -> str:
        """The md5 ``data.dvc`` records for all of ``data/`` (``untracked`` without one)."""
        from anchorprune.data.versioning import data_version

        try:
            return data_version(self.root) or "untracked"
        except Exception as exc:  # noqa: BLE001 - an untracked dataset is still usable
            log.warning("data version unknown (%s); recording 'untracked'", exc)
            return "untracked"

    def languages(self) -> str:
        """Which query languages the dataset holds (``all``, ``english``, ...; ``n/a`` without a filter)."""
        from anchorprune.data.schema import MANIFEST_FILE
        from anchorprune.data.vidore import languages_label

        try:
            return languages_label(json.loads((self.dataset_dir / MANIFEST_FILE).read_text()))
        except (OSError, ValueError):
            return "n/a"

    def meta(self, bcfg: BackboneConfig, backbone: Any | None = None) -> dict[str, str]:
        return {
            "data_version": self.data_version(),
            "data_dvc": self.dvc_version(),
            "dataset": self.settings.data.dataset,
            "languages": self.languages(),
            "backbone": bcfg.name,
            "backbone_kind": bcfg.kind,
            "backbone_id": getattr(backbone, "model_id", bcfg.model_id),
            "backbone_revision": getattr(backbone, "revision", bcfg.revision),
            "config_hash": self.settings.config_hash(),
            "git_commit": git_commit(self.root),
        }

    def backbone(self, bcfg: BackboneConfig):
        from anchorprune.backbones import load_backbone

        if bcfg.kind != "mock":
            quiet_weight_loading()
        return load_backbone(bcfg)


def quiet_weight_loading() -> None:
    """Turn off transformers' "Loading weights n/n" bar (printed on every model load, every search).

    Only transformers' own bars: hub download bars stay on (a real checkpoint download is worth
    watching) unless HF_HUB_DISABLE_PROGRESS_BARS is set.
    """
    import os

    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    if hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()          # also turns the hub's bars off ...
        if not os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
            enable_progress_bars()                 # ... so turn those back on
