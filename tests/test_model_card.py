"""The champion version's model card, input example and searchable tags; the replaced version's tag."""

from __future__ import annotations

import pytest

from anchorprune.promotion.registry import REPLACED_TAG, model_name, promote
from anchorprune.tracking.tracker import Tracker
from test_registry import cand, spec_for


@pytest.fixture
def tracker(tracking_config, tmp_path):
    return Tracker.from_config(tracking_config, tmp_path)


def test_card_example_tags_and_replaced(tracker):
    def card_for(c):
        return f"## {c.name}\n- window {c.window}", {"anchorprune.data_version": "abc123"}

    for cands in ([cand(0.1, 10, 0.95)], [cand(0.05, 5, 0.93), cand(0.1, 10, 0.95)]):
        with tracker.run("promote-mock") as run_id:
            promote(tracker, run_id, cands, spec_for, min_retention=0.9, card_for=card_for)
    name = model_name("mock")
    v2 = tracker.client.get_model_version(name, "2")
    assert v2.description.startswith("## sap@0.05[2-3]") and "**Why**" in v2.description
    assert v2.tags["anchorprune.data_version"] == "abc123" and v2.tags["anchorprune.method"] == "sap"
    found = tracker.client.search_model_versions(f"name = '{name}' and tags.`anchorprune.data_version` = 'abc123'")
    assert {str(m.version) for m in found} == {"1", "2"}
    v1 = tracker.client.get_model_version(name, "1")
    assert "replaced by v2 (sap@0.05[2-3])" in v1.tags[REPLACED_TAG]
    assert REPLACED_TAG not in v2.tags

    import mlflow.artifacts
    from mlflow.models import Model
    uri = tracker.client.get_model_version_download_uri(name, "2")
    path = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracker.uri)
    assert Model.load(path).saved_input_example_info is not None
