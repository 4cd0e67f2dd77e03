"""The scheduled deployments: created with their crons, and a triggered run completes."""

from __future__ import annotations

import asyncio

import pytest
from flows.deployments import build_deployments

pytestmark = pytest.mark.slow


def test_deployments_have_crons_and_concurrency_limit(project):
    deps = {d.name: d for d in build_deployments("params.yaml", str(project))}
    assert set(deps) == {"reindex-test-index", "weekly"}
    assert deps["reindex-test-index"].schedules[0].schedule.cron == "0 2 * * *"
    assert deps["weekly"].schedules[0].schedule.cron == "0 3 * * 0"
    assert deps["reindex-test-index"].entrypoint == "flows.reindex.reindex_flow"
    for d in deps.values():
        limit = d.concurrency_limit
        assert (limit if isinstance(limit, int) else limit.limit) == 1


def test_triggered_deployment_run_completes(project):
    from flows.pipeline import pipeline_flow
    from prefect import get_client
    from prefect.runner import Runner

    pipeline_flow(params="params.yaml", root=str(project))  # a champion and a first index version exist
    (weekly,) = [d for d in build_deployments("params.yaml", str(project)) if d.name == "weekly"]

    async def trigger_and_run():
        runner = Runner(query_seconds=1)
        deployment_id = await runner.add_deployment(weekly)
        async with get_client() as client:
            dep = await client.read_deployment(deployment_id)
            assert dep.schedules[0].schedule.cron == "0 3 * * 0"
            flow_run = await client.create_flow_run_from_deployment(deployment_id)
            await runner.start(run_once=True)
            return await client.read_flow_run(flow_run.id)

    finished = asyncio.run(trigger_and_run())
    assert finished.state.is_completed(), finished.state
