"""Great Expectations (1.x, ephemeral context, suites in code) checks on a dataset folder.

Run on the staging folder before anything is moved into ``data/``. What is checked:

- corpus, queries, qrels: columns and types, non-null, at least one page, unique ids
  (``page_id``, ``query_id``, the (query_id, page_id) pair), page numbers >= 1, relevance >= 0;
- every qrel points to an existing page and query, every query has a qrel;
- every image decodes and has a sane size (``MIN_SIDE`` .. ``MAX_SIDE`` pixels);
- duplicate page content (same ``content_hash``) and an empty query set are *flagged*
  (severity warning: reported and logged, not failing);
- with the optional ``source`` column (corpus and queries, both or neither): it is never null
  or empty, and every qrel joins a query and a page of the same source (a query is only ever
  ranked against its own source's pages, docs/method.md §5).

A failure raises :class:`DataValidationError` whose message names each failed check with
the offending rows and ids. GX is imported lazily (its import takes ~4-5 s).
"""

from __future__ import annotations

import functools
import io
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anchorprune.data.schema import CORPUS_COLUMNS, QUERIES_COLUMNS, SOURCE_COLUMN, read_tables

log = logging.getLogger(__name__)

MIN_SIDE = 16          # pixels: smaller is not a page
MAX_SIDE = 20_000      # pixels: larger is a decompression bomb or a wrong dpi
MAX_LISTED = 10        # ids listed per failed check in the report


class DataValidationError(ValueError):
    """A dataset failed validation; ``report`` holds the failed checks."""

    def __init__(self, report: ValidationReport, hint: str | None = None):
        self.report = report
        super().__init__(report.render(hint))


@dataclass
class CheckResult:
    table: str
    check: str
    severity: str                      # "critical" | "warning"
    success: bool
    rows: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    detail: str = ""

    def line(self) -> str:
        ids = ", ".join(repr(i) for i in self.ids[:MAX_LISTED])
        more = f" (+{len(self.ids) - MAX_LISTED} more)" if len(self.ids) > MAX_LISTED else ""
        rows = f" rows {self.rows[:MAX_LISTED]}" if self.rows else ""
        what = f": {ids}{more}" if ids else ""
        detail = f" [{self.detail}]" if self.detail else ""
        return f"{self.table}: {self.check}{rows}{what}{detail}"


@dataclass
class ValidationReport:
    dataset: str
    results: list[CheckResult]

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity != "critical"]

    @property
    def success(self) -> bool:
        return not self.failures

    def render(self, hint: str | None = None) -> str:
        """The report; ``hint`` replaces the closing advice (the default suits a build)."""
        head = (f"dataset {self.dataset}: {len(self.results)} checks, "
                f"{len(self.failures)} failed, {len(self.warnings)} warnings")
        lines = [head]
        lines += [f"  FAILED  {r.line()}" for r in self.failures]
        lines += [f"  warning {r.line()}" for r in self.warnings]
        if self.failures:
            lines.append("  " + (hint or "nothing was written to data/; fix the source and rebuild"))
        return "\n".join(lines)


def image_table(root: Path, corpus: pd.DataFrame) -> pd.DataFrame:
    """Decode every image (PIL verify + load): one row per page with ok/width/height/error."""
    from PIL import Image

    rows = []
    for pid, rel in zip(corpus["page_id"], corpus["image_path"], strict=True):
        rec: dict[str, Any] = {"page_id": pid, "decodes": False, "width": None, "height": None, "error": ""}
        if not isinstance(rel, str):
            rec.update(decodes=None, error="no image")          # text-only page: allowed
            rows.append(rec)
            continue
        try:
            data = (root / rel).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                rec.update(decodes=True, width=im.width, height=im.height)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image
            msg = re.sub(r"<_io.BytesIO object at 0x[0-9a-f]+>", str(rel), str(exc))
            rec["error"] = f"{type(exc).__name__}: {msg} in {rel}"
        rows.append(rec)
    df = pd.DataFrame(rows, columns=["page_id", "decodes", "width", "height", "error"])
    return df[df["decodes"].notna()].reset_index(drop=True).astype({"decodes": bool})


def _expectations(gxe, query_ids: list[str], page_ids: list[str], judged: list[str],
                  sourced: bool = False) -> dict[str, list]:
    """The suites, one per table, in code; each expectation carries the sentence the report prints.

    ``sourced``: the corpus has a ``source`` column, so the queries must too, and qrels must not
    cross sources (checked on the ``qrel_sources`` table: each qrel with both ends' sources).
    """
    src = [SOURCE_COLUMN] if sourced else []

    def nn(col: str, table: str):
        return gxe.ExpectColumnValuesToNotBeNull(column=col, description=f"{table}.{col} is never null")

    def unique(col: str, what: str, **kw):
        return gxe.ExpectColumnValuesToBeUnique(column=col, description=what, **kw)

    ints = ["int64", "int32", "int"]

    def source_checks(table: str) -> list:
        if not sourced:
            return []
        return [nn(SOURCE_COLUMN, table),
                gxe.ExpectColumnValueLengthsToBeBetween(column=SOURCE_COLUMN, min_value=1,
                                                        description=f"{table}.{SOURCE_COLUMN} is not empty")]

    return {
        "corpus": [
            gxe.ExpectTableColumnsToMatchSet(
                column_set=[*CORPUS_COLUMNS, *src],
                exact_match=True, description="corpus has exactly the schema's columns"),
            gxe.ExpectTableRowCountToBeBetween(min_value=1, description="corpus is not empty (no pages)"),
            nn("page_id", "corpus"), nn("content_hash", "corpus"), nn("source_doc", "corpus"),
            nn("page_number", "corpus"),
            unique("page_id", "page ids are unique (duplicate page_id)"),
            gxe.ExpectColumnValuesToBeInTypeList(column="page_number", type_list=ints,
                                                 description="page_number is an integer"),
            gxe.ExpectColumnValuesToBeBetween(column="page_number", min_value=1,
                                              description="page_number is >= 1"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="page_id", min_value=1,
                                                    description="page_id is not empty"),
            unique("content_hash", "page content is unique (duplicate page content)", severity="warning"),
            *source_checks("corpus"),
        ],
        "queries": [
            gxe.ExpectTableColumnsToMatchSet(column_set=[*QUERIES_COLUMNS, *src], exact_match=True,
                                             description="queries has exactly the schema's columns "
                                                         "(the same source column as the corpus)"),
            gxe.ExpectTableRowCountToBeBetween(min_value=1, severity="warning",
                                               description="there are queries (a corpus alone cannot be evaluated)"),
            nn("query_id", "queries"), nn("text", "queries"),
            unique("query_id", "query ids are unique (duplicate query_id)"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, description="query text is not empty"),
            gxe.ExpectColumnValuesToBeInSet(column="query_id", value_set=judged,
                                            description="every query has a qrel (query without qrels)"),
            *source_checks("queries"),
        ],
        **({"sources": [
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="query_source", column_B="page_source", ignore_row_if="either_value_is_missing",
                description="every qrel joins a query and a page of the same source (cross-source qrel)"),
        ]} if sourced else {}),
        "qrels": [
            gxe.ExpectTableColumnsToMatchSet(column_set=["query_id", "page_id", "relevance"], exact_match=True,
                                             description="qrels has exactly the schema's columns"),
            nn("query_id", "qrels"), nn("page_id", "qrels"), nn("relevance", "qrels"),
            gxe.ExpectColumnValuesToBeInTypeList(column="relevance", type_list=ints,
                                                 description="relevance is an integer"),
            gxe.ExpectColumnValuesToBeBetween(column="relevance", min_value=0, description="relevance is >= 0"),
            gxe.ExpectColumnValuesToBeInSet(column="query_id", value_set=query_ids,
                                            description="every qrel points to an existing query"),
            gxe.ExpectColumnValuesToBeInSet(column="page_id", value_set=page_ids,
                                            description="every qrel points to an existing page"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "page_id"],
                                                description="(query_id, page_id) pairs are unique"),
        ],
        "images": [
            gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True],
                                            description="every page image decodes"),
            gxe.ExpectColumnValuesToBeBetween(column="width", min_value=MIN_SIDE, max_value=MAX_SIDE,
                                              description=f"image width is {MIN_SIDE}..{MAX_SIDE} px"),
            gxe.ExpectColumnValuesToBeBetween(column="height", min_value=MIN_SIDE, max_value=MAX_SIDE,
                                              description=f"image height is {MIN_SIDE}..{MAX_SIDE} px"),
        ],
    }


_ID_COLUMN = {"corpus": "page_id", "queries": "query_id", "qrels": None, "images": "page_id", "sources": None}


def _describe(exp) -> str:
    return exp.description or type(exp).__name__


def _bad_ids(df: pd.DataFrame, table: str, rows: list[int], exp) -> list[str]:
    if not rows:
        return []
    sub = df.iloc[[r for r in rows if 0 <= r < len(df)]]
    if table == "qrels":
        return [f"{q}->{p}" for q, p in zip(sub["query_id"], sub["page_id"], strict=True)]
    if table == "sources":
        return [f"{q} ({qs})->{p} ({ps})" for q, p, qs, ps in
                zip(sub["query_id"], sub["page_id"], sub["query_source"], sub["page_source"], strict=True)]
    col = _ID_COLUMN[table]
    if table == "images" and "error" in sub and sub["error"].astype(bool).any():
        return [f"{pid} ({err})" if err else str(pid) for pid, err in zip(sub[col], sub["error"], strict=True)]
    return [str(v) for v in sub[col]] if col in sub else []


@functools.cache
def _context():
    """One ephemeral GX context per process (each new one makes a temp docs folder)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)      # GX sets some of its loggers to INFO
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def source_pairs(corpus: pd.DataFrame, queries: pd.DataFrame, qrels: pd.DataFrame) -> pd.DataFrame:
    """Each qrel with its query's and its page's ``source`` (None where a side or the column is missing).

    >>> c = pd.DataFrame({"page_id": ["a", "b"], "source": ["x", "y"]})
    >>> q = pd.DataFrame({"query_id": ["q"], "source": ["x"]})
    >>> source_pairs(c, q, pd.DataFrame({"query_id": ["q", "q"], "page_id": ["a", "b"]})).values.tolist()
    [['q', 'a', 'x', 'x'], ['q', 'b', 'x', 'y']]
    """
    def lookup(df: pd.DataFrame, key: str) -> dict:
        if SOURCE_COLUMN not in df or key not in df:
            return {}
        return {k: (v if isinstance(v, str) else None) for k, v in zip(df[key], df[SOURCE_COLUMN], strict=True)}

    qsrc, psrc = lookup(queries, "query_id"), lookup(corpus, "page_id")
    out = qrels[["query_id", "page_id"]].copy() if {"query_id", "page_id"} <= set(qrels) else \
        pd.DataFrame(columns=["query_id", "page_id"])
    out["query_source"] = [qsrc.get(q) for q in out["query_id"]]
    out["page_source"] = [psrc.get(p) for p in out["page_id"]]
    return out.reset_index(drop=True)


def validate_tables(corpus: pd.DataFrame, queries: pd.DataFrame, qrels: pd.DataFrame, images: pd.DataFrame,
                    name: str = "dataset") -> ValidationReport:
    """Run the GX suites on the four tables; returns the report (does not raise)."""
    import great_expectations as gx

    gxe = gx.expectations
    page_ids = corpus["page_id"].dropna().astype(str).unique().tolist() if "page_id" in corpus else []
    query_ids = queries["query_id"].dropna().astype(str).unique().tolist() if "query_id" in queries else []
    judged = qrels["query_id"].dropna().astype(str).unique().tolist() if "query_id" in qrels else []
    frames = {"corpus": corpus, "queries": queries, "qrels": qrels, "images": images}
    # ids compared as strings: parquet may hand back ints for numeric-looking ids
    for t, cols in (("corpus", ["page_id"]), ("queries", ["query_id"]), ("qrels", ["query_id", "page_id"])):
        df = frames[t].copy()
        for c in cols:
            if c in df:
                df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
        frames[t] = df
    sourced = SOURCE_COLUMN in corpus.columns
    if sourced:
        frames["sources"] = source_pairs(frames["corpus"], frames["queries"], frames["qrels"])

    ctx = _context()
    run = uuid.uuid4().hex[:8]
    source = ctx.data_sources.add_pandas(f"anchorprune-{run}")
    results: list[CheckResult] = []
    for table, exps in _expectations(gxe, query_ids, page_ids, judged, sourced).items():
        df = frames[table].reset_index(drop=True)
        bd = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}-{table}-{run}", expectations=exps))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}-{table}-{run}", data=bd, suite=suite))
        if df.empty and table in ("qrels", "images", "sources"):
            continue  # nothing to check row-wise (an empty corpus/queries is caught by the row counts)
        res = vd.run(batch_parameters={"dataframe": df}, result_format={"result_format": "COMPLETE"})
        by_id = {r.expectation_config.id: r for r in res.results}
        for exp in suite.expectations:
            r = by_id[exp.id]
            info = r.result or {}
            rows = [int(i) for i in (info.get("unexpected_index_list") or []) if isinstance(i, int | float)]
            detail = ""
            if r.exception_info and r.exception_info.get("raised_exception"):
                detail = str(r.exception_info.get("exception_message", ""))[:200]
            elif not r.success and not rows and "observed_value" in info:
                detail = f"observed {info['observed_value']}"
            if not r.success and table == "corpus" and rows and "source_doc" in df and "page ids are unique" in \
                    _describe(exp):
                docs = sorted({str(d) for d in df.loc[[i for i in rows if i < len(df)], "source_doc"]})
                detail = "from " + ", ".join(repr(d) for d in docs[:MAX_LISTED])   # name the source files
            results.append(CheckResult(table=table, check=_describe(exp), severity=str(exp.severity.value),
                                       success=bool(r.success), rows=rows,
                                       ids=_bad_ids(df, table, rows, exp), detail=detail))
    return ValidationReport(dataset=name, results=results)


def validate_dataset_dir(path: str | Path, raise_on_failure: bool = True) -> ValidationReport:
    """Validate a dataset folder; raises :class:`DataValidationError` naming rows and ids on failure."""
    path = Path(path)
    corpus, queries, qrels, manifest = read_tables(path)
    name = str(manifest.get("name") or path.name)
    report = validate_tables(corpus, queries, qrels, image_table(path, corpus), name=name)
    for w in report.warnings:
        log.warning("dataset %s: %s", name, w.line())
    if raise_on_failure and not report.success:
        raise DataValidationError(report)
    log.info("dataset %s valid: %d pages, %d queries, %d qrels", name, len(corpus), len(queries), len(qrels))
    return report


def dataset_content_hash(path: str | Path) -> str:
    """sha256 over every file of a dataset folder (relative path + bytes), in a stable order."""
    from anchorprune.ioutil import tree_hash

    return tree_hash(Path(path))


def _suite_hash() -> str:
    """The suites' own version: a change to this module invalidates every cached verdict."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def ensure_valid(path: str | Path, cache_dir: str | Path | None) -> str:
    """Validate a dataset folder before a stage uses it; returns its content hash.

    A passing verdict is remembered in ``cache_dir`` under the folder's content hash (and the
    suites' version), so later stages pay one hash of the files, not a GX run. A failing dataset
    is never cached: every stage raises :class:`DataValidationError` on it.
    """

    path = Path(path)
    if not path.is_dir():
        from anchorprune.data.schema import DatasetError

        raise DatasetError(f"dataset folder {path} does not exist; build it first "
                           "(`anchorprune data build-demo`, `data vidore` or `data pdfs`)")
    digest = dataset_content_hash(path)
    marker = Path(cache_dir) / f"{digest[:32]}-{_suite_hash()}.json" if cache_dir else None
    if marker is not None and marker.exists():
        log.debug("dataset %s already validated (content %s)", path, digest[:12])
        return digest
    try:
        report = validate_dataset_dir(path)
    except DataValidationError as exc:
        raise DataValidationError(exc.report, f"the stage did not run (nothing written, nothing logged); fix or "
                                              f"rebuild {path}, then run it again") from None
    if marker is not None:
        from anchorprune.ioutil import write_json

        write_json(marker, {"dataset": str(path), "content_hash": digest, "checks": len(report.results),
                            "warnings": [w.line() for w in report.warnings]})
    return digest
