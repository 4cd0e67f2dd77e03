"""The ``anchorprune`` command line: one subcommand per pipeline stage.

Heavy imports (torch, mlflow, prefect, GX) happen inside the commands, so
``anchorprune --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anchorprune.config import ConfigError, Settings, load_settings, project_root

app = typer.Typer(
    name="anchorprune",
    help="Structural Anchor Pruning for ColPali-style retrieval: data, calibrate, evaluate, promote, index.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, validate and version datasets (data/ tracked by data.dvc).", no_args_is_help=True)
index_app = typer.Typer(help="Build, search, inspect and roll back the pruned index.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]


def settings_or_exit(params: Path) -> Settings:
    """Load the config or exit 2 with the error naming the bad key."""
    try:
        return load_settings(params)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def not_yet(stage: str, issue: int) -> None:
    """A stage whose issue has not landed: say so and fail (nothing pretends to work)."""
    typer.echo(f"'{stage}' is not implemented yet (issue #{issue}).", err=True)
    raise typer.Exit(3)


# ---------------------------------------------------------------- doctor
@app.command()
def doctor(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the stack's versions and where each part lives (MLflow, Prefect, Elasticsearch, GPU)."""
    from anchorprune.cli.doctor import report

    typer.echo(report(params))


# ---------------------------------------------------------------- config
@app.command("check-config")
def check_config(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate params.yaml and print its hash."""
    cfg = settings_or_exit(params)
    typer.echo(f"{params}: ok (config hash {cfg.config_hash()}, backbones: {[b.name for b in cfg.backbones]})")


# ---------------------------------------------------------------- data (issue #6)
def _data_errors():
    """The data layer's named errors: printed as one clear message, exit 1."""
    from anchorprune.data.demo import DemoAssetsError
    from anchorprune.data.pdfs import PdfError
    from anchorprune.data.schema import DatasetError
    from anchorprune.data.validation import DataValidationError
    from anchorprune.data.versioning import DataVersionError
    from anchorprune.data.vidore_ids import DatasetUnavailableError

    return (DemoAssetsError, PdfError, DatasetError, DataValidationError, DataVersionError,
            DatasetUnavailableError, FileNotFoundError, ValueError)


def _run_data(fn):
    import logging
    import time

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    try:
        out = fn()
    except _data_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return out, time.perf_counter() - t0


def _data_root(cfg: Settings, params: Path) -> Path:
    """``paths.data_dir``, relative to the params file's folder (not the current one)."""
    p = cfg.paths.data_dir
    return p if p.is_absolute() else project_root(params) / p


def _echo_built(final: Path, manifest: dict, seconds: float) -> None:
    c = manifest["counts"]
    typer.echo(f"{final}: {c['pages']} pages, {c['queries']} queries, {c['qrels']} qrels "
               f"(validated, {seconds:.1f} s); version it with `anchorprune data add`")


NameOpt = Annotated[str | None, typer.Option("--name", help="dataset folder under data/ (default: data.dataset)")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="cap rows/queries/pages for quick runs")]


@data_app.command("build-demo")
def data_build_demo(
    params: ParamsOpt = Path("params.yaml"),
    variant: Annotated[str | None, typer.Option(help="small (291 pages) | large (677); default data.demo_variant")] = None,
    name: NameOpt = None,
    cache_dir: Annotated[Path, typer.Option(help="where the .deb is downloaded and unpacked")] = Path("cache/debs"),
    pdf_dir: Annotated[Path | None, typer.Option(help="use R manual PDFs from this folder instead of apt")] = None,
    max_pages_per_doc: Annotated[int | None, typer.Option(min=1, help="cap pages per manual (quick runs)")] = None,
) -> None:
    """Build the offline demo corpus from Debian's r-doc-pdf (R-FAQ questions -> pages); needs apt."""
    from anchorprune.data.demo import build_demo

    cfg = settings_or_exit(params)
    (final, manifest), secs = _run_data(lambda: build_demo(
        _data_root(cfg, params), name=name or cfg.data.dataset, dpi=cfg.data.dpi, variant=variant or cfg.data.demo_variant,
        cache_dir=cache_dir, pdf_dir=pdf_dir, blank_titles=cfg.data.blank_titles,
        max_pages_per_doc=max_pages_per_doc or cfg.data.limit))
    _echo_built(final, manifest, secs)


@data_app.command("pdfs")
def data_pdfs(
    pdf_dir: Annotated[Path | None, typer.Argument(help="folder of PDFs (default: data.pdf_dir)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    name: NameOpt = None,
    limit: LimitOpt = None,
    blank_titles: Annotated[bool | None, typer.Option(help="blank outline titles on their page")] = None,
) -> None:
    """Build a dataset from your own PDFs: pages + text layer, weak-label queries from each outline."""
    from anchorprune.data.pdfs import build_pdf_dataset
    from anchorprune.data.versioning import build_staged

    cfg = settings_or_exit(params)
    src = pdf_dir or cfg.data.pdf_dir
    if src is None:
        typer.echo("error: give a PDF folder (argument) or set data.pdf_dir in params.yaml", err=True)
        raise typer.Exit(2)
    ds_name = name or cfg.data.dataset
    blank = cfg.data.blank_titles if blank_titles is None else blank_titles
    (final, manifest), secs = _run_data(lambda: build_staged(_data_root(cfg, params), ds_name, lambda s: build_pdf_dataset(
        src, s, name=ds_name, dpi=cfg.data.dpi, blank_titles=blank, limit=limit or cfg.data.limit)))
    _echo_built(final, manifest, secs)


@data_app.command("vidore")
def data_vidore(
    ids: Annotated[list[str] | None, typer.Argument(help="HF ids or save_to_disk folders (default: data.vidore_ids)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    name: NameOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Build a dataset from ViDoRe v1/v2/v3 (hub cache or local copies); languages and protocol from params.yaml."""
    from anchorprune.data.versioning import build_staged
    from anchorprune.data.vidore import build_vidore_dataset

    cfg = settings_or_exit(params)
    sources = list(ids or cfg.data.vidore_ids)
    if not sources:
        typer.echo("error: give ViDoRe ids (arguments) or set data.vidore_ids in params.yaml", err=True)
        raise typer.Exit(2)
    ds_name = name or cfg.data.dataset
    (final, manifest), secs = _run_data(lambda: build_staged(_data_root(cfg, params), ds_name, lambda s: build_vidore_dataset(
        sources, s, name=ds_name, limit=limit or cfg.data.limit, languages=cfg.data.vidore_languages,
        protocol=cfg.data.vidore_protocol)))
    _echo_built(final, manifest, secs)


@data_app.command("validate")
def data_validate(params: ParamsOpt = Path("params.yaml"), name: NameOpt = None) -> None:
    """Run the Great Expectations suites on data/<dataset> and print the report (exit 1 on failure)."""
    from anchorprune.data.validation import validate_dataset_dir

    cfg = settings_or_exit(params)
    report, _ = _run_data(lambda: validate_dataset_dir(_data_root(cfg, params) / (name or cfg.data.dataset)))
    typer.echo(report.render())


@data_app.command("add")
def data_add(
    params: ParamsOpt = Path("params.yaml"),
    push: Annotated[bool, typer.Option(help="push to the default DVC remote (.dvc-remote/)")] = True,
) -> None:
    """Track data/ with DVC (data.dvc; dvc init and a local remote on first use) and print the data version."""
    from anchorprune.data.versioning import dvc_add

    cfg = settings_or_exit(params)
    version, secs = _run_data(lambda: dvc_add(project_root(params), _data_root(cfg, params), push=push))
    typer.echo(f"data version {version} ({secs:.1f} s); commit data.dvc"
               + (" (pushed to the default remote)" if push else ""))


@data_app.command("version")
def data_version_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the data version (the md5 in data.dvc next to the params file), or 'untracked'."""
    from anchorprune.data.versioning import data_version

    version, _ = _run_data(lambda: data_version(project_root(params)))
    typer.echo(version or "untracked")


# ---------------------------------------------------------------- stages (issue #7)
BackboneOpt = Annotated[str | None, typer.Option("--backbone", "-b", help="only this backbone (default: all)")]


def _workspace(params: Path):
    from anchorprune.stages.workspace import Workspace

    return Workspace(settings_or_exit(params), project_root(params))


def _stage(fn):
    """Run a stage; a bad or missing dataset is one clear error (exit 1), not a traceback."""
    try:
        return fn()
    except _data_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _backbones(ws, name: str | None):
    try:
        return [ws.settings.backbone(name)] if name else list(ws.settings.backbones)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def encode(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Encode pages and queries once per backbone into the features cache.

    With ``encode.runner: dask`` (the default) the missing pages are encoded in shards on a Dask
    cluster by the Prefect encode flow; with ``inline`` in this process.
    """
    from anchorprune.stages.encode import stage_encode

    ws = _workspace(params)
    names = _backbones(ws, backbone)
    if ws.settings.encode.runner == "dask":
        _own_prefect_home(ws.root)
        from flows.encode import encode_flow

        for b in names:
            out = _stage(lambda b=b: encode_flow(params=str(params.resolve()), root=str(ws.root), backbone=b.name))
            o = out[b.name]
            typer.echo(f"{b.name}: {o['pages']} pages, {o['queries']} queries encoded"
                       + (f" ({o['sharded']['encoded']} pages in shards on Dask)" if o.get("sharded") else ""))
        return
    for b in names:
        corpus = _stage(lambda b=b: stage_encode(ws, b))
        typer.echo(f"{b.name}: {len(corpus.features)} pages, {len(corpus.queries)} queries encoded")


@app.command()
def calibrate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Per backbone: SR-by-layer curve on calibration pairs, then the SR-guided window."""
    from anchorprune.stages.calibrate import stage_calibrate

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        r = _stage(lambda b=b: stage_calibrate(ws, b))
        typer.echo(f"{b.name}: SR window layers {r.window[0]}-{r.window[-1]} of {r.num_layers} "
                   f"(alpha {r.alpha:.2f}, beta {r.beta:.2f}, {r.num_pairs} pairs)")


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Methods x gamma x windows from the features cache, logged to MLflow."""
    from anchorprune.stages.evaluate import stage_evaluate
    from anchorprune.tracking.report import results_table

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        typer.echo(results_table(_stage(lambda b=b: stage_evaluate(ws, b)), title=f"{b.name} ({ws.settings.data.dataset})"))


@app.command()
def promote(params: ParamsOpt = Path("params.yaml"), backbone: BackboneOpt = None) -> None:
    """Apply the promotion rule and move the registry alias 'champion'."""
    from anchorprune.stages.promote import stage_promote

    ws = _workspace(params)
    for b in _backbones(ws, backbone):
        d = _stage(lambda b=b: stage_promote(ws, b))
        typer.echo(f"{b.name}: {'PROMOTED' if d.promoted else 'kept'}: {d.reason}")


def _own_prefect_home(root: Path) -> None:
    """Keep this checkout's Prefect runs in ``<root>/.prefect`` unless PREFECT_HOME is set (before prefect imports).

    A new PREFECT_HOME migrates its database on the first run (~20 s idle, longer on a busy machine):
    the temporary server gets 120 s to start instead of Prefect's 20.
    """
    import os

    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def pipeline(
    params: ParamsOpt = Path("params.yaml"),
    rebuild_data: Annotated[bool, typer.Option(help="rebuild the dataset even if data/ has it")] = False,
    query: Annotated[str | None, typer.Option(help="search the new index with this query at the end")] = None,
) -> None:
    """data -> calibrate -> evaluate -> promote -> index, as one Prefect flow, then a search."""
    settings_or_exit(params)
    root = project_root(params)
    _own_prefect_home(root)
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(params=str(params.resolve()), root=str(root), rebuild_data=rebuild_data)
    typer.echo(f"data version {result['data_version']}; windows {result['windows']}")
    for name, p in result["promotion"].items():
        typer.echo(f"{name}: {p['reason']}")
    if result["index"] is None:
        typer.echo("no certified champion: the index was not built (see reports/promotion/ for every "
                   "candidate's interval and why it failed)")
        return
    idx = result["index"]
    typer.echo(f"index {idx['index']} {'now serves' if idx.get('rebuilt', True) else 'unchanged, still serves'} "
               f"version {idx['version']}" + ("" if idx.get("rebuilt", True) else f" ({idx['reason']})"))
    from anchorprune.stages.search import stage_search_report
    from anchorprune.stages.workspace import Workspace

    ws = Workspace(settings_or_exit(params), root)
    q = query or next(iter(ws.dataset.queries.values()))
    hits, report = stage_search_report(ws, q, k=5)
    _echo_hits(ws, q, hits)
    _echo_scoring(report)


@app.command()
def serve(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the scheduled Prefect deployments (long-running; needs a Prefect server, see README)."""
    settings_or_exit(params)
    _own_prefect_home(project_root(params))
    from flows.deployments import DeployError
    from flows.deployments import main as serve_deployments

    try:
        serve_deployments(str(params.resolve()), str(project_root(params)))
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def deploy(
    pool: Annotated[str, typer.Option("--pool", help="the process work pool to register on")] = "anchorprune",
    params: ParamsOpt = Path("params.yaml"),
    create_pool: Annotated[bool, typer.Option(help="create the pool (type process) when it does not exist")] = True,
) -> None:
    """Register the scheduled deployments on a Prefect work pool; `prefect worker start --pool NAME` runs them."""
    cfg = settings_or_exit(params)
    root = project_root(params)
    _own_prefect_home(root)
    from flows.concurrency import index_limit_name
    from flows.deployments import DeployError, deploy_to_pool

    try:
        ids = deploy_to_pool(pool, str(params.resolve()), str(root), create_pool=create_pool)
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    s = cfg.schedule
    crons = {"reindex": s.reindex_cron, "recalibrate": s.recalibrate_cron}
    for name, deployment_id in ids.items():
        typer.echo(f"{name}: on work pool {pool}, cron '{crons[name.split('/')[0]]}' ({s.timezone}), "
                   f"one run at a time (id {deployment_id})")
    typer.echo(f"global concurrency limit {index_limit_name(cfg.index.name)}: one rebuild of index "
               f"{cfg.index.name} at a time, on every worker")
    typer.echo(f"start a worker on any host with a checkout of this project (runs start in $ANCHORPRUNE_ROOT, "
               f"default {root}):\n  prefect worker start --pool {pool}")


@app.command()
def plots(
    revs: Annotated[list[str] | None, typer.Argument(help="git revisions to compare (default: the workspace)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="folder for index.html (default: <reports_dir>/plots)")] = None,
) -> None:
    """The dvc.yaml plots as one offline HTML page (DVC fills the templates, vl-convert draws SVG; no CDN)."""
    from anchorprune.tracking.dvc_plots import PlotsError, render_offline

    cfg = settings_or_exit(params)
    root = project_root(params)
    reports = cfg.paths.reports_dir if cfg.paths.reports_dir.is_absolute() else root / cfg.paths.reports_dir
    try:
        path = render_offline(root, out or reports / "plots", list(revs or []))
    except PlotsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {path} (open it in a browser; works offline)")


# ---------------------------------------------------------------- index (issues #8, #13)
# `index build` runs the pipeline's index stage (stages.stage_index: the registry's @champion config,
# window-only capture through the features cache, pages whose content hash is unchanged reused, build ->
# verify -> swap -> prune to index.keep_versions) with the build lock held throughout. status/rollback/verify/
# unlock work even when the serving version is broken; every failure is one line and a non-zero exit.
def _index_errors():
    from anchorprune.evaluation.scoring import ScoringError
    from anchorprune.index import IndexStoreError
    from anchorprune.stages.index import IndexStageError

    return (IndexStoreError, ScoringError, IndexStageError)


def _open_index(params: Path):
    from anchorprune.index import open_index

    cfg = settings_or_exit(params)
    from anchorprune.index.local import index_root

    root = index_root(cfg.paths.resolve(cfg.paths.index_dir, project_root(params)))
    try:
        return open_index(cfg.index, root)
    except _index_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _index_call(fn):
    try:
        return fn()
    except _index_errors() as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
    import logging

    from anchorprune.stages.index import stage_index

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = _index_call(lambda: stage_index(_workspace(params), wait=wait, force=force))
    if not info.get("rebuilt", True):
        typer.echo(f"index {info['index']} ({info['backend']}) unchanged: still serves v{info['version']} "
                   f"({info['reason']}; --force rebuilds)")
        return
    typer.echo(f"index {info['index']} ({info['backend']}) now serves v{info['version']}: {info['pages']} pages, "
               f"{info['vectors']} vectors, {info['bytes'] / 1e6:.1f} MB; re-encoded {info['reencoded_pages']}, "
               f"reused {info['reused_pages']}")


@index_app.command("search")
def index_search(
    query: Annotated[str, typer.Argument(help="query text (encoded with the champion's backbone)")],
    params: ParamsOpt = Path("params.yaml"),
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="hits to print")] = 10,
) -> None:
    """Search the serving index version with a text query: page, document, first line, score."""
    if not query.strip():
        typer.echo('error: the query is empty; pass the text to search for, e.g. `anchorprune index search '
                   '"how do I install R packages"`', err=True)
        raise typer.Exit(2)
    from anchorprune.stages.search import stage_search_report

    ws = _workspace(params)
    idx = _open_index(params)
    _index_call(lambda: idx.search_many([], 1))          # the cheap checks first: no model load for a broken index
    hits, report = _index_call(lambda: stage_search_report(ws, query, k=k))
    _echo_hits(ws, query, hits)
    _echo_scoring(report)


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


def _echo_hits(ws, query: str, hits) -> None:
    """The hits as a table, under a line naming the index version and the model that built it."""
    from anchorprune.stages.index import open_serving_index
    from anchorprune.tracking.summary import describe_hits

    serving = _index_call(lambda: open_serving_index(ws).current())
    meta = (serving.manifest.get("meta") or {}) if serving is not None else {}
    typer.echo(f"{query!r}: index {ws.settings.index.name} v{serving.number if serving else '-'}, "
               f"model {meta.get('model', '-')} v{meta.get('model_version', '-')} "
               f"({meta.get('method', '-')}, gamma {meta.get('gamma', '-')}), data {meta.get('data_version', '-')}")
    for r in describe_hits(ws.dataset.corpus, hits):
        where = f"{r['document']} p.{r['page']}" if r["page"] is not None else r["document"]
        typer.echo(f"{r['rank']:3d}. {r['score']:7.3f}  {r['page_id']:<18} {where:<20} {r['title']}")


@index_app.command("status")
def index_status(
    params: ParamsOpt = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="print the stats as JSON")] = False,
) -> None:
    """Show the serving version, every version's health, and which ones a rollback can serve."""
    import json

    idx = _open_index(params)
    pointer = _index_call(idx.life.pointer_problem)
    health = _index_call(idx.health)
    cur = next((h for h in health if h.serving), None)
    target = _index_call(idx.life.rollback_target)
    if as_json:
        stats = _index_call(idx.stats) if cur is not None and cur.ok else None
        out = stats.as_dict() if stats else {"name": idx.name, "backend": idx.backend, "current": None}
        out["pointer_problem"] = pointer
        out["rollback_target"] = target
        out["health"] = [{"version": h.number, "ok": h.ok, "problem": h.problem, "served": h.served,
                          "serving": h.serving} for h in health]
        typer.echo(json.dumps(out, indent=2))
        return
    from anchorprune.index.first_stage import AUTO_THRESHOLD_PAGES, auto_stage

    threshold = idx.first_stage_threshold or AUTO_THRESHOLD_PAGES
    stage = idx.first_stage + (f" ({idx.first_stage_auto} from {threshold} pages, exact below)"
                               if idx.first_stage == "auto" else "")
    typer.echo(f"index {idx.name} ({idx.backend}, {idx.dtype}, first stage {stage})")
    if pointer:
        typer.echo(f"  ! serving pointer: {_one_line(pointer)}")
    elif cur is None:
        typer.echo("  no serving version: run `anchorprune index build`")
    for h in health:
        mark = "*" if h.serving else " "
        served = "served" if h.served else "never served"
        if not h.ok:
            typer.echo(f"  {mark} v{h.number}  DAMAGED ({served}): {_one_line(h.problem or '')}")
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
            typer.echo(f"      searches use: {'exact MaxSim over every page' if answers == 'none' else answers}"
                       + (f" (candidates {idx.candidates}, rescored exactly)" if answers != "none" else "")
                       + (f"; v{v.number} was built for {built}, so it falls back: rebuild to use {answers}"
                          if answers not in ("none", "mean", built) else ""))
    if pointer or (cur is not None and not cur.ok):
        typer.echo(f"  fix: `anchorprune index rollback` serves v{target}" if target is not None
                   else "  fix: no healthy version that served is left: `anchorprune index build`")


@index_app.command("rollback")
def index_rollback(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the newest healthy version that served before the serving one (works when the serving one is broken)."""
    idx = _open_index(params)
    before = idx.life.pointer_problem() is None and _index_call(idx.life.serving)
    prev = _index_call(idx.rollback)
    typer.echo(f"index {idx.name}: rolled back from {f'v{before}' if before else 'a broken pointer'} to "
               f"v{prev.number}")


@index_app.command("verify")
def index_verify(
    params: ParamsOpt = Path("params.yaml"),
    version: Annotated[int | None, typer.Option("--version", help="check only this version")] = None,
) -> None:
    """Check every checksum of every version (or one); exit 1 naming each damaged file."""
    idx = _open_index(params)
    health = [h for h in _index_call(lambda: idx.health(full=True)) if version is None or h.number == version]
    if version is not None and not health:
        typer.echo(f"error: index {idx.name} has no version v{version}; `anchorprune index status` lists them",
                   err=True)
        raise typer.Exit(1)
    bad = 0
    for h in health:
        if h.ok:
            typer.echo(f"v{h.number}: ok{' (serving)' if h.serving else ''}")
        else:
            bad += 1
            typer.echo(f"v{h.number}: DAMAGED{' (serving)' if h.serving else ''}: {_one_line(h.problem or '')}",
                       err=True)
    if bad:
        typer.echo(f"error: {bad} damaged version(s); `anchorprune index rollback` serves the last healthy one, "
                   "`anchorprune index build` writes a fresh one", err=True)
        raise typer.Exit(1)


@index_app.command("unlock")
def index_unlock(
    params: ParamsOpt = Path("params.yaml"),
    force: Annotated[bool, typer.Option("--force", help="remove a lock whose owner may still be running")] = False,
) -> None:
    """Remove a build lock left behind by a build that is gone (refuses a live one unless --force)."""
    idx = _open_index(params)
    typer.echo(_index_call(lambda: idx.unlock(force=force)))
