"""Reports and DVC outputs shared by the stages: per-backbone CSV rows, metrics files."""

from __future__ import annotations

import json
from pathlib import Path

from anchorprune.evaluation.results import EvaluationResult
from anchorprune.ioutil import write_json


def write_csv(path: Path, rows: list[dict], replace_key: tuple[str, str]) -> None:
    """Write rows into a CSV shared by backbones, replacing this backbone's old rows."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        if replace_key[0] in old.columns:
            old = old[old[replace_key[0]] != replace_key[1]]
        frame = pd.concat([old, frame], ignore_index=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def update_metrics(path: Path, backbone: str, result: EvaluationResult) -> None:
    """DVC metrics: per backbone, nDCG@5 retention and SR of each config."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[backbone] = {
        "full_ndcg_at_5": round(result.full.metrics.get("ndcg@5", 0.0), 4),
        **{f"{c.label}@{c.gamma:g}": {"ndcg_retention": round(c.ndcg_retention, 4),
                                      "sr": round(c.sr_ratio_of_means, 4),
                                      "vectors_per_page": round(c.vectors_per_page, 1)} for c in result.configs},
    }
    write_json(path, metrics)


def headline_metrics(result: EvaluationResult, backbone: str) -> dict[str, float]:
    """The numbers `dvc metrics show/diff` and `dvc exp show` compare, as flat, stable keys.

    ``<backbone>/full/ndcg@5``; for every method at γ: ``<backbone>/<method>/<window>/<γ>/ndcg@5_retention``
    with ``<window>`` the window *spec* (``sr``, ``v1``, ...: a key that survives the SR window moving;
    ``-`` for window-free methods; sweep windows stay in ``reports/metrics.json``); and per windowed
    method and γ the best window of the grid: ``.../best/<γ>/ndcg@5_retention`` and ``.../best/<γ>/window_start``.
    """
    from anchorprune.windows import window_source

    out: dict[str, float] = {f"{backbone}/full/ndcg@5": round(result.full.metrics.get("ndcg@5", 0.0), 4)}
    best: dict[tuple[str, float], object] = {}
    for c in result.configs:
        if window_source(c.window_spec) != "sweep":
            spec = c.window_spec or "-"
            out[f"{backbone}/{c.method}/{spec}/{c.gamma:g}/ndcg@5_retention"] = round(c.ndcg_retention, 4)
        if c.window is not None:
            b = best.get((c.method, c.gamma))
            if b is None or c.ndcg_retention > b.ndcg_retention:
                best[(c.method, c.gamma)] = c
    for (method, gamma), c in best.items():
        out[f"{backbone}/{method}/best/{gamma:g}/ndcg@5_retention"] = round(c.ndcg_retention, 4)
        out[f"{backbone}/{method}/best/{gamma:g}/window_start"] = c.window_start
    return dict(sorted(out.items()))


def champion_metrics(backbone: str, champion: dict | None, version: str | None) -> dict[str, float]:
    """``champion/<backbone>/*``: the champion's own figures (its certified interval, γ, window, vectors)."""
    if not champion:
        return {}
    p = f"champion/{backbone}"
    out = {f"{p}/gamma": champion.get("gamma"), f"{p}/ndcg@5_retention": champion.get("retention"),
           f"{p}/retention_low": champion.get("retention_low"), f"{p}/retention_high": champion.get("retention_high"),
           f"{p}/vs_random_low": champion.get("vs_random_low"), f"{p}/vectors_per_page": champion.get("vectors_per_page"),
           f"{p}/version": int(version) if version and str(version).isdigit() else None}
    if champion.get("window"):
        lo, hi = (int(x) for x in str(champion["window"]).split("-"))
        out.update({f"{p}/window_start": lo, f"{p}/window_end": hi})
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items() if v is not None}


def update_headline_file(path: Path, backbone: str, values: dict[str, float]) -> None:
    """Replace one backbone's keys (``<backbone>/...`` and ``champion/<backbone>/...``) in the flat, git-tracked
    headline metrics file; keys sorted, so a rerun with the same figures writes the same bytes."""
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        metrics = {}
    mine = (f"{backbone}/", f"champion/{backbone}/")
    metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not k.startswith(mine)}
    metrics.update(values)
    write_json(path, dict(sorted(metrics.items())))


#: plots data in git (``cache: false`` DVC outputs), so `dvc plots diff REV` and `anchorprune plots REV` draw REV's
PLOTS_DIR = "plots"
SR_BY_LAYER = "sr_by_layer.csv"
RETENTION_BY_WINDOW = "retention_by_window.csv"
RETENTION_BY_GAMMA = "retention_by_gamma.csv"
PLOTS_FILES = (SR_BY_LAYER, RETENTION_BY_GAMMA, RETENTION_BY_WINDOW)


def write_plot_rows(path: Path, rows: list[dict], backbone: str) -> None:
    """Replace one backbone's rows of a plots CSV; rows sorted by backbone (stable), floats to 6 digits:
    the same figures always give the same bytes (the file is in git)."""
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        if "backbone" in old.columns:
            old = old[old["backbone"] != backbone]
            frame = pd.concat([old, frame], ignore_index=True)
    frame = frame.sort_values("backbone", kind="stable")
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    tmp.replace(path)


def sr_by_layer_rows(backbone: str, calibration) -> list[dict]:
    """One row per layer: SR (mean, std), random's, and whether the SR window holds the layer."""
    window = set(calibration.window or [])
    return [{"backbone": backbone, "layer": i, "sr_mean": m, "sr_std": s, "random_mean": r,
             "in_sr_window": int(i in window)}
            for i, (m, s, r) in enumerate(zip(calibration.sr_mean, calibration.sr_std, calibration.random_mean,
                                              strict=True))]


def retention_by_gamma_rows(backbone: str, result: EvaluationResult) -> list[dict]:
    """One row per config but the sweep's: nDCG@5 retention and SR by γ (the full reference at γ = 1)."""
    return [{"backbone": backbone, "method": c.method, "gamma": c.gamma, "window_spec": c.window_spec or "-",
             "window": c.window or "-", "window_source": c.window_source or "-", "ndcg_retention": c.ndcg_retention,
             "sr_ratio_of_means": c.sr_ratio_of_means, "vectors_per_page": c.vectors_per_page}
            for c in [result.full, *result.configs] if c.window_source != "sweep"]


def retention_by_window_rows(backbone: str, result: EvaluationResult) -> list[dict]:
    """One row per windowed config: its window (start, end, how chosen) and nDCG@5 retention and SR."""
    return [{"backbone": backbone, "method": c.method, "gamma": c.gamma, "series": f"{c.method} γ={c.gamma:g}",
             "window": c.window, "window_start": c.window_start, "window_end": c.window_end,
             "window_source": c.window_source or "fixed", "ndcg_retention": c.ndcg_retention,
             "sr_ratio_of_means": c.sr_ratio_of_means, "vectors_per_page": c.vectors_per_page}
            for c in sorted((c for c in result.configs if c.window is not None),
                            key=lambda c: (c.method, -c.gamma, c.window_start, c.window_end))]


def update_metrics_file(path: Path, backbone: str, values: dict) -> None:
    """Replace one backbone's entry in the small, git-tracked headline metrics file (stable key order)."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[backbone] = values
    write_json(path, metrics)
