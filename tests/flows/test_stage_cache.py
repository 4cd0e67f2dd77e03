"""A real Prefect task with the stage cache policy: a rerun is served from cache only if nothing changed."""

from __future__ import annotations

import pytest
from flows.common import STAGE_CACHE
from prefect import flow, task

pytestmark = pytest.mark.slow
CALLS: list[str] = []


@task(name="count-stage", **STAGE_CACHE)
def count_stage(params: str, root: str) -> int:
    CALLS.append(root)
    return len(CALLS)


@flow(name="cache-probe")
def probe(params: str, root: str) -> int:
    return count_stage(params, root)


def test_data_change_reruns_the_cached_task(project):
    CALLS.clear()
    probe("params.yaml", str(project))
    probe("params.yaml", str(project))
    assert len(CALLS) == 1                                  # unchanged: answered from cache
    pages = project / "data" / "synth" / "manifest.json"
    pages.write_bytes(pages.read_bytes() + b"\n")           # an untracked data edit
    probe("params.yaml", str(project))
    assert len(CALLS) == 2                                  # recomputed, not last week's result
