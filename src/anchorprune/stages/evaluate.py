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
from anchorprune.tracking.outputs import (
    PLOTS_DIR,
    RETENTION_BY_GAMMA,
    RETENTION_BY_WINDOW,
    SR_BY_LAYER,
    retention_by_gamma_rows,
    retention_by_window_rows,
    sr_by_layer_rows,
    update_metrics,
    write_csv,
    write_plot_rows,
)
from anchorprune.windows import window_label

log = logging.getLogger(__name__)


def resolve_windows(specs: tuple[str, ...], kind: str, num_layers: int, sr_window: list[int],
                    stride: int = 1) -> tuple[dict[str, list[int]], dict[str, str]]:
    """``{spec: layers}`` of the grid (``sweep`` expanded to ``sweep:a-b``) and a note per scaled window;
    a spec that does not apply to this backbone is skipped with a warning."""
    from anchorprune.windows import grid_windows

    out: dict[str, list[int]] = {}
    notes: dict[str, str] = {}
    for spec in specs:
        try:
            layers, note = grid_windows([spec], num_layers, sr_window, kind, stride)
        except (KeyError, ValueError) as exc:
            log.warning("window %r skipped for %s: %s", spec, kind, exc)
            continue
        out.update(layers)
        notes.update(note)
    if not out:
        raise ValueError(f"none of the windows {specs} applies to backbone kind {kind!r}")
    for spec, note in notes.items():
        log.info("window %s: %s", spec, note)
    return out, notes


def cache_identity(bcfg: BackboneConfig, meta: dict) -> dict:
    """What the features of a backbone depend on (the per-config cache's part of the features-cache identity)."""
    return {"kind": bcfg.kind, "model_id": meta.get("backbone_id", bcfg.model_id),
            "revision": meta.get("backbone_revision", bcfg.revision), "dtype": bcfg.dtype,
            "dataset": meta.get("data_version")}


def stage_evaluate(ws: Workspace, bcfg: BackboneConfig, corpus: EncodedCorpus | None = None,
                   calibration: CalibrationResult | None = None, backbone: Any | None = None,
                   map_jobs: Any | None = None) -> EvaluationResult:
    """The evaluate stage; ``map_jobs`` runs the grid's config groups elsewhere (a Dask cluster, flows/evaluate.py)."""
    import pandas as pd

    from anchorprune.tracking.plots import retention_figure, window_comparison_figure

    backbone = backbone or (None if corpus else ws.backbone(bcfg))
    corpus = corpus or load_corpus(ws, bcfg, backbone)
    calibration = calibration or CalibrationResult.load(ws.reports / "calibration" / f"{bcfg.name}.json")
    e = ws.settings.evaluate
    calib_qids, eval_qids = ws.split()
    windows, notes = resolve_windows(e.windows, bcfg.kind, corpus.num_layers, calibration.window, e.sweep_stride)
    calib_pages = {p for q in calib_qids for p in ws.dataset.qrels.get(q, {})}
    meta = ws.meta(bcfg, backbone)
    result = evaluate_grid(
        corpus, ws.dataset.qrels, eval_qids, e.methods, e.gammas, windows,
        random_trials=e.random_trials, seed=e.seed, ks=e.ks,
        kappa_calibration=[corpus.features[p] for p in sorted(calib_pages) if p in corpus.features] or None,
        extra_configs=champion_config(ws, bcfg),
        query_sources=ws.dataset.query_sources, page_sources=ws.dataset.page_sources,   # docs/method.md §5 per dataset
        map_jobs=map_jobs,
        cache_dir=ws.path(e.cache_dir) if e.cache_dir else None, cache_identity=cache_identity(bcfg, meta),
    )
    stats = result.cache_stats
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
                                                "sr_window": window_label(calibration.window) or "-",
                                                **({"window_notes": json.dumps(notes)} if notes else {}),
                                                **protocol},
               tags={"anchorprune.stage": "evaluate", "anchorprune.backbone": bcfg.name}) as parent:
        for cfg in [result.full, *result.configs]:
            with t.run(cfg.label + f"@{cfg.gamma:g}", parent_run_id=parent,
                       params={**meta, "method": cfg.method, "gamma": cfg.gamma, "window": cfg.window or "-",
                               "window_spec": cfg.window_spec or "-",
                               # the Compare view's x axis: retention and SR against where the window starts
                               **({"window_start": cfg.window_start, "window_end": cfg.window_end,
                                   "window_source": cfg.window_source or "fixed"} if cfg.window else {}),
                               **({"window_note": notes[cfg.window_spec]} if cfg.window_spec in notes else {})},
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
        fig = retention_figure([r for r in pruned_rows if r.get("window_source") != "sweep"],
                               f"{bcfg.name}: nDCG@5 retention vs γ")
        fig.savefig(out / f"{bcfg.name}_ndcg_retention.png", dpi=110)
        t.log_figure(parent, fig, "ndcg_retention_vs_gamma.png")
        fig = retention_figure([r for r in pruned_rows if r.get("window_source") != "sweep"],
                               f"{bcfg.name}: score retention vs γ", metric="sr_ratio_of_means")
        t.log_figure(parent, fig, "sr_vs_gamma.png")
        by_window = retention_by_window_rows(bcfg.name, result)
        if by_window:
            curve = {"sr_mean": calibration.sr_mean, "random_mean": calibration.random_mean,
                     "window": calibration.window}
            fig = window_comparison_figure([(bcfg.name, curve, by_window)])
            fig.savefig(out / f"{bcfg.name}_retention_by_window.png", dpi=110)
            t.log_figure(parent, fig, "retention_by_window.png")
        t.log_metrics(parent, {"full_ndcg_at_5": result.full.metrics.get("ndcg@5", 0.0),
                               **{f"cache_{k}": v for k, v in stats.items()}})
    # the DVC outputs carry no run ids or commits (those go to reports/.provenance/): same figures, same bytes
    write_csv(out / "results.csv", [{k: v for k, v in r.items() if k != "run_id"} | {"backbone": bcfg.name}
                                    for r in rows], replace_key=("backbone", bcfg.name))
    update_metrics(ws.reports / "metrics.json", bcfg.name, result)
    plots = ws.root / PLOTS_DIR
    write_plot_rows(plots / SR_BY_LAYER, sr_by_layer_rows(bcfg.name, calibration), bcfg.name)
    write_plot_rows(plots / RETENTION_BY_WINDOW, by_window, bcfg.name)
    write_plot_rows(plots / RETENTION_BY_GAMMA, retention_by_gamma_rows(bcfg.name, result), bcfg.name)
    window_comparison_png(ws)
    result.save(out / f"{bcfg.name}.json")
    return result


def window_comparison_png(ws: Workspace) -> Path | None:
    """Every backbone's SR curve and retention by window, from the plots data: ``reports/evaluation/windows.png``."""
    import pandas as pd

    from anchorprune.tracking.plots import plt, window_comparison_figure

    plots = ws.root / PLOTS_DIR
    if not (plots / SR_BY_LAYER).exists() or not (plots / RETENTION_BY_WINDOW).exists():
        return None
    sr, rw = pd.read_csv(plots / SR_BY_LAYER), pd.read_csv(plots / RETENTION_BY_WINDOW)
    panels = []
    for name in sorted(set(sr["backbone"]) | set(rw["backbone"])):
        s = sr[sr["backbone"] == name].sort_values("layer")
        curve = {"sr_mean": s["sr_mean"].tolist(), "random_mean": s["random_mean"].tolist(),
                 "window": s.loc[s["in_sr_window"] == 1, "layer"].tolist()}
        panels.append((name, curve, rw[rw["backbone"] == name].to_dict("records")))
    fig = window_comparison_figure(panels)
    path = ws.reports / "evaluation" / "windows.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
