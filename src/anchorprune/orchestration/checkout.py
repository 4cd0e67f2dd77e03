"""The pull step of the work-pool deployments: a flow run starts in this host's checkout of the project.

A process worker starts each flow run in a fresh temporary folder; the runs need the project
root (``params.yaml``, ``data/``, the features cache, the index) as their working directory,
because the deployments name ``params.yaml`` relative to it and resolve ``root="."`` at run time.
Each worker host has its own checkout, not necessarily at the deploying host's path:
``ANCHORPRUNE_ROOT`` in the worker's environment names it, and the deploying checkout's path is
the fallback.
"""

from __future__ import annotations

import os
from pathlib import Path

#: set in a worker's environment to the project checkout on that host
ROOT_ENV = "ANCHORPRUNE_ROOT"


class ProjectRootError(FileNotFoundError):
    """The folder a run should start in is not a checkout of the project on this host."""


def project_root_for_run(directory: str, params: str = "params.yaml") -> Path:
    """``$ANCHORPRUNE_ROOT`` if set, else ``directory``; it must hold ``params`` (unless that is absolute)."""
    from_env = os.environ.get(ROOT_ENV)
    root = Path(from_env or directory).expanduser().resolve()
    where = f"${ROOT_ENV}" if from_env else f"the checkout `anchorprune deploy` ran in (set ${ROOT_ENV} to override)"
    if not root.is_dir():
        raise ProjectRootError(f"{root} ({where}) is not a folder on this host: set {ROOT_ENV} in the worker's "
                               "environment to this host's checkout of the project")
    if not Path(params).is_absolute() and not (root / params).is_file():
        raise ProjectRootError(f"{root} ({where}) has no {params}: set {ROOT_ENV} in the worker's environment "
                               "to this host's checkout of the project")
    return root


def enter_project_root(directory: str, params: str = "params.yaml") -> dict[str, str]:
    """Pull step: change into the run's project root; Prefect then runs the flow there."""
    root = project_root_for_run(directory, params)
    os.chdir(root)
    return {"directory": str(root)}
