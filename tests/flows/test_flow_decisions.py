"""What the flows decide, decided in the package: the workspace of a run, its backbones, whether to index,
and where the flows themselves come from."""

from __future__ import annotations

import pytest
import yaml

from anchorprune.config import ConfigError
from anchorprune.orchestration import provenance
from anchorprune.orchestration.entrypoints import FlowsNotFoundError, entrypoint, load_flow
from anchorprune.orchestration.pipeline import backbone_names, skip_index_reason
from anchorprune.stages.workspace import Workspace

BACKBONES = [{"name": "a", "kind": "mock", "model_id": "m"}, {"name": "b", "kind": "mock", "model_id": "m"}]


@pytest.fixture
def proj(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({"backbones": BACKBONES, "index": {"backbone": "b"}}))
    return root


def test_workspace_from_params_roots_at_the_file_or_at_root(proj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Workspace.from_params("proj/params.yaml").root == proj.resolve()       # the file's folder
    assert Workspace.from_params("params.yaml", proj).root == proj.resolve()       # relative to root
    assert Workspace.from_params(proj / "params.yaml", tmp_path).root == tmp_path.resolve()  # absolute as is
    with pytest.raises(ConfigError, match="does not exist"):
        Workspace.from_params("params.yaml", tmp_path)


def test_backbone_names_and_when_the_index_is_skipped(proj):
    ws = Workspace.from_params(proj / "params.yaml")
    assert backbone_names(ws) == ["a", "b"] and backbone_names(ws, "b") == ["b"]
    with pytest.raises(ConfigError):
        backbone_names(ws, "nope")
    # the index serves backbone b: only b's champion matters
    assert skip_index_reason(ws, {"a": {"champion": "x"}, "b": {"champion": "y"}}) is None
    why = skip_index_reason(ws, {"a": {"champion": "x"}, "b": {"champion": None}})
    assert why == "no certified champion for b: the index is not built (see reports/promotion/b.json)"
    assert skip_index_reason(ws, {}) is not None


def test_flows_load_by_entrypoint_from_the_checkout(project, tmp_path):
    from prefect import Flow

    flow = load_flow(project, "pipeline.py:pipeline_flow")     # its `from flows.<module>` imports resolve
    assert isinstance(flow, Flow) and flow.name == "pipeline"
    assert entrypoint("pipeline.py:pipeline_flow") == "flows/pipeline.py:pipeline_flow"
    with pytest.raises(FlowsNotFoundError, match=r"flows/pipeline.py does not exist"):
        load_flow(tmp_path, "pipeline.py:pipeline_flow")


def test_flows_of_another_checkout_are_refused(project, tmp_path):
    other = tmp_path / "other"
    (other / "flows").mkdir(parents=True)
    (other / "flows" / "__init__.py").write_text("")
    (other / "flows" / "pipeline.py").write_text("from prefect import flow\n\n@flow\ndef pipeline_flow():\n    pass\n")
    load_flow(project, "pipeline.py:pipeline_flow")          # this process imports the project's flows
    with pytest.raises(FlowsNotFoundError, match="one checkout's flows per process"):
        load_flow(other, "pipeline.py:pipeline_flow")


def test_the_stage_key_covers_the_checkouts_flows(tmp_path):
    root = tmp_path / "proj"
    (root / "flows").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"backbones": BACKBONES}))
    flow_file = root / "flows" / "encode.py"
    flow_file.write_text("X = 1\n")
    assert root / "flows" in provenance.code_dirs(root)
    before = provenance.stage_key("params.yaml", root)
    assert provenance.stage_key("params.yaml", root) == before
    flow_file.write_text("X = 2\n")
    assert provenance.stage_key("params.yaml", root) != before


def test_promote_summary_links_the_champion_run_from_the_provenance_file(tmp_path):
    """The promotion report (a DVC output) holds no run ids; the summary reads them from beside it."""
    from types import SimpleNamespace

    from anchorprune.ioutil import write_json
    from anchorprune.orchestration.summary import promote_markdown
    from anchorprune.provenance import provenance_path

    report = tmp_path / "reports" / "promotion" / "m.json"
    write_json(report, {"promoted": True, "reason": "first champion", "version": 3, "champion": {"name": "sap"}})
    write_json(provenance_path(report), {"champion_run_id": "abcdef0123456789"})
    ws = SimpleNamespace(reports=tmp_path / "reports", tracker=SimpleNamespace(experiment_id="7"),
                         settings=SimpleNamespace(data=SimpleNamespace(identity="-mine")))
    md = promote_markdown(ws, ["m"], ui="http://ui")
    assert "evaluated in [abcdef01](http://ui/#/experiments/7/runs/abcdef0123456789" in md
    assert "**promoted**" in md and "models/anchorprune-m-mine/versions/3" in md   # the dataset's own model
