"""The deployments on a process work pool: registered like serve's, run by workers the tests start,
and two rebuilds of one index serialised by the index's global concurrency limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anchorprune.orchestration.checkout import (
    ROOT_ENV,
    ProjectRootError,
    enter_project_root,
    project_root_for_run,
)
from anchorprune.orchestration.concurrency import ensure_index_limit, index_limit_name
from anchorprune.orchestration.deployments import (
    DeployError,
    ProjectCheckout,
    deploy_to_pool,
    ensure_process_pool,
    require_prefect_server,
)

REPO = Path(__file__).resolve().parents[2]
POOL = "anchorprune-test"
INDEX = "test-index"


@pytest.fixture(autouse=True)
def no_leftover_deployments():
    """Deployments that other test modules served (their Runner is gone) would otherwise look served here."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for d in client.read_deployments():
            client.delete_deployment(d.id)


# --- the pull step: which checkout a run starts in ---------------------------------------------

def test_run_starts_in_the_deploying_checkout_or_in_anchorprune_root(tmp_path, monkeypatch):
    deployed, here = tmp_path / "deployed", tmp_path / "this-host"
    for d in (deployed, here):
        d.mkdir()
        (d / "params.yaml").write_text("{}\n")
    monkeypatch.delenv(ROOT_ENV, raising=False)
    assert project_root_for_run(str(deployed)) == deployed.resolve()
    monkeypatch.setenv(ROOT_ENV, str(here))
    monkeypatch.chdir(tmp_path)
    assert enter_project_root(str(deployed)) == {"directory": str(here.resolve())}
    assert Path.cwd() == here.resolve()


def test_a_host_without_the_checkout_is_told_to_set_anchorprune_root(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    with pytest.raises(ProjectRootError, match=r"is not a folder on this host: set ANCHORPRUNE_ROOT"):
        project_root_for_run(str(tmp_path / "elsewhere"))
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(ProjectRootError, match=r"\$ANCHORPRUNE_ROOT\) has no params.yaml"):
        project_root_for_run("/nonexistent")


# --- registering: API, pool and limit checks (the session's Prefect test server) ---------------

def test_deploy_needs_a_reachable_prefect_api():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}), \
            pytest.raises(DeployError, match="PREFECT_API_URL is not set"):
        require_prefect_server()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), \
            pytest.raises(DeployError, match=r"Prefect API at http://127.0.0.1:9/api does not answer .*check PREFECT_API_URL"):
        require_prefect_server()
    # credentials in the URL never show; a closed port fails within the connect budget, in one line
    with temporary_settings(updates={PREFECT_API_URL: "http://u:p@ss:w%rd@127.0.0.1:9/api"}), \
            pytest.raises(DeployError) as info:
        require_prefect_server()
    assert "p@ss" not in str(info.value) and "w%rd" not in str(info.value) and "\n" not in str(info.value)
    assert "http://***@127.0.0.1:9/api" in str(info.value)


def test_pool_is_created_once_and_must_be_a_process_pool():
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with pytest.raises(DeployError, match="work pool 'no-such-pool' does not exist"):
        ensure_process_pool("no-such-pool", create=False)
    assert ensure_process_pool("created-here") is True
    assert ensure_process_pool("created-here") is False  # idempotent
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("created-here").type == "process"
        client.create_work_pool(WorkPoolCreate(name="k8s-pool", type="kubernetes"))
    with pytest.raises(DeployError, match="'k8s-pool' is a 'kubernetes' pool"):
        ensure_process_pool("k8s-pool")


def test_index_limit_is_created_with_one_slot_and_left_alone_once_set():
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    first = ensure_index_limit("limit-probe")
    assert (first.name, first.limit, first.active) == ("reindex-limit-probe", 1, True)
    assert ensure_index_limit("limit-probe").id == first.id  # idempotent
    with get_client(sync_client=True) as client:  # an operator's choice is kept (with a warning)
        client.update_global_concurrency_limit("reindex-limit-probe", GlobalConcurrencyLimitUpdate(limit=3))
    assert ensure_index_limit("limit-probe").limit == 3


def test_deploy_command_registers_on_a_pool_or_names_the_unreachable_api():
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from anchorprune.cli import app

    params = str(REPO / "params.yaml")  # the project's own config: the demo index 'anchorprune'
    res = CliRunner().invoke(app, ["deploy", "--pool", "cli-pool", "--params", params])
    assert res.exit_code == 0, res.output
    assert "reindex/reindex-anchorprune: on work pool cli-pool, cron '0 2 * * *' (UTC)" in res.output
    assert "recalibrate/weekly: on work pool cli-pool, cron '0 3 * * 0' (UTC)" in res.output
    assert "global concurrency limit reindex-anchorprune" in res.output
    assert "prefect worker start --pool cli-pool" in res.output
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        res = CliRunner().invoke(app, ["deploy", "--pool", "cli-pool", "--params", params])
    assert res.exit_code == 1
    assert "error: Prefect API at http://127.0.0.1:9/api does not answer" in res.output
    assert "check PREFECT_API_URL" in res.output and len(res.output.strip().splitlines()) == 1


def test_serve_and_a_pool_never_hold_the_same_deployments(tmp_path):
    """One deployment, one way of running it: serve's process or the pool's workers, never both."""
    import yaml
    from prefect import get_client

    from anchorprune.orchestration.deployments import build_deployments, refuse_if_on_pool, refuse_if_served

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["index"]["name"] = "guard-index"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "flows").symlink_to(REPO / "flows")   # a checkout: its flows next to params.yaml
    # the reindex deployment only: recalibrate/weekly has one name on every project, and earlier tests registered it
    served = [d for d in build_deployments("params.yaml", str(tmp_path)) if d.flow_name == "reindex"]
    refuse_if_served(served)  # nothing registered yet
    ids = [d.apply() for d in served]  # what serve registers: no pool
    refuse_if_on_pool(served)
    with get_client(sync_client=True) as client:
        client.get_scheduled_flow_runs_for_deployments(deployment_ids=ids)  # a serve process polls them
    with pytest.raises(DeployError, match=r"reindex/reindex-guard-index is being served \(`anchorprune serve`"):
        deploy_to_pool("guard-pool", "params.yaml", str(tmp_path))
    with get_client(sync_client=True) as client:
        assert not [p for p in client.read_work_pools() if p.name == "guard-pool"]  # refused before any change
        for i in ids:
            client.delete_deployment(i)
    deploy_to_pool("guard-pool", "params.yaml", str(tmp_path))
    with pytest.raises(DeployError, match=r"reindex/reindex-guard-index is registered on work pool 'guard-pool'.*"
                                          r"prefect deployment delete 'reindex/reindex-guard-index'"):
        refuse_if_on_pool(served)


# --- workers ----------------------------------------------------------------------------------

@pytest.fixture
def start_worker(tmp_path):
    """Start `prefect worker start --pool POOL` subprocesses (one flow run at a time each); all killed at teardown."""
    from prefect.settings import PREFECT_API_URL

    started: list[tuple[subprocess.Popen, Path]] = []
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1",
           # this checkout's package in the worker and in the flow runs it starts, whatever the venv has installed;
           # the flows come from the run's checkout (its entrypoint), not from the path
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop(ROOT_ENV, None)

    def start(name: str) -> Path:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process",
             "--name", name, "--limit", "1"],
            cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        started.append((proc, log))
        return log

    yield start
    for proc, _ in started:  # the worker and the flow-run processes it started (its own process group)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the worker stops polling and exits
    for proc, _ in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def serving_version(root: Path) -> int:
    from anchorprune.config import load_settings
    from anchorprune.stages.index import open_serving_index
    from anchorprune.stages.workspace import Workspace

    return open_serving_index(Workspace(load_settings(root / "params.yaml"), root)).current().number


def wait_for(predicate, what: str, timeout: float, logs: list[Path] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def read_run(run_id):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def all_final(run_ids) -> list | None:
    runs = [read_run(r) for r in run_ids]
    return runs if all(r.state.is_final() for r in runs) else None


def build_tasks(run_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="build-and-swap-index")))


def run_logs(run_id) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return "\n".join(r.message for r in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))


@pytest.mark.slow
def test_pool_deployment_runs_to_completion_on_a_worker(served_project, start_worker):
    from prefect import get_client

    ids = deploy_to_pool(POOL, "params.yaml", str(served_project))
    assert set(ids) == {f"reindex/reindex-{INDEX}", "recalibrate/weekly"}
    assert deploy_to_pool(POOL, "params.yaml", str(served_project)) == ids  # re-running updates in place
    with get_client(sync_client=True) as client:
        deps = {name: client.read_deployment(i) for name, i in ids.items()}
        limit = client.read_global_concurrency_limit_by_name(index_limit_name(INDEX))
    reindex = deps[f"reindex/reindex-{INDEX}"]
    # what serve registers, on the pool: crons, one run at a time, params relative to the checkout
    assert reindex.work_pool_name == POOL and deps["recalibrate/weekly"].work_pool_name == POOL
    assert reindex.schedules[0].schedule.cron == "0 2 * * *"
    assert deps["recalibrate/weekly"].schedules[0].schedule.cron == "0 3 * * 0"
    assert reindex.global_concurrency_limit.limit == 1  # deployment's own limit
    assert reindex.parameters == {"params": "params.yaml"}
    assert reindex.entrypoint == "flows/reindex.py:reindex_flow"   # loaded from the checkout, by path
    assert reindex.pull_steps == [ProjectCheckout(served_project).to_pull_step()]
    assert (limit.limit, limit.active) == (1, True)

    before = serving_version(served_project)
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(reindex.id, parameters={"force": True})
    log = start_worker("worker-a")  # started in a temp folder: the pull step moves the run into the checkout
    (final,) = wait_for(lambda: all_final([run.id]), "the reindex run", 300, [log])
    assert final.state.is_completed(), (final.state, log.read_text()[-3000:])
    assert serving_version(served_project) == before + 1
    assert str(run.id) in log.read_text()
    assert f"holding {index_limit_name(INDEX)}" in run_logs(run.id)


@pytest.mark.slow
def test_two_reindex_runs_on_two_workers_are_serialised_by_the_index_limit(served_project, start_worker):
    """Two deployments rebuild one index (their own deployment limits do not see each other's runs)."""
    from prefect import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.deployments.runner import EntrypointType

    from anchorprune.orchestration.entrypoints import entrypoint, load_flow

    ids = deploy_to_pool(POOL, "params.yaml", str(served_project))
    adhoc = load_flow(served_project, "reindex.py:reindex_flow").to_deployment(
        name="adhoc", parameters={"params": "params.yaml"}, entrypoint_type=EntrypointType.FILE_PATH)
    adhoc.entrypoint = entrypoint("reindex.py:reindex_flow")
    adhoc.storage = ProjectCheckout(served_project)
    deployment_ids = [ids[f"reindex/reindex-{INDEX}"], adhoc.apply(work_pool_name=POOL)]
    before = serving_version(served_project)

    # another host is rebuilding the index: it holds the slot while both runs start on two workers
    with concurrency(index_limit_name(INDEX), occupy=1, strict=True):
        with get_client(sync_client=True) as client:
            runs = [client.create_flow_run_from_deployment(i, parameters={"force": True}).id
                    for i in deployment_ids]
        logs = [start_worker("worker-a"), start_worker("worker-b")]
        wait_for(lambda: all("waiting for global concurrency limit" in run_logs(r) for r in runs),
                 "both runs to reach the index limit", 300, logs)
        time.sleep(5)  # without the limit, both builds would start now
        assert [build_tasks(r) for r in runs] == [[], []], "a build started while another host held the index"
        assert serving_version(served_project) == before
        assert all(read_run(r).state.is_running() for r in runs)
    # the slot is free: the two runs rebuild one after the other
    finals = wait_for(lambda: all_final(runs), "both reindex runs", 300, logs)
    assert all(f.state.is_completed() for f in finals), [f.state for f in finals]
    (a,), (b,) = (build_tasks(r) for r in runs)
    assert a.run_count == b.run_count == 1  # neither was refused by the index's file lock and retried
    first, second = sorted([a, b], key=lambda t: t.start_time)
    assert first.end_time <= second.start_time, "the two builds overlapped"
    assert serving_version(served_project) == before + 2
    # one run on each worker: a run's own log lines come out of the worker whose process ran it (both
    # workers may try to submit one run; the server lets one have it and the other logs "Aborted submission")
    texts = [p.read_text() for p in logs]
    ran = [[f"Flow run '{f.name}' - holding {index_limit_name(INDEX)}" in t for t in texts] for f in finals]
    assert sorted(ran) == [[False, True], [True, False]], ran
