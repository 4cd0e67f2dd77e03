"""Publish a flow run's summary (``anchorprune.orchestration.summary``) as a Prefect markdown artifact."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact


def publish(stage: str, markdown: str, description: str = "") -> None:
    """One markdown artifact per flow run, keyed ``anchorprune-<stage>`` (the UI shows each key's history)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"anchorprune-{stage}".lower()).strip("-")
    create_markdown_artifact(markdown=markdown, key=key, description=description or f"anchorprune {stage} summary")
