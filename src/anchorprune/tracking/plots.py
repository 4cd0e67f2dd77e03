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
