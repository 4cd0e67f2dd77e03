"""The scheduled deployments: created with their crons, and a triggered run completes."""

from __future__ import annotations

import asyncio

import pytest

from anchorprune.orchestration.deployments import build_deployments

pytestmark = pytest.mark.slow


def test_deployments_have_crons_and_concurrency_limit(project):
    deps = {d.name: d for d in build_deployments("params.yaml", str(project))}
    assert set(deps) == {"reindex-test-index", "weekly"}
    assert deps["reindex-test-index"].schedules[0].schedule.cron == "0 2 * * *"
    assert deps["weekly"].schedules[0].schedule.cron == "0 3 * * 0"
    assert deps["reindex-test-index"].entrypoint == "flows/reindex.py:reindex_flow"   # relative to the root
    assert deps["weekly"].entrypoint == "flows/pipeline.py:recalibrate_flow"
    for d in deps.values():
        limit = d.concurrency_limit
        assert (limit if isinstance(limit, int) else limit.limit) == 1
        # no checkout path baked in: params relative to the root, root resolved when a run starts
        assert d.parameters == {"params": "params.yaml"}, d.parameters
        assert str(project) not in repr(d.parameters)


def test_triggered_deployment_run_completes(project, monkeypatch):
    from flows.pipeline import pipeline_flow
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runner import Runner

    from anchorprune.config import load_settings
    from anchorprune.stages.index import open_serving_index
    from anchorprune.stages.workspace import Workspace

    pipeline_flow(params="params.yaml", root=str(project))  # a champion and a first index version exist
    deps = {d.name: d for d in build_deployments("params.yaml", str(project))}
    monkeypatch.chdir(project)  # what `anchorprune serve` does: runs resolve root "." from here
    ws = Workspace(load_settings(project / "params.yaml"), project)
    versions_before = [v.number for v in open_serving_index(ws).versions()]

    async def trigger_and_run(name: str):
        runner = Runner(query_seconds=1)
        deployment_id = await runner.add_deployment(deps[name])
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(deployment_id)
            await runner.start(run_once=True)
            run = await client.read_flow_run(flow_run.id)
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
            return run, arts

    finished, arts = asyncio.run(trigger_and_run("weekly"))
    assert finished.state.is_completed(), finished.state
    recal = [a for a in arts if a.key == "anchorprune-recalibrate"]
    assert recal and "### promote" in recal[0].data and "/#/experiments/" in recal[0].data

    # a triggered reindex with champion, data and index config unchanged: completes, builds no version
    finished, arts = asyncio.run(trigger_and_run("reindex-test-index"))
    assert finished.state.is_completed(), finished.state
    assert [v.number for v in open_serving_index(ws).versions()] == versions_before
    (summary,) = [a for a in arts if a.key == "anchorprune-reindex"]
    assert "unchanged at v" in summary.data and "nothing rebuilt" in summary.data
