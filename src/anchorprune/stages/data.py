"""The data stage: build (or reuse) the configured dataset, validate it, version ``data/`` with DVC."""

from __future__ import annotations

from anchorprune.stages.workspace import Workspace


def stage_data(ws: Workspace, rebuild: bool = False) -> str:
    """Build (or reuse) the configured dataset, validate it (GX), track data/ with DVC; returns the data version
    (this dataset's own: :meth:`Workspace.data_version`)."""
    from anchorprune.data.versioning import dvc_add

    if rebuild or not ws.dataset_dir.exists():
        from anchorprune.data.build import build_dataset

        build_dataset(ws.settings, ws.root, rebuild=rebuild)   # staged: validated before it replaces anything
    ws.check_dataset()                                         # records the verdict for the later stages
    dvc_add(ws.root, ws.data_root, push=True)                # data.dvc: the project's record of all of data/
    ws.__dict__.pop("dataset", None)                     # reload after a rebuild
    return ws.data_version()
