"""Markdown summaries of flow runs (the flows in ``flows/`` publish them as Prefect artifacts).

Each says what ran, what was decided and links to the MLflow runs and model versions behind
it. Links point at the MLflow UI (``ANCHORPRUNE_MLFLOW_UI``, default ``http://127.0.0.1:5000``,
what ``mlflow ui`` serves); the summaries read the stage reports under ``reports/``, so they
describe exactly what the stages wrote.

>>> from anchorprune.stages.index import IndexBuildResult
>>> print(index_markdown(IndexBuildResult(
...     index="demo", backend="local", version=3, pages=10, vectors=40, bytes=2048, reencoded_pages=0,
...     reused_pages=10, rebuilt=False, reason="nothing changed",
...     meta={"model": "anchorprune-m", "model_version": "2", "data_version": "abc"}), ui="http://ui"))
### reindex: index `demo` unchanged at v3
nothing changed
<BLANKLINE>
- serves v3: 10 pages, 40 vectors, 0.0 MB
- champion: [anchorprune-m v2](http://ui/#/models/anchorprune-m/versions/2?workflowType=machine_learning); data version `abc`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anchorprune.tracking.links import model_link, run_link

if TYPE_CHECKING:
    from anchorprune.stages.index import IndexBuildResult

def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _latest_run(ws, stage: str, backbone: str) -> str | None:
    """The newest MLflow run of a stage for a backbone (calibrate does not record its run id in a file)."""
    runs = ws.tracker.client.search_runs(
        [ws.tracker.experiment_id],
        f"tags.`anchorprune.stage` = '{stage}' and tags.`anchorprune.backbone` = '{backbone}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def encode_markdown(out: dict[str, dict[str, Any]]) -> str:
    """The encode flow's result (per backbone: pages, queries, layers in the features cache).

    >>> print(encode_markdown({"mock": {"pages": 40, "queries": 40, "num_layers": 8}}))
    ### encode
    <BLANKLINE>
    - **mock**: 40 pages, 40 queries, 8 layers in the features cache
    """
    return "### encode\n\n" + "\n".join(
        f"- **{n}**: {o['pages']} pages, {o['queries']} queries, {o['num_layers']} layers in the features cache"
        for n, o in out.items())


def data_markdown(ws, version: str) -> str:
    return (f"### data: `{ws.settings.data.dataset}` version `{version}`\n"
            f"source `{ws.settings.data.source}`, validated (Great Expectations), tracked by `data.dvc`\n")


def calibrate_markdown(ws, windows: dict[str, list[int]], ui: str | None = None) -> str:
    lines = ["### calibrate", "", "| backbone | SR window | alpha | beta | pairs | MLflow run |", "|---|---|---|---|---|---|"]
    for name, window in windows.items():
        rec = _read(ws.reports / "calibration" / f"{name}.json") or {}
        span = f"{window[0]}-{window[-1]}" if window else "-"
        lines.append(f"| {name} | {span} | {rec.get('alpha', float('nan')):.2f} | {rec.get('beta', float('nan')):.2f} "
                     f"| {rec.get('num_pairs', '-')} | "
                     f"{run_link(ws.tracker.experiment_id, _latest_run(ws, 'calibrate', name), ui=ui)} |")
    return "\n".join(lines) + "\n"


def evaluate_markdown(ws, names: list[str], ui: str | None = None) -> str:
    lines = ["### evaluate", ""]
    for name in names:
        from anchorprune.evaluation.results import EvaluationResult

        path = ws.reports / "evaluation" / f"{name}.json"
        if not path.exists():
            lines.append(f"- {name}: no report")
            continue
        result = EvaluationResult.load(path)
        rec = {"parent_run_id": result.parent_run_id}
        all_rows = result.rows()
        rows = [r for r in all_rows if r.get("method") != "full"]
        best = max(rows, key=lambda r: r.get("ndcg_retention", 0.0), default=None)
        full = next((r for r in all_rows if r.get("method") == "full"), {})
        lines.append(f"- **{name}**: {len(rows)} configs on {result.num_queries} queries, "
                     f"{result.num_pages} pages; full nDCG@5 {full.get('ndcg@5', float('nan')):.3f}; "
                     + (f"best retention {best['ndcg_retention']:.3f} ({best['method']} γ={best['gamma']:g}, "
                        f"window {best.get('window') or '-'}); " if best else "")
                     + f"MLflow {run_link(ws.tracker.experiment_id, rec.get('parent_run_id'), 'parent run', ui)}")
    return "\n".join(lines) + "\n"


def promote_markdown(ws, names: list[str], ui: str | None = None) -> str:
    from anchorprune.promotion.registry import model_name
    from anchorprune.provenance import provenance_path

    lines = ["### promote", ""]
    for name in names:
        path = ws.reports / "promotion" / f"{name}.json"
        rec = _read(path)
        if rec is None:
            lines.append(f"- {name}: no report")
            continue
        # run ids and what the run did to the registry live beside the DVC output (provenance_path), not in it
        prov = _read(provenance_path(path)) or {}
        rec = {**rec, **{k: prov[k] for k in ("promoted", "reason") if k in prov}}
        verdict = "**promoted**" if rec.get("promoted") else "kept the current champion"
        champ = {**(rec.get("champion") or {}), "run_id": prov.get("champion_run_id")}
        lines.append(f"- **{name}**: {verdict}: {rec.get('reason')}")
        if rec.get("version") is not None:
            lines.append(f"  - model version: {model_link(model_name(name, ws.settings.data.identity), rec['version'], ui)}")
        if champ.get("run_id"):
            lines.append(f"  - evaluated in {run_link(ws.tracker.experiment_id, champ['run_id'], ui=ui)}")
        if rec.get("rejected"):
            lines.append(f"  - {len(rec['rejected'])} candidates rejected (see reports/promotion/{name}.json)")
    return "\n".join(lines) + "\n"


def index_markdown(result: IndexBuildResult, ui: str | None = None) -> str:
    """The reindex run: which version serves, whether this run built it, from which champion and data."""
    state = f"now serves v{result.version}" if result.rebuilt else f"unchanged at v{result.version}"
    lines = [f"### reindex: index `{result.index}` {state}", result.reason, ""]
    line = (f"- serves v{result.version}: {result.pages} pages, {result.vectors} vectors, "
            f"{result.bytes / 1e6:.1f} MB")
    if result.rebuilt:
        line += f"; re-encoded {result.reencoded_pages}, reused {result.reused_pages}"
    lines.append(line)
    lines.append(f"- champion: {model_link(result.meta.get('model', '?'), result.meta.get('model_version'), ui)}; "
                 f"data version `{result.meta.get('data_version', '-')}`")
    return "\n".join(lines)


def index_skipped_markdown(reason: str) -> str:
    """The pipeline built no index (``stages.pipeline.skip_index_reason``).

    >>> print(index_skipped_markdown("no certified champion for m"))
    ### reindex: no index built
    no certified champion for m
    """
    return f"### reindex: no index built\n{reason}"


def pipeline_markdown(ws, result: dict[str, Any], ui: str | None = None) -> str:
    """The pipeline flow's result; ``result["index"]`` is None when no index was built (``index_skipped`` says why)."""
    names = [b.name for b in ws.settings.backbones]
    index = (index_markdown(result["index"], ui) if result["index"] is not None
             else index_skipped_markdown(result.get("index_skipped") or "no certified champion"))
    return "\n".join([
        "## anchorprune pipeline", "",
        data_markdown(ws, result["data_version"]),
        calibrate_markdown(ws, result["windows"], ui),
        evaluate_markdown(ws, names, ui),
        promote_markdown(ws, names, ui),
        index,
    ])


def recalibrate_markdown(ws, windows: dict[str, list[int]], ui: str | None = None) -> str:
    names = [b.name for b in ws.settings.backbones]
    return "\n".join(["## anchorprune recalibrate", "", calibrate_markdown(ws, windows, ui),
                      evaluate_markdown(ws, names, ui), promote_markdown(ws, names, ui)])


def first_line(text: str | None, width: int = 60) -> str:
    r"""A page's title stand-in: its first text line that is not a bare page number (running
    headers lose their trailing page number), shortened.

    >>> first_line("3\n  Frequently Asked Questions on R  \nmore"), first_line("Chapter 5: Packages 25")
    ('Frequently Asked Questions on R', 'Chapter 5: Packages')
    >>> first_line(None), first_line("12\n")
    ('-', '-')
    """
    import re

    for line in (text or "").splitlines():
        line = re.sub(r"\s+\d+$", "", " ".join(line.split()))
        if line and not re.fullmatch(r"[\divxlcIVXLC.\-]+", line):
            return line if len(line) <= width else line[: width - 1] + "…"
    return "-"


def describe_hits(corpus, hits) -> list[dict[str, Any]]:
    """Search hits joined with the dataset's corpus table: page, document, page number, first line, score."""
    by_id = corpus.set_index("page_id")
    rows = []
    for rank, hit in enumerate(hits, 1):
        rec = by_id.loc[hit.page_id] if hit.page_id in by_id.index else None
        rows.append({"rank": rank, "page_id": hit.page_id, "score": float(hit.score),
                     "document": str(rec["source_doc"]) if rec is not None else "?",
                     "page": int(rec["page_number"]) if rec is not None else None,
                     "title": first_line(rec["text"]) if rec is not None else "(not in the dataset)"})
    return rows
