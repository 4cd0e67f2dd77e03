"""The dvc.yaml plot templates (.dvc/plots/) fill and render offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anchorprune.tracking.dvc_plots import render_page

ROOT = Path(__file__).parents[1]


def fill(template: str, **anchors) -> dict:
    """What DVC does to a template: replace each "<DVC_METRIC_X>" string with its value."""
    def sub(node):
        if isinstance(node, dict):
            return {k: sub(v) for k, v in node.items() if sub(v) is not None}
        if isinstance(node, list):
            return [sub(v) for v in node]
        if isinstance(node, str) and node.startswith("<DVC_METRIC_"):
            return anchors.get(node[len("<DVC_METRIC_"):-1].lower())
        return node
    return sub(json.loads((ROOT / ".dvc" / "plots" / template).read_text()))


@pytest.mark.parametrize("template", ["retention_by_method.json", "sr_by_layer.json"])
def test_templates_are_wired_in_dvc_yaml(template):
    import yaml

    names = [next(iter(p.values()))["template"] for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    assert template.removesuffix(".json") in names


def test_retention_plot_colours_methods_and_renders_offline():
    rows = [{"method": m, "gamma": g, "ndcg_retention": r, "window_spec": w, "backbone": "b", "rev": "workspace"}
            for m, w, base in (("sap", "sr", 0.9), ("random", "", 0.7), ("full", "", 1.0))
            for g, r in ((0.2, base), (0.1, base - 0.1))]
    spec = fill("retention_by_method.json", data=rows, x="gamma", y="ndcg_retention", title="t",
                x_label="gamma", y_label="retention")
    assert spec["encoding"]["color"]["field"] == "config"
    page = render_page({"retention": spec})
    assert page.count("<svg") == 1 and "<script" not in page and "http" not in page.split("<svg")[0]
    assert "sap [sr]" in page and "random" in page and ">full<" not in page   # full is filtered out


def test_sr_plot_has_ordinal_layers():
    spec = fill("sr_by_layer.json", data=[{"layer": i, "sr_mean": 0.5 + i / 10} for i in range(4)],
                x="layer", y="sr_mean", title="t", x_label="layer", y_label="SR")
    assert spec["encoding"]["x"]["type"] == "ordinal"
    page = render_page({"sr": spec})
    assert all(f">{i}</text>" in page for i in range(4))                 # one tick per layer
    assert ">1.5</text>" not in page and ">2.5</text>" not in page      # no fractional layer ticks


def test_a_revision_without_plots_data_is_refused(tmp_path):
    import subprocess

    from anchorprune.tracking.dvc_plots import PlotsError, check_revisions

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "old")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "sr_by_layer.csv").write_text("backbone,layer,sr_mean\nb,0,0.5\n")
    git("add", "plots")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "new")
    check_revisions(tmp_path, ["HEAD", "workspace"], ("plots/sr_by_layer.csv",))
    with pytest.raises(PlotsError, match="revision 'HEAD~1' has no plots/sr_by_layer.csv in git"):
        check_revisions(tmp_path, ["HEAD~1"], ("plots/sr_by_layer.csv",))
