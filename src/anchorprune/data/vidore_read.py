"""Read one ViDoRe source (a hub id or a ``save_to_disk`` folder) in either shape, QA or BEIR.

What each shape holds and how it is normalised is described in :mod:`anchorprune.data.vidore`.
"""


from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anchorprune.data.vidore_ids import (
    DOCUMENT_CONFIGS,
    DatasetUnavailableError,
    short_name,
    vidore_format,
    vidore_version,
)

log = logging.getLogger(__name__)


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


def parquet_split(target: Path) -> list[Path]:
    """The ``test`` split's files in the hub's parquet layout: ``<config>/test-*.parquet`` (BEIR configs) or
    ``data/test-*.parquet`` (a QA set's default config), as a snapshot of the hub repository has them."""
    for d in (target, target / "data"):
        files = sorted(d.glob("test-*.parquet"))
        if files:
            return files
    return []


def load_split(source: str, config: str | None = None, revision: str | None = None):
    """The ``test`` split of ``source`` (hub id, ``save_to_disk`` folder, or a folder in the hub's parquet
    layout), with a clear offline error."""
    import datasets

    p = Path(source)
    if p.is_dir():
        target = p / config if config else p
        if not target.exists():
            raise FileNotFoundError(f"{target} does not exist (a local ViDoRe BEIR-format copy needs corpus/, "
                                    "queries/, qrels/)")
        files = parquet_split(target)
        if files:
            return datasets.Dataset.from_parquet([str(f) for f in files], keep_in_memory=False)
        if not any(target.glob("*.json")) and not (target / "dataset_dict.json").exists():
            raise FileNotFoundError(f"{target} is neither a `datasets.save_to_disk` folder nor the hub's parquet "
                                    "layout (test-*.parquet, or data/test-*.parquet)")
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
