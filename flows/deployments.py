"""Scheduled deployments served from one process (`flow.serve` style, no work pool).

    anchorprune serve            # or: python -m flows.deployments

reindex runs nightly and recalibrate (calibrate + evaluate + promote) weekly, with the crons
from params.yaml; each deployment has a concurrency limit of one, so two rebuilds of one
index never run at once.

The deployments hold no absolute path: their parameters name the params file relative to the
project root, and ``root`` keeps its default ``"."``, resolved when a run starts (``main``
serves from the project root, so a moved or second checkout serves its own files).
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from anchorprune.config import load_settings
from flows.pipeline import recalibrate_flow
from flows.reindex import reindex_flow


def build_deployments(params: str = "params.yaml", root: str = "."):
    root_path = Path(root).resolve()
    params_path = (root_path / params if not Path(params).is_absolute() else Path(params)).resolve()
    cfg = load_settings(params_path)
    s = cfg.schedule
    # relative to the root, which each run resolves from its working directory (see main)
    rel = os.path.relpath(params_path, root_path)
    args = {"params": rel if not rel.startswith("..") else str(params_path)}
    return [
        reindex_flow.to_deployment(
            name=f"reindex-{cfg.index.name}", schedule=Cron(s.reindex_cron, timezone=s.timezone),
            parameters=args, concurrency_limit=1, entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["anchorprune", "index"], description="Rebuild the pruned index from @champion and swap it in.",
        ),
        recalibrate_flow.to_deployment(
            name="weekly", schedule=Cron(s.recalibrate_cron, timezone=s.timezone),
            parameters=args, concurrency_limit=1, entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["anchorprune", "calibrate"], description="Calibrate, evaluate and promote every backbone.",
        ),
    ]


def main(params: str = "params.yaml", root: str = ".") -> None:  # pragma: no cover - long-running
    deployments = build_deployments(params, root)
    os.chdir(Path(root).resolve())  # runs resolve root "." here, at run time
    serve(*deployments)


if __name__ == "__main__":  # pragma: no cover
    main()
