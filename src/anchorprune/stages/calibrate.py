"""The calibrate stage: the SR-by-layer curve on calibration pairs, then the SR-guided window."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from anchorprune.config import BackboneConfig
from anchorprune.evaluation.calibration import CalibrationResult, calibrate, calibration_pairs
from anchorprune.features.encoding import EncodedCorpus
from anchorprune.stages.encode import load_corpus
from anchorprune.stages.workspace import Workspace
from anchorprune.tracking.outputs import write_csv

log = logging.getLogger(__name__)


def stage_calibrate(ws: Workspace, bcfg: BackboneConfig, corpus: EncodedCorpus | None = None,
                    backbone: Any | None = None) -> CalibrationResult:
    from anchorprune.tracking.plots import sr_curve_figure

    backbone = backbone or (None if corpus else ws.backbone(bcfg))
    corpus = corpus or load_corpus(ws, bcfg, backbone)
    c = ws.settings.calibrate
    calib_qids, _ = ws.split()
    pairs = calibration_pairs(ws.dataset.qrels, calib_qids, corpus.page_ids, c.pairs, c.seed)
    result = calibrate(corpus, pairs, gamma=c.gamma, rho=c.rho, random_trials=c.random_trials, seed=c.seed,
                       min_pairs=c.min_pairs)
    for w in result.warnings:
        log.warning("calibrate %s: %s", bcfg.name, w)
    meta = ws.meta(bcfg, backbone)
    out = ws.reports / "calibration"
    result.save(out / f"{bcfg.name}.json")
    write_csv(out / "sr_curve.csv", [
        {"backbone": bcfg.name, "layer": i, "sr_mean": m, "sr_std": s, "random_mean": r}
        for i, (m, s, r) in enumerate(zip(result.sr_mean, result.sr_std, result.random_mean, strict=True))
    ], replace_key=("backbone", bcfg.name))

    t = ws.tracker
    with t.run(f"calibrate-{bcfg.name}", params={**meta, "gamma": c.gamma, "rho": c.rho, "pairs": result.num_pairs},
               tags={"anchorprune.stage": "calibrate", "anchorprune.backbone": bcfg.name}) as run_id:
        t.log_series(run_id, "sr_by_layer", result.sr_mean)
        t.log_series(run_id, "sr_by_layer_std", result.sr_std)
        t.log_series(run_id, "sr_random_by_layer", result.random_mean)
        peak = max(range(len(result.sr_mean)), key=lambda i: result.sr_mean[i])
        # the run overview shows a series' LAST step; the summary metrics say what matters
        t.log_metrics(run_id, {"sr_peak": result.sr_mean[peak], "sr_peak_layer": peak,
                               "sr_window_mean": sum(result.sr_mean[i] for i in result.window) / len(result.window),
                               "window_start": result.window[0], "window_end": result.window[-1],
                               "alpha": result.alpha, "beta": result.beta, "sr_median": result.median,
                               "excluded_pairs": result.excluded_pairs, "num_pairs": result.num_pairs})
        t.log_params(run_id, {"window": f"{result.window[0]}-{result.window[-1]}"})
        if result.warnings:
            t.client.set_tag(run_id, "anchorprune.warning", "; ".join(result.warnings)[:5000])
            t.client.set_tag(run_id, "mlflow.note.content", "WARNING: " + "; ".join(result.warnings)[:5000])
        fig = sr_curve_figure(result.sr_mean, result.sr_std, result.random_mean, result.window,
                              f"{bcfg.name}: score retention by layer", result.gamma)
        fig.savefig(out / f"{bcfg.name}_sr_by_layer.png", dpi=110)
        t.log_figure(run_id, fig, "sr_by_layer.png")  # closes the figure
        t.log_dict(run_id, asdict(result), "calibration.json")
    log.info("calibrated %s: window %s (alpha %.2f, beta %.2f)", bcfg.name, result.window, result.alpha, result.beta)
    return result
