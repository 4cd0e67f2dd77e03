"""``anchorprune index``: build, search, inspect and roll back the pruned index.

``index build`` runs the pipeline's index stage (``stages.index.stage_index``: the registry's
@champion config, window-only capture through the features cache, pages whose content hash is
unchanged reused, build -> verify -> swap -> prune to ``index.keep_versions``) with the build lock
held throughout. status/rollback/verify/unlock work even when the serving version is broken;
every failure is one line and a non-zero exit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from anchorprune.cli.errors import DATA, INDEX, INDEX_OPEN, SYSTEM, exit_on, fail, one_line
from anchorprune.cli.options import ParamsOpt, load_workspace

index_app = typer.Typer(help="Build, search, inspect and roll back the pruned index.", no_args_is_help=True)


def open_index(params: Path):
    """The serving index of the params file's workspace; one that cannot be opened exits 2."""
    from anchorprune.stages.index import open_serving_index

    ws = load_workspace(params)
    with exit_on(INDEX_OPEN, SYSTEM, where=where(ws)):
        return ws, open_serving_index(ws)


def where(ws) -> str:
    """What an index command works on, for errors that name no file: the index folder, or the Elasticsearch index."""
    if ws.settings.index.backend == "local":
        root = ws.settings.paths.resolve(ws.settings.paths.index_dir, ws.root)
        return f"index {ws.settings.index.name} (paths.index_dir {root})"
    return f"Elasticsearch index {ws.settings.index.name}"


def visible(query: str) -> str:
    """The query without whitespace and invisible characters (format and control characters, e.g. U+200B).

    >>> visible("\u200b \u200b"), visible(" R packages\u200b")
    ('', 'Rpackages')
    """
    import unicodedata

    return "".join(c for c in query if not c.isspace() and unicodedata.category(c)[0] not in "CZ")


@index_app.command("build")
def index_build(
    params: ParamsOpt = Path("params.yaml"),
    wait: Annotated[bool, typer.Option("--wait", help="queue behind a running build instead of failing")] = False,
    force: Annotated[bool, typer.Option(help="rebuild even when champion, data and index config are unchanged")]
    = False,
) -> None:
    """Build a new index version from the champion config (incremental), verify it, swap it in, prune old ones.

    Does nothing (and says so) when the serving version already has this champion, data and index config.
    """
    from anchorprune.stages.index import stage_index

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ws = load_workspace(params)
    with exit_on(INDEX, DATA, SYSTEM, where=where(ws)):
        result = stage_index(ws, wait=wait, force=force)
    typer.echo(result.headline(hint="--force rebuilds"))
    for warning in result.warnings:             # after the swap: the new version serves, the command succeeded
        typer.echo(f"warning: {one_line(warning)}", err=True)


@index_app.command("search")
def index_search(
    query: Annotated[str, typer.Argument(help="query text (encoded with the champion's backbone)")],
    params: ParamsOpt = Path("params.yaml"),
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="hits to print")] = 10,
) -> None:
    """Search the serving index version with a text query: page, document, first line, score."""
    if not visible(query):
        raise fail(f'the query is empty{"" if not query.strip() else f" (only invisible characters: {query!r})"}; '
                   'pass the text to search for, e.g. `anchorprune index search "how do I install R packages"`', 2)
    ws, idx = open_index(params)
    echo_search(ws, idx, query, k)


def echo_search(ws, idx, query: str, k: int) -> None:
    """Search the open serving index ``idx``; print the hits and how they were scored (index errors exit 1)."""
    from anchorprune.stages.search import stage_search_report

    with exit_on(INDEX, DATA, SYSTEM, where=where(ws)):
        idx.search_many([], 1)          # the cheap checks first: no model load for a broken index
        hits, report = stage_search_report(ws, query, k=k, index=idx)
        serving = idx.current()
    meta = (serving.manifest.get("meta") or {}) if serving is not None else {}
    typer.echo(f"{query!r}: index {ws.settings.index.name} v{serving.number if serving else '-'}, "
               f"model {meta.get('model', '-')} v{meta.get('model_version', '-')} "
               f"({meta.get('method', '-')}, gamma {meta.get('gamma', '-')}), data {meta.get('data_version', '-')}")
    with exit_on(DATA, SYSTEM, where=where(ws)):
        _echo_hits(ws, hits)
    _echo_scoring(report)


def _echo_hits(ws, hits) -> None:
    """The hits as a table: rank, score, page, document and page number, title."""
    from anchorprune.orchestration.summary import describe_hits

    for r in describe_hits(ws.dataset.corpus, hits):
        where = f"{r['document']} p.{r['page']}" if r["page"] is not None else r["document"]
        typer.echo(f"{r['rank']:3d}. {r['score']:7.3f}  {r['page_id']:<18} {where:<20} {r['title']}")


def _echo_scoring(report) -> None:
    """Which first stage answered (and how many pages it rescored), then the compute path of the search (float32 /
    bfloat16, bf16 accelerated or not), where the index reports them."""
    if report is None:
        return
    stage = getattr(report, "first_stage", None)
    if stage is not None:
        how = (f"exact MaxSim over all {report.pages} pages" if stage == "none"
               else f"{report.candidates} of {report.pages} pages rescored exactly")
        configured = f" (configured: {report.configured})" if getattr(report, "configured", None) else ""
        typer.echo(f"first stage: {stage}, {how}{configured}")
    if getattr(report, "scoring", None) is not None:
        typer.echo(report.scoring.describe())


@index_app.command("status")
def index_status(
    params: ParamsOpt = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="print the stats as JSON")] = False,
) -> None:
    """Show the serving version, every version's health, and which ones a rollback can serve."""
    ws, idx = open_index(params)
    with exit_on(INDEX, SYSTEM, where=where(ws)):
        pointer = idx.life.pointer_problem()
        health = idx.health()
        cur = next((h for h in health if h.serving), None)
        target = idx.life.rollback_target()
        stats = idx.stats() if as_json and cur is not None and cur.ok else None
    if as_json:
        _echo_status_json(idx, stats, pointer, target, health)
    else:
        _echo_status(idx, pointer, cur, target, health)


def _echo_status_json(idx, stats, pointer, target, health) -> None:
    import json

    out = stats.as_dict() if stats else {"name": idx.name, "backend": idx.backend, "current": None}
    out["pointer_problem"] = pointer
    out["rollback_target"] = target
    out["health"] = [{"version": h.number, "ok": h.ok, "problem": h.problem, "served": h.served,
                      "serving": h.serving} for h in health]
    typer.echo(json.dumps(out, indent=2))


def _echo_status(idx, pointer, cur, target, health) -> None:
    from anchorprune.index.first_stage import AUTO_THRESHOLD_PAGES, auto_stage

    threshold = idx.first_stage_threshold or AUTO_THRESHOLD_PAGES
    stage = idx.first_stage + (f" ({idx.first_stage_auto} from {threshold} pages, exact below)"
                               if idx.first_stage == "auto" else "")
    typer.echo(f"index {idx.name} ({idx.backend}, {idx.dtype}, first stage {stage})")
    if pointer:
        typer.echo(f"  ! serving pointer: {one_line(pointer)}")
    elif cur is None:
        typer.echo("  no serving version: run `anchorprune index build`")
    for h in health:
        mark = "*" if h.serving else " "
        served = "served" if h.served else "never served"
        if not h.ok:
            typer.echo(f"  {mark} v{h.number}  DAMAGED ({served}): {one_line(h.problem or '')}")
            continue
        v = h.info
        meta = v.manifest.get("meta", {})
        built = (v.manifest.get("first_stage") or {}).get("name", "mean")
        typer.echo(f"  {mark} v{v.number}  {v.created_at}  {v.pages} pages  {v.vectors} vectors  "
                   f"{v.bytes / 1e6:.1f} MB  {v.bytes / max(v.pages, 1):.0f} B/page  "
                   f"model {meta.get('model', '-')}:{meta.get('model_version', '-')}  "
                   f"data {meta.get('data_version', '-')}  built for {built}  {served}")
        if h.serving:
            answers = auto_stage(idx.first_stage, v.pages, idx.first_stage_threshold, idx.first_stage_auto)
            cal = (v.manifest.get("first_stage") or {}).get("calibration")
            typer.echo(f"      searches use: {'exact MaxSim over every page' if answers == 'none' else answers}"
                       + (f", {_search_settings(idx, v, built, cal)}; candidates rescored exactly"
                          if answers != "none" else "")
                       + (f"; v{v.number} was built for {built}, so it falls back: rebuild to use {answers}"
                          if answers not in ("none", "mean", built) else ""))
            if cal:
                typer.echo(f"      calibration: {_calibration_line(cal)}")
            update = (((v.manifest.get("first_stage") or {}).get("params") or {}).get("update"))
            if update:
                typer.echo(f"      first stage on this build: {_update_line(update)}")
    if pointer or (cur is not None and not cur.ok):
        typer.echo(f"  fix: `anchorprune index rollback` serves v{target}" if target is not None
                   else "  fix: no healthy version that served is left: `anchorprune index build --force` rebuilds "
                        "from the champion and serves the result")


def _search_settings(idx, v, built: str, cal: dict | None) -> str:
    """``candidates N (pinned in params.yaml | calibrated | default), nprobe M (...)`` for the serving version."""
    from anchorprune.index.facade import plan_search

    plan = plan_search(idx.first_stage, v.pages, built, 1, idx.candidates, idx.first_stage_threshold,
                       idx.first_stage_auto, cal, idx.first_stage_params.get("nprobe"))
    used = cal if built == "token_ivf" and plan.asked != "none" else None
    src_c = "pinned in params.yaml" if idx.candidates is not None else "calibrated" if used else "default"
    out = f"candidates {plan.candidates} ({src_c}"
    if idx.candidates is not None and used:
        out += f"; calibration chose {used['candidates']}"
    out += ")"
    if plan.stage == "token_ivf":
        pinned = idx.first_stage_params.get("nprobe")
        src_n = ("pinned in params.yaml" if pinned is not None else "calibrated" if used and used.get("met")
                 else "built default")
        nprobe = plan.nprobe if plan.nprobe is not None else (v.manifest["first_stage"].get("params") or {}).get("nprobe")
        out += f", nprobe {nprobe} ({src_n}" + (f"; calibration chose {used['nprobe']}" if pinned and used else "") + ")"
    return out


def _update_line(update: dict) -> str:
    """Whether a rebuild carried the serving version's token_ivf centroids or retrained them, and why."""
    if update.get("mode") == "reuse":
        out = f"centroids carried from {update.get('centroids_from', 'the serving version')}"
    else:
        out = "k-means trained"
    out += f": {update.get('reason', '-')}"
    if "drift" in update:
        out += f"; drift {update['drift']:+.3f}"
    return out


def _sample_words(sample: dict) -> str:
    """``200 pseudo-queries`` / ``40 held-out queries (the dataset's calibration split)``, and why auto fell back."""
    n = sample.get("queries", "?")
    if sample.get("kind") == "pseudo":
        out = f"{n} pseudo-queries"
    elif "split_queries" in sample:
        drawn = sample.get("drawn", "all")
        out = f"{n} held-out queries (the dataset's calibration split{'' if drawn == 'all' else ', ' + drawn})"
    else:
        out = f"{n} held-out queries"
    if sample.get("fallback"):
        out += f" ({sample['fallback']})"
    return out


def _calibration_line(cal: dict) -> str:
    """What a version's first-stage calibration measured and chose (its manifest's ``first_stage.calibration``)."""
    where = _sample_words(cal.get("sample") or {})
    k, target = cal.get("k", 10), cal.get("target_recall")
    if not cal.get("met") and not (cal.get("grid") or {}).get("candidates"):
        return f"too few pages ({cal.get('k', 10)}) to calibrate: every page is a candidate (exact search)"
    if not cal.get("met"):
        best = cal.get("best_measured") or {}
        return (f"no setting reached recall@{k} >= {target} on {where} (best lower bound "
                f"{best.get('recall_lower_bound', '-')}): searches are exact; {cal.get('seconds', '?')} s")
    return (f"recall@{k} target {target} met with nprobe {cal['nprobe']}, candidates {cal['candidates']}: "
            f"{cal['recall']:.4f} plain, {cal['recall_tie_aware']:.4f} tie-aware (lower bound "
            f"{cal['recall_lower_bound']:.4f}, {cal.get('recall_kind', 'tie_aware').replace('_', '-')}) on {where}, "
            f"{cal.get('seconds', '?')} s")


@index_app.command("rollback")
def index_rollback(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the newest healthy version that served before the serving one (works when the serving one is broken)."""
    ws, idx = open_index(params)
    with exit_on(INDEX, SYSTEM, where=where(ws)):
        before = idx.life.pointer_problem() is None and idx.life.serving()
        prev = idx.rollback()
    typer.echo(f"index {idx.name}: rolled back from {f'v{before}' if before else 'a broken pointer'} to "
               f"v{prev.number}")


@index_app.command("verify")
def index_verify(
    params: ParamsOpt = Path("params.yaml"),
    version: Annotated[int | None, typer.Option("--version", help="check only this version")] = None,
) -> None:
    """Check every checksum of every version (or one); exit 1 naming each damaged file."""
    ws, idx = open_index(params)
    with exit_on(INDEX, SYSTEM, where=where(ws)):
        health = [h for h in idx.health(full=True) if version is None or h.number == version]
    if version is not None and not health:
        raise fail(f"index {idx.name} has no version v{version}; `anchorprune index status` lists them")
    bad = 0
    for h in health:
        if h.ok:
            typer.echo(f"v{h.number}: ok{' (serving)' if h.serving else ''}")
        else:
            bad += 1
            typer.echo(f"v{h.number}: DAMAGED{' (serving)' if h.serving else ''}: {one_line(h.problem or '')}",
                       err=True)
    if bad:
        serving_bad = any(h.serving and not h.ok for h in health)
        with exit_on(INDEX, SYSTEM, where=where(ws)):
            target = idx.life.rollback_target() if serving_bad else None
        fix = (f"`anchorprune index rollback` serves v{target}, then `anchorprune index build --force` writes a "
               "fresh version and removes the damaged ones" if target is not None
               else "`anchorprune index build --force` rebuilds from the champion, serves the result and removes "
                    "damaged versions that do not serve")
        raise fail(f"{bad} damaged version(s); {fix}")


@index_app.command("unlock")
def index_unlock(
    params: ParamsOpt = Path("params.yaml"),
    force: Annotated[bool, typer.Option("--force", help="remove a lock whose owner may still be running")] = False,
) -> None:
    """Remove a build lock left behind by a build that is gone (refuses a live one unless --force)."""
    ws, idx = open_index(params)
    with exit_on(INDEX, SYSTEM, where=where(ws)):
        typer.echo(idx.unlock(force=force))
