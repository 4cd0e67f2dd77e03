"""The promote stage: certify the evaluated configs and move the registry's ``champion`` alias by the rule."""

from __future__ import annotations

import logging
from dataclasses import asdict

from anchorprune.config import BackboneConfig
from anchorprune.evaluation.results import EvaluationResult
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

        def card_for(c: Candidate) -> tuple[str, dict[str, str]]:
            return model_card(ws, bcfg, c, evaluation, run_id, decision_reason=None), {
                "anchorprune.data_version": str(meta.get("data_version")),
                "anchorprune.dataset": str(meta.get("dataset")),
                "anchorprune.window_source": _window_source(evaluation, c) or "-",
                "anchorprune.evaluation_run_id": evaluation.parent_run_id or "-"}

        decision, version = promote(t, run_id, cands, spec_for, p.min_retention, p.require_beats_random,
                                    min_queries=p.min_queries, card_for=card_for, identity=ws.settings.data.identity)
    from anchorprune.promotion.registry import decision_record
    from anchorprune.provenance import strip_run_ids, write_report
    from anchorprune.tracking.outputs import champion_metrics, headline_metrics, update_headline_file

    record = {**decision_record(decision, version, cands), "meta": meta}
    path = ws.reports / "promotion" / f"{bcfg.name}.json"
    # run ids and the commit say which run decided, not what was decided: beside the DVC output, not in it
    # so is what this run did to the registry (promoted, or the alias stayed): a rerun on the same evaluation
    # decides the same champion but moves nothing, and must leave the DVC output (and dvc.lock) as it was
    write_report(path, strip_run_ids({k: v for k, v in record.items() if k not in EVENT_KEYS}),
                 {"promote_run_id": run_id, "git_commit": meta.get("git_commit"),
                  "run_ids": {c["name"]: c.get("run_id") for c in record["candidates"]},
                  "champion_run_id": (record["champion"] or {}).get("run_id"),
                  **{k: record[k] for k in EVENT_KEYS}})
    # the headline metrics (git-tracked, `dvc metrics diff`): the grid's stable keys and the champion's own figures
    # (the champion re-evaluated on this data, whether it moved or stayed)
    update_headline_file(ws.path(ws.settings.paths.metrics_file), bcfg.name,
                         {**headline_metrics(evaluation, bcfg.name),
                          **champion_metrics(bcfg.name, record["champion"], version)})
    return decision


#: what a promote run did to the registry, kept beside the report with the run ids
EVENT_KEYS = ("promoted", "reason")


def _window_source(evaluation: EvaluationResult, c: Candidate) -> str | None:
    cfg = evaluation.find(c.method, c.gamma, c.window)
    return cfg.window_source if cfg else None


def model_card(ws: Workspace, bcfg: BackboneConfig, c: Candidate, evaluation: EvaluationResult, promote_run: str,
               decision_reason: str | None = None) -> str:
    """The registered version's description: what it is, how it was certified, on what, and where that is logged."""
    from anchorprune.tracking.links import run_link

    meta = evaluation.meta
    exp = ws.tracker.experiment_id
    cfg = evaluation.find(c.method, c.gamma, c.window)
    pct = f"{100 * (c.confidence or 0.95):g}%"
    lines = [
        f"## {c.name} on {bcfg.name}",
        "",
        f"- **config**: method `{c.method}`, γ = {c.gamma:g} ({c.vectors_per_page:.1f} vectors per page), "
        f"window {c.window or '-'}" + (f" ({cfg.window_spec}, {cfg.window_source})" if cfg and cfg.window else "")
        + (f", κ = {c.kappa:.4g}" if c.kappa is not None else ""),
        f"- **backbone**: `{bcfg.model_id}` revision `{meta.get('backbone_revision', bcfg.revision)}` ({bcfg.kind}, "
        f"{bcfg.dtype})",
        f"- **certified**: nDCG@5 retention {c.retention:.3f}, {pct} interval "
        f"[{c.retention_low or float('nan'):.3f}, {c.retention_high or float('nan'):.3f}]"
        + (f"; vs random at the same γ [{c.vs_random_low:.3f}, {c.vs_random_high:.3f}]"
           if c.vs_random_low is not None and c.vs_random_high is not None else "")
        + f"; {c.num_queries or evaluation.num_queries} evaluation queries",
        f"- **data**: `{meta.get('dataset')}` version `{meta.get('data_version')}`, {evaluation.num_pages} pages",
        f"- **evaluation**: {run_link(exp, evaluation.parent_run_id, 'evaluate run')}, config run "
        f"{run_link(exp, c.run_id)}; promotion {run_link(exp, promote_run, 'promote run')}",
        f"- **config hash** `{meta.get('config_hash')}`, commit `{meta.get('git_commit', 'unknown')}`",
    ]
    if decision_reason:
        lines += ["", decision_reason]
    return "\n".join(lines)
