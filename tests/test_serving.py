"""Every method can be champion and serve: build, unchanged rebuild, search and pyfunc predict, all from one spec."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from anchorprune.config import load_settings
from anchorprune.promotion.registry import ChampionSpec, _pyfunc_class
from anchorprune.promotion.rule import Candidate
from anchorprune.stages.index import stage_index
from anchorprune.stages.search import serving_spec, stage_search
from anchorprune.stages.workspace import Workspace
from synth import build_synth

N = 8
SPEC_BACKBONE = {"name": "mock", "kind": "mock", "model_id": "anchorprune/mock-planted", "batch_size": 3}
METHODS = {  # method -> (window, kappa)
    "sap": ([2, 3], None),
    "anchor_merge": ([2, 3], None),
    "anchor_kmeans": ([2, 3], None),
    "eos_adaptive": (None, 1.0),
    "eos_topk": (None, None),
    "random": (None, None),
    "cluster_merge": (None, None),
    "hier_pool": (None, None),
}


@pytest.fixture
def project(tmp_path, tracking_config):
    root = tmp_path / "proj"
    root.mkdir()
    build_synth(root, N)
    params = {"data": {"dataset": "synth"},
              # the config's backbone differs from the champion's (batch size): serving must follow the champion
              "backbones": [{**SPEC_BACKBONE, "batch_size": 8}],
              "index": {"backend": "local", "name": "t", "dtype": "float32"},
              "tracking": {"uri": tracking_config.uri, "artifact_root": str(tracking_config.artifact_root)}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _exact_top(ws: Workspace, spec: ChampionSpec, query: str, k: int) -> list[tuple[str, float]]:
    """Top-k (page id, MaxSim) over every page pruned with the spec's pruner: the definition, not the index."""
    from anchorprune.evaluation.scoring import maxsim
    from anchorprune.stages.encode import load_corpus

    bcfg = spec.backbone_config()
    backbone = Workspace.backbone(ws, bcfg)
    corpus = load_corpus(ws, bcfg, backbone)
    pruner = spec.pruner()
    ids = sorted(corpus.features)
    pages = [pruner.prune(corpus.features[pid], spec.gamma).vectors.float() for pid in ids]  # [k_i, d] each
    scores = maxsim(backbone.encode_queries([query])[0].float(), pages)                      # [P]
    ranked = sorted(zip(ids, scores.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
    return ranked[:k]


def spec_for(method: str) -> tuple[Candidate, ChampionSpec]:
    window, kappa = METHODS[method]
    w = f"{window[0]}-{window[-1]}" if window else None
    cand = Candidate("mock", method, 0.25, w, 0.95, 8.0, 0.5, kappa=kappa)
    return cand, ChampionSpec(backbone=SPEC_BACKBONE, method=method, gamma=0.25, window=window, version="1",
                              kappa=kappa, resolved_revision="L8-d16-n32-a3")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_serves_from_its_spec(project, method, monkeypatch):
    import anchorprune.promotion.registry as registry

    cand, spec = spec_for(method)
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    ws = Workspace(load_settings(project / "params.yaml"), project)
    asked = []
    real = Workspace.backbone
    monkeypatch.setattr(Workspace, "backbone", lambda self, cfg: asked.append(cfg) or real(self, cfg))

    first = stage_index(ws)
    assert first.pages == N and first.reencoded_pages == N
    again = stage_index(ws)                    # unchanged nightly rebuild: nothing recomputed (κ from the spec)
    assert (again.reused_pages, again.reencoded_pages) == (N, 0)
    assert serving_spec(ws) == spec

    asked.clear()
    query = "which page is about topic:t3?"
    hits = stage_search(ws, query, k=3)
    assert [c.batch_size for c in asked] == [3]   # the query encoder is the champion's backbone, not params'
    # the hits are the exact MaxSim top 3 over pages pruned from the spec, computed here independently
    expected = _exact_top(ws, spec, query, k=3)
    assert [h.page_id for h in hits] == [pid for pid, _ in expected]
    assert [h.score for h in hits] == pytest.approx([sc for _, sc in expected], abs=1e-4)
    if method in ("sap", "eos_topk", "hier_pool", "cluster_merge"):
        assert hits[0].page_id == "p3"

    # the pyfunc builds the same pruner from the same spec (no κ recomputed)
    model = _pyfunc_class()()
    cfg = project / "config.json"
    cfg.write_text(spec.to_json())
    model.load_context(type("Ctx", (), {"artifacts": {"config": str(cfg)}})())
    out = model.predict(None, pd.DataFrame({"page_id": ["a", "b"], "text": ["topic:x", "topic:y"]}))
    assert list(out["page_id"]) == ["a", "b"] and all(n >= 1 for n in out["n_vectors"])
    if method == "eos_adaptive":
        assert model.pruner.kappa == 1.0


def test_eos_adaptive_spec_without_kappa_is_refused():
    _, spec = spec_for("eos_adaptive")
    old = ChampionSpec(**{**json.loads(spec.to_json()), "kappa": None})
    with pytest.raises(ValueError, match="without its kappa"):
        old.pruner()


def test_sap_max_is_refused_by_the_config(tmp_path):
    from anchorprune.config import ConfigError

    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"evaluate": {"methods": ["sap", "sap_max"]}}))
    with pytest.raises(ConfigError, match="'sap_max' is not available"):
        load_settings(tmp_path / "p.yaml")


def test_index_stage_encodes_and_prunes_a_chunk_at_a_time(project, monkeypatch):
    """The index build consumes a generator: at most one chunk of features is alive, whatever the corpus size
    (all-layer features of 10k pages would be ~10 GB). Same index as encoding everything at once."""
    import anchorprune.features.encoding as encoding
    import anchorprune.promotion.registry as registry
    import anchorprune.stages.index as stages
    from anchorprune.index.local import LocalIndex

    cand, spec = spec_for("sap")
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    monkeypatch.setattr(stages, "INDEX_CHUNK_PAGES", 3)
    calls, alive, peak = [], [0], [0]
    real_encode = encoding.encode_pages

    def counting(backbone, pages, *a, **kw):
        pages = list(pages)
        calls.append(len(pages))
        feats = real_encode(backbone, pages, *a, **kw)
        alive[0] += len(feats)
        peak[0] = max(peak[0], alive[0])
        return feats

    real_prune = type(spec.pruner()).prune

    def prune(self, f, gamma):
        alive[0] -= 1
        return real_prune(self, f, gamma)

    monkeypatch.setattr(encoding, "encode_pages", counting)
    monkeypatch.setattr(type(spec.pruner()), "prune", prune)
    ws = Workspace(load_settings(project / "params.yaml"), project)
    info = stage_index(ws)
    assert info.pages == N and calls == [3, 3, 2] and peak[0] <= 3
    idx = LocalIndex(project / "indexes", ws.settings.index.name)     # 't-synth': the dataset's own index
    assert sorted(idx.existing_hashes()) == [f"p{i}" for i in range(N)]


@pytest.mark.parametrize("accelerated", [False, True])
def test_cli_search_prints_the_compute_path_of_a_bfloat16_index(project, monkeypatch, accelerated):
    """`anchorprune index search` names float32/bfloat16 compute and whether bf16 was accelerated."""
    from typer.testing import CliRunner

    import anchorprune.evaluation.bf16 as bf16
    import anchorprune.promotion.registry as registry
    from anchorprune.cli import app

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["index"]["dtype"] = "bfloat16"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    cand, spec = spec_for("sap")
    monkeypatch.setattr(registry, "current_champion", lambda tracker, backbone, identity=None: (cand, spec))
    monkeypatch.setattr(registry, "stale_reason", lambda tracker, backbone, identity=None: None)
    monkeypatch.setattr(bf16, "bf16_accelerated", lambda: accelerated)
    stage_index(Workspace(load_settings(project / "params.yaml"), project))

    out = CliRunner().invoke(app, ["index", "search", "which page is about topic:t3?", "-k", "3",
                                   "--params", str(project / "params.yaml")])
    assert out.exit_code == 0, out.output
    line = out.output.strip().splitlines()[-1]
    assert out.output.strip().splitlines()[-2].startswith("first stage: none, exact MaxSim over all ")
    if accelerated:
        assert line.startswith("scoring: bfloat16 compute (accelerated) over bfloat16 vectors")
        assert f"top {min(N, 3 + 50)} per query rescored in float32" in line
    else:
        assert line == ("scoring: float32 compute over bfloat16 vectors "
                        "(bf16 not accelerated on this CPU: float32 fallback)")
    assert "p3" in out.output.splitlines()[1]          # the best hit, as before
