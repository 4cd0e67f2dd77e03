"""``anchorprune data``: build, validate and version datasets (data/ tracked by data.dvc)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from anchorprune.cli.errors import DATA, exit_on, fail
from anchorprune.cli.options import ParamsOpt, load_workspace
from anchorprune.config import project_root

T = TypeVar("T")

data_app = typer.Typer(help="Build, validate and version datasets (data/ tracked by data.dvc).", no_args_is_help=True)

NameOpt = Annotated[str | None, typer.Option("--name", help="dataset folder under data/ (default: data.dataset)")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="cap rows/queries/pages for quick runs")]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run a data step with INFO logging; its named errors exit 1. Returns its result and the seconds it took."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    with exit_on(DATA):
        out = fn()
    return out, time.perf_counter() - t0


def _echo_built(final: Path, manifest: dict, seconds: float) -> None:
    c = manifest["counts"]
    typer.echo(f"{final}: {c['pages']} pages, {c['queries']} queries, {c['qrels']} qrels "
               f"(validated, {seconds:.1f} s); version it with `anchorprune data add`")


@data_app.command("build-demo")
def data_build_demo(
    params: ParamsOpt = Path("params.yaml"),
    variant: Annotated[str | None, typer.Option(
        help="small (291 pages) | large (677) | debian (~10.7k); default data.demo_variant")] = None,
    name: NameOpt = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="where the .deb files are downloaded and unpacked (default: cache/debs under the project)")] = None,
    pdf_dir: Annotated[Path | None, typer.Option(help="use R manual PDFs from this folder instead of apt")] = None,
    max_pages_per_doc: Annotated[int | None, typer.Option(min=1, help="cap pages per manual (quick runs)")] = None,
) -> None:
    """Build the offline demo corpus from Debian's doc packages (R-FAQ questions -> pages); needs apt."""
    from anchorprune.data.build import build_demo_dataset

    ws = load_workspace(params)
    (final, manifest), secs = timed(lambda: build_demo_dataset(
        ws.settings, ws.root, variant=variant, name=name, cache_dir=cache_dir, pdf_dir=pdf_dir,
        max_pages_per_doc=max_pages_per_doc))
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

    ws = load_workspace(params)
    d = ws.settings.data
    src = pdf_dir or d.pdf_dir
    if src is None:
        raise fail("give a PDF folder (argument) or set data.pdf_dir in params.yaml", 2)
    ds_name = name or d.dataset
    blank = d.blank_titles if blank_titles is None else blank_titles
    (final, manifest), secs = timed(lambda: build_staged(ws.data_root, ds_name,
                                                         lambda s: build_pdf_dataset(
        src, s, name=ds_name, dpi=d.dpi, blank_titles=blank, limit=limit or d.limit, strict=d.strict_pdfs)))
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

    ws = load_workspace(params)
    d = ws.settings.data
    sources = list(ids or d.vidore_ids)
    if not sources:
        raise fail("give ViDoRe ids (arguments) or set data.vidore_ids in params.yaml", 2)
    ds_name = name or d.dataset
    (final, manifest), secs = timed(lambda: build_staged(ws.data_root, ds_name,
                                                         lambda s: build_vidore_dataset(
        sources, s, name=ds_name, limit=limit or d.limit, languages=d.vidore_languages, protocol=d.vidore_protocol)))
    _echo_built(final, manifest, secs)


@data_app.command("validate")
def data_validate(params: ParamsOpt = Path("params.yaml"), name: NameOpt = None) -> None:
    """Run the Great Expectations suites on data/<dataset> and print the report (exit 1 on failure)."""
    from anchorprune.data.validation import validate_dataset_dir

    ws = load_workspace(params)
    report, _ = timed(lambda: validate_dataset_dir(ws.data_root
                                                   / (name or ws.settings.data.dataset)))
    typer.echo(report.render())


@data_app.command("add")
def data_add(
    params: ParamsOpt = Path("params.yaml"),
    push: Annotated[bool, typer.Option(help="push to the default DVC remote (.dvc-remote/)")] = True,
) -> None:
    """Track data/ with DVC (data.dvc; dvc init and a local remote on first use) and print the data version."""
    from anchorprune.data.versioning import dvc_add

    ws = load_workspace(params)
    version, secs = timed(lambda: dvc_add(ws.root, ws.data_root, push=push))
    typer.echo(f"data version {version} ({secs:.1f} s); commit data.dvc"
               + (" (pushed to the default remote)" if push else ""))


@data_app.command("version")
def data_version_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Print the data version (the md5 in data.dvc next to the params file), or 'untracked'."""
    from anchorprune.data.versioning import data_version

    version, _ = timed(lambda: data_version(project_root(params)))
    typer.echo(version or "untracked")
