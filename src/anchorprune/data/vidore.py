"""ViDoRe v1, v2 and v3 (docs/method.md §5) through ``datasets``, written in the anchorprune schema.

Two shapes exist on the hub (schemas and counts: `docs/vidore.md`):

- **QA** (the raw v1 sets, ``vidore/docvqa_test_subsampled`` ...): one row per (query, image),
  split ``test``. Pages are de-duplicated by the MD5 of their pixels, queries by their text;
  every row with a query gives a binary qrel (a repeated query keeps every row's page as a
  positive, as SAP's reference and the BEIR conversion do). Rows without a query are
  distractor pages.
- **BEIR** (configs ``corpus`` / ``queries`` / ``qrels``, split ``test``): ViDoRe v2
  (``vidore/esg_reports_v2`` ..., ids ``corpus-id`` / ``query-id``, queries with a
  ``language`` column), v1 in BEIR form (``vidore/*_beir``, no language) and v3
  (``vidore/vidore_v3_*``, ids ``corpus_id`` / ``query_id`` with underscores, six languages,
  ``markdown`` page text, a ``documents_metadata`` config). Only qrels with ``score > 0``
  are kept (relevance = the score as an int, at least 1). Ids are compared as strings, so an
  int id on one side matches a str id on the other. v2/v3 pages are not de-duplicated.

Languages (``languages``: ``"all"`` or a list such as ``["english"]``) filter the queries of
sets that have a ``language`` column, then the qrels by the kept query ids; sets without one
(v1, ``esg_reports_human_labeled_v2``) keep every query and the manifest says so.

Several sources (``protocol``):

- ``"per_dataset"`` (the default, docs/method.md §5): every source keeps its own pages and queries, with
  ids prefixed ``<short name>/`` and a ``source`` column, and evaluation ranks each source's
  queries against that source's pages only. Two sets sharing a corpus (``esg_reports_v2`` and
  ``esg_reports_human_labeled_v2``) each keep their copy.
- ``"union"``: one corpus. Pages are de-duplicated across sources by pixel MD5 (the first copy
  is kept) and qrels are remapped onto the kept copy; there is no ``source`` column.

``source`` is a hub id, or a local folder saved with ``datasets`` (``save_to_disk``): for QA the
folder of the split or of a ``DatasetDict`` with a ``test`` split; for BEIR a folder with
``corpus/``, ``queries/`` and ``qrels/`` (and optionally ``documents_metadata/`` or ``docs/``).
``limit`` keeps the first ``limit`` rows (QA) or judged queries (BEIR, after the language filter,
with their relevant pages plus distractors up to ``limit`` pages).

Offline (``HF_HUB_OFFLINE=1`` or no network), a dataset that is not in the local HF cache
raises :class:`DatasetUnavailableError` saying so.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from anchorprune.data.schema import DatasetWriter

log = logging.getLogger(__name__)

VIDORE_V1 = (
    "vidore/arxivqa_test_subsampled", "vidore/docvqa_test_subsampled", "vidore/infovqa_test_subsampled",
    "vidore/tabfquad_test_subsampled", "vidore/tatdqa_test", "vidore/shiftproject_test",
    "vidore/syntheticDocQA_artificial_intelligence_test", "vidore/syntheticDocQA_energy_test",
    "vidore/syntheticDocQA_government_reports_test", "vidore/syntheticDocQA_healthcare_industry_test",
)
VIDORE_V1_BEIR = tuple(f"{s}_beir" for s in VIDORE_V1)
VIDORE_V2 = (
    "vidore/esg_reports_v2", "vidore/biomedical_lectures_v2", "vidore/economics_reports_v2",
    "vidore/esg_reports_human_labeled_v2",
)
VIDORE_V3 = tuple(f"vidore/vidore_v3_{n}" for n in (
    "hr", "finance_en", "finance_fr", "industrial", "pharmaceuticals", "computer_science", "energy", "physics"))
V2_CONFIGS = ("corpus", "queries", "qrels")
BEIR_CONFIGS = V2_CONFIGS
DOCUMENT_CONFIGS = ("documents_metadata", "docs")      # v3, v2 (document metadata, kept in the manifest)
LANGUAGES = ("english", "french", "spanish", "german", "italian", "portuguese")   # the hub's `language` values
Protocol = Literal["per_dataset", "union"]


class DatasetUnavailableError(RuntimeError):
    """A hub dataset is neither in the local cache nor reachable."""


def short_name(source: str) -> str:
    """A folder-safe short name: ``vidore/docvqa_test_subsampled`` -> ``docvqa_test_subsampled``.

    >>> short_name("vidore/esg_reports_v2"), short_name("/tmp/my data/")
    ('esg_reports_v2', 'my_data')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(source).rstrip("/")).name)


def vidore_format(source: str) -> Literal["qa", "beir"]:
    """``"beir"`` for corpus/queries/qrels sets (v2, v3, ``*_beir``, such local folders), else ``"qa"``.

    >>> vidore_format("vidore/docvqa_test_subsampled"), vidore_format("vidore/docvqa_test_subsampled_beir")
    ('qa', 'beir')
    >>> vidore_format("vidore/esg_reports_v2"), vidore_format("vidore/vidore_v3_hr")
    ('beir', 'beir')
    """
    p = Path(source)
    if p.is_dir():
        return "beir" if all((p / c).exists() for c in BEIR_CONFIGS) else "qa"
    name = short_name(source)
    if source in VIDORE_V2 or source in VIDORE_V3 or name.endswith(("_v2", "_beir")) or "vidore_v3" in name:
        return "beir"
    return "qa"


def vidore_version(source: str) -> int:
    """The ViDoRe generation of a source: 3 (``vidore_v3_*``), 2 (``*_v2``) or 1 (QA and ``*_beir``).

    A local folder is judged by its name, then by its shape (``documents_metadata/``: 3;
    corpus/queries/qrels: 2).

    >>> vidore_version("vidore/vidore_v3_finance_en"), vidore_version("vidore/esg_reports_v2")
    (3, 2)
    >>> vidore_version("vidore/tatdqa_test"), vidore_version("vidore/tatdqa_test_beir")
    (1, 1)
    """
    name = short_name(source)
    if "vidore_v3" in name:
        return 3
    if source in VIDORE_V2 or name.endswith("_v2"):
        return 2
    if name.endswith("_beir") or source in VIDORE_V1:
        return 1
    p = Path(source)
    if p.is_dir() and vidore_format(source) == "beir":
        return 3 if (p / "documents_metadata").exists() else 2
    return 1


def normalize_languages(languages: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``None`` for all languages, else the sorted tuple of hub ``language`` values; names the bad ones.

    >>> normalize_languages("all"), normalize_languages(["English", "french"])
    (None, ('english', 'french'))
    """
    if languages is None or languages == "all" or (not isinstance(languages, str) and list(languages) == ["all"]):
        return None
    langs = [languages] if isinstance(languages, str) else list(languages)
    langs = [str(x).strip().lower() for x in langs]
    bad = [x for x in langs if x not in LANGUAGES]
    if bad or not langs:
        raise ValueError(f"unknown ViDoRe language(s) {bad or langs}: use 'all' or a list of {list(LANGUAGES)} "
                         "(the hub's `language` values)")
    return tuple(sorted(set(langs)))


def norm_id(value: Any) -> str:
    """An id as a string, the same whether the hub stored it as int, integral float or str.

    >>> norm_id(10), norm_id(10.0), norm_id(" 10 "), norm_id("a-1")
    ('10', '10', '10', 'a-1')
    """
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _column(ds: Any, *names: str, where: str) -> str:
    for n in names:
        if n in ds.column_names:
            return n
    raise ValueError(f"{where} lacks column {' or '.join(repr(n) for n in names)} (has {ds.column_names})")


def _pick_test(ds: Any, where: str):
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        if "test" not in ds:
            raise ValueError(f"{where} has splits {list(ds)}, no 'test'")
        return ds["test"]
    return ds


def load_split(source: str, config: str | None = None, revision: str | None = None):
    """The ``test`` split of ``source`` (hub id or ``save_to_disk`` folder), with a clear offline error."""
    import datasets

    p = Path(source)
    if p.is_dir():
        target = p / config if config else p
        if not target.exists():
            raise FileNotFoundError(f"{target} does not exist (a local ViDoRe BEIR-format copy needs corpus/, "
                                    "queries/, qrels/)")
        return _pick_test(datasets.load_from_disk(str(target)), str(target))
    try:
        return datasets.load_dataset(source, config, split="test", revision=revision)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        offline = any(s in text for s in ("OfflineModeIsEnabled", "Couldn't reach", "ConnectionError",
                                          "offline", "Max retries", "Name or service not known",
                                          "Temporary failure in name resolution"))
        if offline or isinstance(exc, ConnectionError):
            cache = datasets.config.HF_DATASETS_CACHE
            raise DatasetUnavailableError(
                f"{source}{'/' + config if config else ''} is not in the local HF datasets cache ({cache}) and "
                f"the hub is unreachable ({text.splitlines()[0][:200]}). Run once with network access (unset "
                "HF_HUB_OFFLINE) to cache it, point HF_HOME at a cache that has it, or pass a local folder "
                "saved with `datasets.save_to_disk`.") from exc
        raise


def _image_bytes(img: Any) -> tuple[bytes, str]:
    """(bytes to store, md5 of the decoded RGB pixels) of an HF image dict or a PIL image.

    Undecoded images (``Image(decode=False)``: ``{"bytes", "path"}``) are stored as published
    (no re-encoding of JPEGs); PIL images are stored as PNG.
    """
    from PIL import Image

    if isinstance(img, dict):
        data = img.get("bytes") or Path(img["path"]).read_bytes()
        pil = Image.open(io.BytesIO(data))
    else:
        pil, buf = img, io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    md5 = hashlib.md5(pil.convert("RGB").tobytes()).hexdigest()   # docs/method.md §5: de-duplicate pages by pixel MD5
    return data, md5


def _undecoded(ds: Any, column: str = "image"):
    """The dataset with ``column`` left as raw bytes (so images are stored exactly as published)."""
    from datasets import Image as HFImage

    return ds.cast_column(column, HFImage(decode=False)) if column in ds.column_names else ds


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


@dataclass
class SourceData:
    """One ViDoRe source read into memory (page images stay in ``rows``, fetched when written)."""

    source: str
    name: str
    version: int
    format: str
    rows: Any                                    # the (undecoded) dataset the page images come from
    pages: list[dict[str, Any]]                  # id, row, text, source_doc, page_number (+ md5 once known)
    queries: dict[str, str]                      # local query id -> text
    qrels: dict[str, dict[str, int]]             # local query id -> {local page id: relevance}
    stats: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)   # doc_id -> metadata

    def images(self, *, md5: bool = False, batch: int = 256) -> Iterator[tuple[dict[str, Any], bytes, str | None]]:
        """(page, stored bytes, pixel md5) for every page, read in batches (one arrow read per batch).

        The md5 costs a decode: it is computed only when asked (or already known).
        """
        col = self.rows.select_columns(["image"])
        for start in range(0, len(self.pages), batch):
            chunk = self.pages[start:start + batch]
            for page, img in zip(chunk, col.select([p["row"] for p in chunk])["image"], strict=True):
                if md5 and "md5" not in page:
                    data, page["md5"] = _image_bytes(img)
                elif isinstance(img, dict):
                    data = img.get("bytes") or Path(img["path"]).read_bytes()
                else:
                    data = _image_bytes(img)[0]
                yield page, data, page.get("md5")


def read_qa(source: str, *, limit: int | None = None, revision: str | None = None) -> SourceData:
    """A QA-format (raw v1) set: rows -> pixel-unique pages, text-unique queries, binary qrels."""
    from tqdm import tqdm

    ds = load_split(source, revision=revision)
    missing = [c for c in ("query", "image") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing} of a ViDoRe v1 dataset (has {ds.column_names}); "
                         "is it a BEIR-format dataset (configs corpus/queries/qrels)?")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    ds = _undecoded(ds)
    by_md5: dict[str, str] = {}           # pixel md5 -> page id
    pages: list[dict[str, Any]] = []
    queries: dict[str, str] = {}
    by_text: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    dup_pages = rows_with_query = 0
    for i, row in enumerate(tqdm(ds, desc=f"v1 {short_name(source)}", unit="row", disable=len(ds) < 50)):
        _, md5 = _image_bytes(row["image"])
        pid = by_md5.get(md5)
        if pid is None:
            pid = by_md5[md5] = f"p{len(pages):05d}"
            page = row.get("page")
            pages.append({"id": pid, "row": i, "md5": md5, "text": None,
                          "source_doc": str(row.get("image_filename") or source),
                          "page_number": int(page) if str(page or "").isdigit() else 1})
        else:
            dup_pages += 1
        text = (row.get("query") or "").strip()
        if not text:
            continue                      # a distractor row
        rows_with_query += 1
        qid = by_text.get(text)
        if qid is None:
            qid = by_text[text] = f"q{len(queries):05d}"
            queries[qid] = text
        qrels.setdefault(qid, {})[pid] = 1
    stats = {"rows": len(ds), "rows_with_query": rows_with_query, "duplicate_images": dup_pages,
             "language_column": False}
    return SourceData(source, short_name(source), vidore_version(source), "qa", ds, pages, queries, qrels, stats)


def read_beir(source: str, *, languages: tuple[str, ...] | None = None, limit: int | None = None,
              revision: str | None = None) -> SourceData:
    """A BEIR-format set (v2, v3, ``*_beir``): corpus/queries/qrels, languages filtered, score > 0."""
    corpus = _undecoded(load_split(source, "corpus", revision))
    queries = load_split(source, "queries", revision)
    qrels = load_split(source, "qrels", revision)
    where = short_name(source)
    q_id = _column(queries, "query-id", "query_id", where=f"{where}/queries")
    q_text = _column(queries, "query", where=f"{where}/queries")
    r_qid = _column(qrels, "query-id", "query_id", where=f"{where}/qrels")
    r_cid = _column(qrels, "corpus-id", "corpus_id", where=f"{where}/qrels")
    r_score = _column(qrels, "score", where=f"{where}/qrels")
    c_id = _column(corpus, "corpus-id", "corpus_id", where=f"{where}/corpus")
    _column(corpus, "image", where=f"{where}/corpus")

    has_lang = "language" in queries.column_names
    cols = [q_id, q_text] + (["language"] if has_lang else [])
    qrows = queries.select_columns(cols).to_dict()
    qtext: dict[str, str] = {}
    qlang: dict[str, str | None] = {}
    for qid, text, lang in zip(qrows[q_id], qrows[q_text], qrows.get("language", [None] * len(qrows[q_id])),
                               strict=True):
        qid = norm_id(qid)
        qtext[qid] = str(text or "").strip()
        qlang[qid] = str(lang).strip().lower() if lang is not None else None
    present = sorted({x for x in qlang.values() if x})
    if languages is not None and has_lang:
        kept_ids = {q for q, x in qlang.items() if x in languages}
        if not kept_ids:
            raise ValueError(f"{source}: no query in language(s) {list(languages)} (its `language` values: "
                             f"{present}); change data.vidore_languages or drop this set")
    else:
        kept_ids = set(qtext)

    rrows = qrels.select_columns([r_qid, r_cid, r_score]).to_dict()
    rels: dict[str, dict[str, int]] = {}
    positive_rows = 0
    for qid, cid, score in zip(rrows[r_qid], rrows[r_cid], rrows[r_score], strict=True):
        if score is None or float(score) <= 0:
            continue
        positive_rows += 1
        qid = norm_id(qid)
        if qid in kept_ids:               # qrels follow the kept queries (language filter)
            rels.setdefault(qid, {})[norm_id(cid)] = max(1, int(round(float(score))))
    qids = [q for q in qtext if q in kept_ids and q in rels and qtext[q]]
    if limit is not None:
        qids = qids[:limit]

    corpus_ids = [norm_id(c) for c in corpus[c_id]]
    needed = {c for q in qids for c in rels[q]}
    keep = set(corpus_ids) if limit is None else set(needed)
    if limit is not None:
        for c in corpus_ids:
            if len(keep) >= max(limit, len(needed)):
                break
            keep.add(c)
    text_col = next((c for c in ("markdown", "text") if c in corpus.column_names), None)
    doc_col = next((c for c in ("doc-id", "doc_id") if c in corpus.column_names), None)
    meta_cols = [c for c in (text_col, doc_col, "page_number_in_doc") if c and c in corpus.column_names]
    meta = corpus.select_columns(meta_cols).to_dict() if meta_cols else {}
    pages: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, cid in enumerate(corpus_ids):
        if cid not in keep or cid in seen:
            continue
        seen.add(cid)
        page_no = meta.get("page_number_in_doc", [None] * len(corpus_ids))[i]
        doc = meta[doc_col][i] if doc_col else None
        pages.append({"id": cid, "row": i, "text": meta[text_col][i] if text_col else None,
                      "source_doc": str(doc) if doc is not None else source,
                      "page_number": max(1, int(page_no)) if isinstance(page_no, int) else 1})

    out_q: dict[str, str] = {}
    out_r: dict[str, dict[str, int]] = {}
    for q in qids:
        judged = {c: r for c, r in rels[q].items() if c in seen}
        if not judged:
            log.warning("%s: query %s has no relevant page in the corpus; dropped", source, q)
            continue
        out_q[q], out_r[q] = qtext[q], judged
    kept_langs = sorted({qlang[q] for q in out_q if qlang[q]})
    stats = {"language_column": has_lang, "languages_present": present, "languages_kept": kept_langs,
             "queries_all_languages": len(qtext), "positive_qrels_all_languages": positive_rows}
    documents = _read_documents(source, revision)
    return SourceData(source, where, vidore_version(source), "beir", corpus, pages, out_q, out_r, stats, documents)


def _read_documents(source: str, revision: str | None) -> dict[str, dict[str, Any]]:
    """Document metadata (v3 ``documents_metadata``; v2 ``docs`` in a local copy), keyed by ``doc_id``."""
    p = Path(source)
    if p.is_dir():
        config = next((c for c in DOCUMENT_CONFIGS if (p / c).exists()), None)
    else:
        config = "documents_metadata" if vidore_version(source) == 3 else None
    if config is None:
        return {}
    try:
        ds = load_split(source, config, revision)
    except ValueError as exc:      # e.g. the *_mteb_format copies have no documents_metadata config
        if config not in str(exc):
            raise
        log.warning("%s has no %s config (%s); its pages get no document metadata", source, config, exc)
        return {}
    key = _column(ds, "doc_id", "doc-id", where=f"{short_name(source)}/{config}")
    return {norm_id(r[key]): _jsonable({k: v for k, v in r.items() if k != key}) for r in ds}


def read_source(source: str, *, languages: tuple[str, ...] | None = None, limit: int | None = None,
                revision: str | None = None) -> SourceData:
    """Read one ViDoRe source in whichever shape it has (QA or BEIR)."""
    if vidore_format(source) == "beir":
        return read_beir(source, languages=languages, limit=limit, revision=revision)
    return read_qa(source, limit=limit, revision=revision)


def _write_per_dataset(writer: DatasetWriter, data: list[SourceData]) -> None:
    for d in data:
        prefix = f"{d.name}/" if len(data) > 1 else ""
        for page, img, _ in d.images():
            writer.add_page(f"{prefix}{page['id']}", img, text=page["text"], source_doc=page["source_doc"],
                            page_number=page["page_number"], source=d.name)
        for q, text in d.queries.items():
            writer.add_query(f"{prefix}{q}", text, source=d.name)
            for p, rel in d.qrels[q].items():
                writer.add_qrel(f"{prefix}{q}", f"{prefix}{p}", rel)


def _write_union(writer: DatasetWriter, data: list[SourceData]) -> int:
    """One corpus, pages de-duplicated by pixel MD5 across sources, qrels remapped; returns the duplicates."""
    kept: dict[str | None, str] = {}      # md5 -> page id written
    dups = 0
    for d in data:
        prefix = f"{d.name}/" if len(data) > 1 else ""
        remap: dict[str, str] = {}
        for page, img, md5 in d.images(md5=True):
            if md5 in kept:
                remap[page["id"]] = kept[md5]
                dups += 1
                continue
            remap[page["id"]] = kept[md5] = f"{prefix}{page['id']}"
            writer.add_page(kept[md5], img, text=page["text"], source_doc=page["source_doc"],
                            page_number=page["page_number"])
        for q, text in d.queries.items():
            writer.add_query(f"{prefix}{q}", text)
            rels: dict[str, int] = {}
            for p, rel in d.qrels[q].items():
                rels[remap[p]] = max(rel, rels.get(remap[p], 0))
            for p, rel in rels.items():
                writer.add_qrel(f"{prefix}{q}", p, rel)
    return dups


def build_vidore_dataset(sources: str | Sequence[str], out_dir: str | Path, *, name: str,
                         limit: int | None = None, revision: str | None = None,
                         languages: str | Sequence[str] | None = "all",
                         protocol: Protocol = "per_dataset") -> dict[str, Any]:
    """One dataset folder from one or more ViDoRe sources; returns the manifest.

    Everything is read (and the language filter checked) before anything is written.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise ValueError("no ViDoRe source given (params.yaml: data.vidore_ids)")
    if protocol not in ("per_dataset", "union"):
        raise ValueError(f"unknown ViDoRe protocol {protocol!r}: use 'per_dataset' or 'union' "
                         "(params.yaml: data.vidore_protocol)")
    names = [short_name(s) for s in sources]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"two ViDoRe sources have the same short name {clash}: each source must be a "
                         "different dataset (rename a local folder)")
    langs = normalize_languages(languages)
    data = [read_source(src, languages=langs, limit=limit, revision=revision) for src in sources]
    writer = DatasetWriter(Path(out_dir))
    union_dups = 0
    if protocol == "union":
        union_dups = _write_union(writer, data)
    else:
        _write_per_dataset(writer, data)
    per_source = {}
    for d in data:
        per_source[d.source] = {"name": d.name, "version": d.version, "format": d.format, "pages": len(d.pages),
                                "queries": len(d.queries), "qrels": sum(len(r) for r in d.qrels.values()),
                                **d.stats}
        log.info("%s: %s", d.source, per_source[d.source])
    extra: dict[str, Any] = {"sources": per_source, "limit": limit, "protocol": protocol,
                             "languages": "all" if langs is None else list(langs)}
    if protocol == "union":
        extra["union_duplicate_pages"] = union_dups
    documents = {d.name: d.documents for d in data if d.documents}
    if documents:
        extra["documents"] = json.loads(json.dumps(documents, default=str))
    return writer.finish(name=name, source="vidore", revision=revision or "main", extra=extra)


def languages_label(manifest: dict[str, Any] | None) -> str:
    """What the manifest says about query languages, for reports: ``all``, ``english``, ``n/a`` ...

    >>> languages_label({"extra": {"languages": ["english"]}}), languages_label({"extra": {}})
    ('english', 'n/a')
    """
    langs = ((manifest or {}).get("extra") or {}).get("languages")
    if langs is None:
        return "n/a"
    return langs if isinstance(langs, str) else ",".join(langs)
