"""The evaluate stage: the methods x γ x windows grid, logged to MLflow and written for DVC."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from anchorprune.config import BackboneConfig
from anchorprune.evaluation.calibration import CalibrationResult
from anchorprune.evaluation.grid import evaluate_grid
from anchorprune.evaluation.results import EvaluationResult
from anchorprune.features.encoding import EncodedCorpus
from anchorprune.promotion.rule import Candidate, certified_candidates
from anchorprune.stages.encode import load_corpus
from anchorprune.stages.workspace import Workspace
from anchorprune.tracking.outputs import headline_metrics, update_metrics, update_metrics_file, write_csv

log = logging.getLogger(__name__)


def resolve_windows(specs: tuple[str, ...], kind: str, num_layers: int, sr_window: list[int]) -> dict[str, list[int]]:
    from anchorprune.windows import resolve_window

    out: dict[str, list[int]] = {}
    for spec in specs:
        try:
            out[spec] = list(resolve_window(spec, num_layers, sr_window=sr_window, kind=kind))
        except (KeyError, ValueError) as exc:
            log.warning("window %r skipped for %s: %s", spec, kind, exc)
    if not out:
        raise ValueError(f"none of the windows {specs} applies to backbone kind {kind!r}")
    return out


def stage_evaluate(ws: Workspace, bcfg: BackboneConfig, corpus: EncodedCorpus | None = None,
                   calibration: CalibrationResult | None = None, backbone: Any | None = None,
                   map_jobs: Any | None = None) -> EvaluationResult:
    """The evaluate stage; ``map_jobs`` runs the grid's config groups elsewhere (a Dask cluster, flows/evaluate.py)."""
    import pandas as pd

    from anchorprune.tracking.plots import retention_figure

    backbone = backbone or (None if corpus else ws.backbone(bcfg))
    corpus = corpus or load_corpus(ws, bcfg, backbone)
    calibration = calibration or CalibrationResult.load(ws.reports / "calibration" / f"{bcfg.name}.json")
    e = ws.settings.evaluate
    calib_qids, eval_qids = ws.split()
    windows = resolve_windows(e.windows, bcfg.kind, corpus.num_layers, calibration.window)
    calib_pages = {p for q in calib_qids for p in ws.dataset.qrels.get(q, {})}
    result = evaluate_grid(
        corpus, ws.dataset.qrels, eval_qids, e.methods, e.gammas, windows,
        random_trials=e.random_trials, seed=e.seed, ks=e.ks,
        kappa_calibration=[corpus.features[p] for p in sorted(calib_pages) if p in corpus.features] or None,
        extra_configs=champion_config(ws, bcfg),
        query_sources=ws.dataset.query_sources, page_sources=ws.dataset.page_sources,   # docs/method.md §5 per dataset
        map_jobs=map_jobs,
    )
    meta = ws.meta(bcfg, backbone)
    result.meta = meta
    protocol = {"sources": json.dumps(result.sources)} if result.sources else {}
    p = ws.settings.promote
    intervals = {(c.method, round(c.gamma, 6), c.window): c for c in certified_candidates(
        result, bcfg.name, resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.bootstrap_seed,
        groups=result.query_sources or None)}
    out = ws.reports / "evaluation"
    out.mkdir(parents=True, exist_ok=True)

    t = ws.tracker
    with t.run(f"evaluate-{bcfg.name}", params={**meta, "gammas": list(e.gammas), "methods": list(e.methods),
                                                "windows": json.dumps(windows), "queries": result.num_queries,
                                                **protocol},
               tags={"anchorprune.stage": "evaluate", "anchorprune.backbone": bcfg.name}) as parent:
        for cfg in [result.full, *result.configs]:
            with t.run(cfg.label + f"@{cfg.gamma:g}", parent_run_id=parent,
                       params={**meta, "method": cfg.method, "gamma": cfg.gamma, "window": cfg.window or "-",
                               "window_spec": cfg.window_spec or "-"},
                       tags={"anchorprune.stage": "evaluate-config", "anchorprune.backbone": bcfg.name}) as child:
                ci = intervals.get(cfg.key)
                t.log_metrics(child, {**{_mkey(k): v for k, v in cfg.metrics.items()},
                                      **(_ci_metrics(ci) if ci else {}),
                                      "ndcg_retention": cfg.ndcg_retention,
                                      "sr_ratio_of_means": cfg.sr_ratio_of_means,
                                      "sr_mean_of_ratios": cfg.sr_mean_of_ratios,
                                      "sr_excluded_pairs": cfg.sr_excluded_pairs,
                                      "vectors_per_page": cfg.vectors_per_page,
                                      "bytes_per_page": cfg.bytes_per_page,
                                      "realised_gamma": cfg.realised_gamma,
                                      **{k: v for k, v in cfg.extra.items() if k.startswith("per_source/")}})
            cfg.run_id = child
        result.parent_run_id = parent
        # after the child runs exist, so every row carries its run id; intervals beside the point estimates
        rows = [{**r, **_ci_metrics(intervals.get((r["method"], round(r["gamma"], 6), r["window"])))}
                for r in result.rows()]
        pruned_rows = [r for r in rows if r["method"] != "full"]
        t.log_table(parent, pd.DataFrame(rows), "comparison")
        fig = retention_figure(pruned_rows, f"{bcfg.name}: nDCG@5 retention vs γ")
        fig.savefig(out / f"{bcfg.name}_ndcg_retention.png", dpi=110)
        t.log_figure(parent, fig, "ndcg_retention_vs_gamma.png")
        fig = retention_figure(pruned_rows, f"{bcfg.name}: score retention vs γ", metric="sr_ratio_of_means")
        t.log_figure(parent, fig, "sr_vs_gamma.png")
        t.log_metrics(parent, {"full_ndcg_at_5": result.full.metrics.get("ndcg@5", 0.0)})
    write_csv(out / "results.csv", [{**r, "backbone": bcfg.name} for r in rows], replace_key=("backbone", bcfg.name))
    update_metrics(ws.reports / "metrics.json", bcfg.name, result)
    update_metrics_file(ws.path(ws.settings.paths.metrics_file), bcfg.name, headline_metrics(result))
    result.save(out / f"{bcfg.name}.json")
    return result


def _ci_metrics(c: Candidate | None) -> dict[str, float]:
    """The bootstrap interval of a candidate as metrics/columns (none for full or an unknown config)."""
    if c is None or c.retention_low is None:
        return {}
    out = {"retention_low": c.retention_low, "retention_high": c.retention_high}
    if c.vs_random_low is not None:
        out.update({"vs_random_low": c.vs_random_low, "vs_random_high": c.vs_random_high})
    return out


def champion_config(ws: Workspace, bcfg: BackboneConfig) -> list[tuple[str, float, list[int] | None]]:
    """The current champion's (method, γ, window) for this backbone, to re-evaluate it with the grid."""
    from anchorprune.promotion.registry import current_champion

    champ = current_champion(ws.tracker, bcfg.name, ws.settings.data.identity)
    if champ is None:
        return []
    _, spec = champ
    return [(spec.method, spec.gamma, spec.window)]


def _mkey(k: str) -> str:
    """MLflow metric names: 'ndcg@5' -> 'ndcg_at_5'."""
    return k.replace("@", "_at_")


def candidates_from(result: EvaluationResult, backbone: str, ws: Workspace | None = None) -> list[Candidate]:
    """Certified candidates (bootstrap intervals with the promote settings of ``ws``, else the defaults)."""
    groups = result.query_sources or None     # several sources: macro average, resampled within each source
    if ws is None:
        return certified_candidates(result, backbone, groups=groups)
    p = ws.settings.promote
    return certified_candidates(result, backbone, resamples=p.bootstrap_resamples, confidence=p.confidence,
                                seed=p.bootstrap_seed, groups=groups)


def load_evaluation(path: Path, backbone: str | None = None) -> EvaluationResult:
    """Read an evaluation written by :func:`stage_evaluate` (the pydantic model's own JSON)."""
    result = EvaluationResult.load(path)
    if backbone is not None and result.backbone != backbone:
        log.debug("evaluation %s is of corpus backbone %r (asked %r)", path, result.backbone, backbone)
    return result
