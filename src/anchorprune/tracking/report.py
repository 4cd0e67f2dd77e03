"""Human-readable tables of evaluation results (terminal and Markdown)."""

from __future__ import annotations

import io

from anchorprune.evaluation.results import EvaluationResult

COLUMNS = [
    ("method", "method"), ("gamma", "γ"), ("window", "window"), ("ndcg@5", "nDCG@5"),
    ("recall@5", "R@5"), ("ndcg_retention", "nDCG@5 ret."), ("sr_ratio_of_means", "SR"),
    ("vectors_per_page", "vec/page"),
]


def _cell(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key == "ndcg@5" and row.get("ndcg@5_std") is not None:
        return f"{v:.3f} ± {row['ndcg@5_std']:.3f}"
    if isinstance(v, float):
        return f"{v:.1f}" if key == "vectors_per_page" else f"{v:.3f}" if key != "gamma" else f"{v:g}"
    return str(v)


def results_table(result: EvaluationResult, title: str = "") -> str:
    """A rich table rendered to text (no colours), one row per config, full first."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or result.backbone)
    for _, header in COLUMNS:
        table.add_column(header, justify="left" if header in ("method", "window") else "right")
    for row in result.rows():
        table.add_row(*[_cell(row, k) for k, _ in COLUMNS])
    buf = io.StringIO()
    Console(file=buf, width=140, color_system=None).print(table)
    return buf.getvalue()


def results_markdown(result: EvaluationResult) -> str:
    """The same table as GitHub Markdown (for README and notes)."""
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in result.rows():
        lines.append("| " + " | ".join(_cell(row, k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)
