"""Scheduled deployments served from one process (`flow.serve` style, no work pool).

    anchorprune serve            # or: python -m flows.deployments

reindex runs nightly and recalibrate (calibrate + evaluate + promote) weekly, with the crons
from params.yaml; each deployment has a concurrency limit of one, so two rebuilds of one
index never run at once.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from anchorprune.config import load_settings
from flows.pipeline import recalibrate_flow
from flows.reindex import reindex_flow


def build_deployments(params: str = "params.yaml", root: str = "."):
    root_path = Path(root).resolve()
    cfg = load_settings(root_path / params if not Path(params).is_absolute() else Path(params))
    s = cfg.schedule
    args = {"params": params, "root": str(root_path)}
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
    serve(*build_deployments(params, root))


if __name__ == "__main__":  # pragma: no cover
    main()
