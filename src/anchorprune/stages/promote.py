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
                                    min_queries=p.min_queries, identity=ws.settings.data.identity)
    from anchorprune.promotion.registry import decision_record

    write_json(ws.reports / "promotion" / f"{bcfg.name}.json", {**decision_record(decision, version, cands),
                                                                "meta": meta})
    return decision
