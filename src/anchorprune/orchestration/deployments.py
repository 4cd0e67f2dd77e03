"""Scheduled deployments: served from one process (`flow.serve` style), or registered on a work pool.

    anchorprune serve                   # serves them from this process
    anchorprune deploy --pool NAME      # then, on any host: prefect worker start --pool NAME

reindex runs nightly and recalibrate (calibrate + evaluate + promote) weekly, with the crons
from params.yaml; each deployment has a concurrency limit of one, so two rebuilds of one
index never run at once.

The deployments hold no absolute path: their entrypoints (``flows/reindex.py:reindex_flow``,
``stages.entrypoints``) and parameters name files relative to the project root, and ``root`` keeps
its default ``"."``, resolved when a run starts (:func:`serve_deployments` serves from the project
root, so a moved or second checkout serves its own files). On a work pool, a pull step
(``anchorprune.orchestration.checkout.enter_project_root``) starts each run in the worker host's checkout:
``$ANCHORPRUNE_ROOT`` there, else the path `anchorprune deploy` ran in.

Rebuilds of one index are serialised twice over: each deployment's ``concurrency_limit=1``
queues a second run of that deployment (server-side, before any worker takes it), and the
reindex flow holds the index's global concurrency limit (``anchorprune.orchestration.concurrency``) around the
build, so runs from different deployments, ad-hoc runs and runs on other hosts wait too.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC
from pathlib import Path
from uuid import UUID

from prefect import get_client, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.runner.storage import LocalStorage
from prefect.schedules import Cron

from anchorprune.orchestration.checkout import enter_project_root
from anchorprune.orchestration.concurrency import ensure_index_limit
from anchorprune.orchestration.entrypoints import entrypoint, load_flow
from anchorprune.orchestration.environment import prefect_api_url
from anchorprune.stages.workspace import Workspace

#: the scheduled flows, as entrypoints under the project root's flows/
REINDEX = "reindex.py:reindex_flow"
RECALIBRATE = "pipeline.py:recalibrate_flow"


def _deployment(root: Path, flow: str, **kwargs) -> RunnerDeployment:
    """The flow at ``flows/<flow>`` of the checkout at ``root`` as a deployment naming it relative to the root."""
    deployment = load_flow(root, flow).to_deployment(entrypoint_type=EntrypointType.FILE_PATH, concurrency_limit=1,
                                                      **kwargs)
    deployment.entrypoint = entrypoint(flow)   # not relative to this process's working directory
    return deployment


def build_deployments(params: str = "params.yaml", root: str = ".") -> list[RunnerDeployment]:
    ws = Workspace.from_params(params, root)
    s = ws.settings.schedule
    # relative to the root, which each run resolves from its working directory (see serve_deployments)
    rel = os.path.relpath(ws.root / params, ws.root)
    args = {"params": rel if not rel.startswith("..") else str((ws.root / params).resolve())}
    return [
        _deployment(ws.root, REINDEX, name=f"reindex-{ws.settings.index.name}",
                    schedule=Cron(s.reindex_cron, timezone=s.timezone), parameters=args,
                    tags=["anchorprune", "index"], description="Rebuild the pruned index from @champion and swap it in."),
        _deployment(ws.root, RECALIBRATE, name="weekly", schedule=Cron(s.recalibrate_cron, timezone=s.timezone),
                    parameters=args, tags=["anchorprune", "calibrate"],
                    description="Calibrate, evaluate and promote every backbone."),
    ]


class DeployError(RuntimeError):
    """Registering the deployments on a work pool failed: no reachable API, or an unusable pool."""


class ProjectCheckout(LocalStorage):
    """The deployments' code and data: a checkout of the project on the worker's host (``stages.checkout``)."""

    def __init__(self, path: str | Path, params: str = "params.yaml"):
        super().__init__(str(path))
        self._params = params

    def to_pull_step(self) -> dict:
        return {f"{enter_project_root.__module__}.{enter_project_root.__name__}":
                {"directory": str(self.destination), "params": self._params}}


def require_prefect_server() -> str:
    """The Prefect server the pool lives on; raises DeployError when it is not set or does not answer."""
    url = prefect_api_url(ephemeral=False)
    if not url:
        raise DeployError("PREFECT_API_URL is not set: a work pool lives on a Prefect server that every worker "
                          "reaches. Start one (`make prefect-ui`) and `export PREFECT_API_URL=http://HOST:4200/api`")
    from anchorprune.redact import redact_text, redact_url
    from anchorprune.servers import ServerUnreachableError, probe

    try:
        probe(url, "Prefect API", "check PREFECT_API_URL and that `prefect server start` runs there")
    except ServerUnreachableError as exc:
        raise DeployError(str(exc)) from None
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        raise DeployError(f"the Prefect API at {redact_url(url)} (PREFECT_API_URL) does not answer: "
                          f"{redact_text(failure)}")
    return url


def ensure_process_pool(pool: str, create: bool = True) -> bool:
    """Make sure ``pool`` exists and is a process pool; returns True when it was created now."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    from anchorprune.redact import redact_url

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            if not create:
                raise DeployError(f"work pool {pool!r} does not exist on {redact_url(str(client.api_url))}: "
                                  "create it with "
                                  f"`prefect work-pool create {pool} --type process`, or deploy without "
                                  "--no-create-pool") from None
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=pool, type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="anchorprune: a worker runs each flow run as a process in its host's checkout"))
                return True
            except ObjectAlreadyExists:  # created by someone else since our read
                found = client.read_work_pool(pool)
    if found.type != ProcessWorker.type:
        raise DeployError(f"work pool {pool!r} is a {found.type!r} pool: the anchorprune deployments run from a "
                          "checkout on the worker's host, on a 'process' pool; pick another --pool name")
    return False


def build_pool_deployments(params: str = "params.yaml", root: str = ".") -> list[RunnerDeployment]:
    """:func:`build_deployments`, with the pull step that starts each run in the worker host's checkout."""
    deployments = build_deployments(params, root)
    for d in deployments:
        d.storage = ProjectCheckout(Path(root).resolve(), d.parameters["params"])
    return deployments


def _registered(deployments: list[RunnerDeployment]) -> dict[str, object]:
    """The deployments of these names already on the server, by "flow/deployment"."""
    found = {}
    with get_client(sync_client=True) as client:
        for d in deployments:
            name = f"{d.flow_name}/{d.name}"
            with contextlib.suppress(ObjectNotFound):
                found[name] = client.read_deployment_by_name(name)
    return found


#: a deployment without a pool polled this recently is being served (Prefect's server marks it
#: not ready after 60 s without a poll; this does not rely on that service running)
SERVED_WITHIN_SECONDS = 90


def refuse_if_served(deployments: list[RunnerDeployment]) -> None:
    """Registering on a pool while ``anchorprune serve`` polls the same deployments would run them in two places."""
    from datetime import datetime

    from prefect.client.schemas.objects import DeploymentStatus

    now = datetime.now(UTC)
    for name, found in _registered(deployments).items():
        polled = found.last_polled
        recently = polled is not None and (now - polled).total_seconds() < SERVED_WITHIN_SECONDS
        if not found.work_pool_name and found.status == DeploymentStatus.READY and recently:
            raise DeployError(f"{name} is being served (`anchorprune serve`, last polled {found.last_polled}): "
                              "stop that process first, or its runs would be taken both there and by the pool's "
                              "workers (a stopped one counts as served for 90 s after its last poll)")


def refuse_if_on_pool(deployments: list[RunnerDeployment]) -> None:
    """``serve`` would take over a pool's deployments (and drop their pull step, so the pool's workers would fail)."""
    for name, found in _registered(deployments).items():
        if found.work_pool_name:
            raise DeployError(f"{name} is registered on work pool {found.work_pool_name!r} (`anchorprune deploy`): "
                              f"its workers run it. To serve it from this process instead, delete it first: "
                              f"prefect deployment delete '{name}'")


def deploy_to_pool(pool: str, params: str = "params.yaml", root: str = ".",
                   create_pool: bool = True) -> dict[str, UUID]:
    """Register the scheduled deployments on a process work pool: same crons, limits and parameters as serve.

    Creates the pool (unless ``create_pool=False``) and the index's global concurrency limit
    when missing; re-running updates the deployments in place. Returns ``{"flow/deployment": id}``.
    """
    require_prefect_server()
    ws = Workspace.from_params(params, root)  # a bad config fails before any change
    deployments = build_pool_deployments(params, root)
    refuse_if_served(deployments)
    ensure_process_pool(pool, create=create_pool)
    ensure_index_limit(ws.settings.index.name)
    return {f"{d.flow_name}/{d.name}": d.apply(work_pool_name=pool) for d in deployments}


def serve_deployments(params: str = "params.yaml", root: str = ".") -> None:  # pragma: no cover - long-running
    """Serve the scheduled deployments from this process, in the project root (runs resolve root "." there)."""
    deployments = build_deployments(params, root)
    refuse_if_on_pool(deployments)
    os.chdir(Path(root).resolve())
    serve(*deployments)
