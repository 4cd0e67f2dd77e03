"""The Prefect flows of a checkout, loaded by entrypoint (``flows/<file>.py:<flow>``) from the project root.

``flows/`` is not part of the installed package: it stays in the checkout, next to ``params.yaml``
(the project root, ``config.project_root``). The CLI loads a flow with Prefect's own loader
(``prefect.flows.load_flow_from_entrypoint``), and the deployments name the same entrypoints,
relative to the project root their runs start in (``stages.checkout``).

The flows import each other as ``flows.<module>``: Prefect's loader puts the current folder and
the script's folder on ``sys.path``, not the project root, so :func:`load_flow` adds the root.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the flows' folder, relative to the project root
FLOWS_DIR = "flows"


class FlowsNotFoundError(FileNotFoundError):
    """The project root has no flow file at the entrypoint (not a checkout of the project)."""


def flows_dir(root: str | Path) -> Path:
    return Path(root).resolve() / FLOWS_DIR


def entrypoint(flow: str) -> str:
    """``"pipeline.py:pipeline_flow"`` as the project-relative entrypoint a deployment names.

    >>> entrypoint("reindex.py:reindex_flow")
    'flows/reindex.py:reindex_flow'
    """
    return f"{FLOWS_DIR}/{flow}"


def load_flow(root: str | Path, flow: str):
    """The flow at ``flows/<flow>`` (``"pipeline.py:pipeline_flow"``) of the checkout at ``root``."""
    from prefect.flows import load_flow_from_entrypoint

    from anchorprune.orchestration.environment import check_prefect_api
    from anchorprune.orchestration.tempserver import watch_temporary_server

    root = Path(root).resolve()
    file, _, name = flow.partition(":")
    path = flows_dir(root) / file
    if not path.is_file():
        raise FlowsNotFoundError(f"{path} does not exist: the flows run from the checkout that holds the params "
                                 f"file ({FLOWS_DIR}/ next to params.yaml)")
    _import_flows_from(root)
    check_prefect_api()
    watch_temporary_server()
    return load_flow_from_entrypoint(f"{path}:{name}", use_placeholder_flow=False)


#: where the imported ``flows`` package really is (resolved when first loaded: a symlinked checkout may go away)
_imported_from: dict[int, set[str]] = {}


def _import_flows_from(root: Path) -> None:
    """Make ``import flows`` find ``<root>/flows``; refuse when another checkout's flows are imported already."""
    import importlib

    if FLOWS_DIR not in sys.modules and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = importlib.import_module(FLOWS_DIR)
    where = _imported_from.setdefault(id(loaded), {str(Path(p).resolve()) for p in getattr(loaded, "__path__", [])})
    if str(flows_dir(root).resolve()) not in where:
        raise FlowsNotFoundError(f"this process imports the flows of {', '.join(sorted(where)) or '?'}, not "
                                 f"{flows_dir(root)}: one checkout's flows per process")
