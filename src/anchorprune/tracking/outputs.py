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


def headline_metrics(result: EvaluationResult) -> dict:
    """The few numbers `dvc metrics show/diff` compares, per backbone: full nDCG@5, then per γ the
    nDCG@5 retention of SAP (its first window spec) and of random pruning (``sap@0.1``, ``random@0.1``)."""
    out: dict = {"ndcg@5": round(result.full.metrics.get("ndcg@5", 0.0), 4)}
    for method in ("sap", "random"):
        for g in sorted({c.gamma for c in result.configs}, reverse=True):
            found = [c for c in result.configs if c.method == method and c.gamma == g]
            if found:
                out[f"{method}@{g:g}"] = round(found[0].ndcg_retention, 4)
    return out


def update_metrics_file(path: Path, backbone: str, values: dict) -> None:
    """Replace one backbone's entry in the small, git-tracked headline metrics file (stable key order)."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[backbone] = values
    write_json(path, metrics)
