"""Figures people would rather look at than read: the SR curve and retention vs gamma."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files or MLflow, never shown
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def sr_curve_figure(
    mean: Sequence[float],
    std: Sequence[float],
    random_mean: Sequence[float],
    window: Sequence[int],
    title: str,
    gamma: float,
) -> Figure:
    """SR by layer (mean ± std), the random reference, and the selected window shaded."""
    layers = list(range(len(mean)))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if window:
        ax.axvspan(min(window) - 0.5, max(window) + 0.5, color="tab:green", alpha=0.15,
                   label=f"SR window {min(window)}-{max(window)}")
    lo = [m - s for m, s in zip(mean, std, strict=True)]
    hi = [m + s for m, s in zip(mean, std, strict=True)]
    ax.fill_between(layers, lo, hi, color="tab:blue", alpha=0.2)
    ax.plot(layers, mean, "o-", color="tab:blue", label="SAP, single layer")
    ax.plot(layers, random_mean, "--", color="tab:gray", label="random (5 seeds)")
    ax.set_xticks(layers)                     # layers are whole numbers: no 0.5 ticks
    ax.set_xlabel("layer (decoder of a VLM backbone; encoder for the text stand-in)")
    ax.set_ylabel(f"score retention at γ = {gamma:g}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def retention_figure(rows: Sequence[dict], title: str, metric: str = "ndcg_retention") -> Figure:
    """``metric`` vs gamma, one line per (method, window) label; rows need keys label, gamma, metric."""
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = sorted({r["label"] for r in rows})
    for label in labels:
        pts = sorted((r["gamma"], r[metric]) for r in rows if r["label"] == label)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.axhline(0.9, color="tab:red", lw=0.8, ls=":", label="0.90")
    ax.set_xscale("log")
    ax.set_xlabel("γ (kept fraction of tokens)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def window_comparison_figure(panels: Sequence[tuple[str, dict, Sequence[dict]]],
                             metric: str = "ndcg_retention") -> Figure:
    """Per backbone one row: the SR curve by layer (SR window shaded) beside nDCG@5 retention by window start.

    ``panels``: (backbone, SR curve {"sr_mean", "random_mean", "window"}, windowed rows with keys method,
    gamma, window_start, window_end, window_source and ``metric``). One line per (method, γ); the SR
    window's start is marked on both panels, the fixed (v1/v2) windows' points ringed.
    """
    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 2, figsize=(12, 3.8 * n), squeeze=False)
    for (name, curve, rows), (ax_sr, ax_w) in zip(panels, axes, strict=False):
        sr = list(curve.get("sr_mean") or [])
        layers = list(range(len(sr)))
        window = list(curve.get("window") or [])
        for ax in (ax_sr, ax_w):
            if window:
                ax.axvspan(min(window) - 0.5, max(window) + 0.5, color="tab:green", alpha=0.12,
                           label=f"SR window {min(window)}-{max(window)}")
        ax_sr.plot(layers, sr, "o-", color="tab:blue", label="SAP, single layer")
        if curve.get("random_mean"):
            ax_sr.plot(layers, curve["random_mean"], "--", color="tab:gray", label="random")
        ax_sr.set_title(f"{name}: score retention by layer")
        ax_sr.set_xlabel("layer")
        ax_sr.set_ylabel("score retention")
        series = sorted({(r["method"], r["gamma"]) for r in rows}, key=lambda s: (s[0], -s[1]))
        styles = {m: ls for m, ls in zip(sorted({s[0] for s in series}), ["-", "--", "-.", ":"] * 4, strict=False)}
        gammas = sorted({s[1] for s in series}, reverse=True)
        colours = {g: f"C{i}" for i, g in enumerate(gammas)}
        for method, gamma in series:
            pts = sorted((r["window_start"], r[metric]) for r in rows
                         if r["method"] == method and r["gamma"] == gamma)
            ax_w.plot([p[0] for p in pts], [p[1] for p in pts], "o", ls=styles[method], color=colours[gamma],
                      label=f"{method} γ={gamma:g}")
            fixed = [(r["window_start"], r[metric]) for r in rows if r["method"] == method and r["gamma"] == gamma
                     and r.get("window_source") == "fixed"]
            if fixed:
                ax_w.plot([p[0] for p in fixed], [p[1] for p in fixed], "o", mfc="none", ms=11,
                          color=colours[gamma])
        ax_w.axhline(0.9, color="tab:red", lw=0.8, ls=":")
        ax_w.set_title(f"{name}: nDCG@5 retention by window start (rings: v1/v2)")
        ax_w.set_xlabel("window start layer (width of the SR window)")
        ax_w.set_ylabel(metric.replace("_", " "))
        if layers:
            ax_sr.set_xticks(layers)
            ax_w.set_xticks(layers)
            ax_w.set_xlim(-0.5, len(layers) - 0.5)
        for ax in (ax_sr, ax_w):
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig
