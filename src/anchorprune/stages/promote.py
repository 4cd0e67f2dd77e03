"""The promote stage: certify the evaluated configs and move the registry's ``champion`` alias by the rule."""

from __future__ import annotations

import logging
from dataclasses import asdict

from anchorprune.config import BackboneConfig
from anchorprune.evaluation.results import EvaluationResult
from anchorprune.ioutil import write_json
from anchorprune.promotion.rule import Candidate, Decision
from anchorprune.stages.evaluate import candidates_from, load_evaluation
from anchorprune.stages.workspace import Workspace

log = logging.getLogger(__name__)


def stage_promote(ws: Workspace, bcfg: BackboneConfig, evaluation: EvaluationResult | None = None) -> Decision:
    from anchorprune.promotion.registry import ChampionSpec, promote

    ws.check_dataset()  # promote reads no pages, but must not promote what a broken dataset scored
    if evaluation is None:
        evaluation = load_evaluation(ws.reports / "evaluation" / f"{bcfg.name}.json", bcfg.name)
    p = ws.settings.promote
    meta = ws.meta(bcfg)
    if evaluation.meta.get("config_hash") not in (None, meta["config_hash"]):
        log.warning("the evaluation of %s was made with config %s, the config is now %s: "
                    "rerun `anchorprune evaluate` for figures of the current config",
                    bcfg.name, evaluation.meta.get("config_hash"), meta["config_hash"])
    t = ws.tracker
    with t.run(f"promote-{bcfg.name}", params={**meta, "min_retention": p.min_retention,
                                               "require_beats_random": p.require_beats_random,
                                               "confidence": p.confidence, "resamples": p.bootstrap_resamples,
                                               "min_queries": p.min_queries},
               tags={"anchorprune.stage": "promote", "anchorprune.backbone": bcfg.name}) as run_id:
        cands = candidates_from(evaluation, bcfg.name, ws)
        revision = evaluation.meta.get("backbone_revision")

        def spec_for(c: Candidate) -> ChampionSpec:
            from anchorprune.windows import window_layers

            return ChampionSpec(backbone=bcfg.model_dump(mode="json"), method=c.method, gamma=c.gamma,
                                window=window_layers(c.window) if c.window else None, candidate=asdict(c),
                                kappa=c.kappa, resolved_revision=revision)

        decision, version = promote(t, run_id, cands, spec_for, p.min_retention, p.require_beats_random,
                                    min_queries=p.min_queries)
    from anchorprune.evaluation.results import PROVENANCE_KEYS, provenance_path
    from anchorprune.promotion.registry import decision_record
    from anchorprune.tracking.outputs import champion_metrics, headline_metrics, update_headline_file

    record = {**decision_record(decision, version, cands), "meta": meta}
    path = ws.reports / "promotion" / f"{bcfg.name}.json"
    # run ids and the commit say which run decided, not what was decided: beside the DVC output, not in it
    write_json(provenance_path(path), {"promote_run_id": run_id, "git_commit": meta.get("git_commit"),
                                       "run_ids": {c["name"]: c.get("run_id") for c in record["candidates"]},
                                       "champion_run_id": (record["champion"] or {}).get("run_id")})
    write_json(path, _without_provenance(record, PROVENANCE_KEYS))
    # the headline metrics (git-tracked, `dvc metrics diff`): the grid's stable keys and the champion's own figures
    # (the champion re-evaluated on this data, whether it moved or stayed)
    update_headline_file(ws.path(ws.settings.paths.metrics_file), bcfg.name,
                         {**headline_metrics(evaluation, bcfg.name),
                          **champion_metrics(bcfg.name, record["champion"], version)})
    return decision


def _without_provenance(obj, keys: tuple[str, ...]):
    """``obj`` without ``run_id`` anywhere and without ``keys`` in ``meta``."""
    if isinstance(obj, dict):
        return {k: _without_provenance(v, keys) for k, v in obj.items()
                if k != "run_id" and not (k in keys and "config_hash" in obj)}
    if isinstance(obj, list):
        return [_without_provenance(v, keys) for v in obj]
    return obj
