"""ViDoRe v1 and v2 (SPEC §5) through ``datasets``, written in the anchorprune schema.

- **v1** (``vidore/docvqa_test_subsampled`` ...): one row per (query, image). Pages are
  de-duplicated by the MD5 of their pixels, queries by their text; every row with a query
  gives a binary qrel (query -> page). Rows without a query are distractor pages.
- **v2** (``vidore/esg_reports_v2`` ...): configs ``corpus`` / ``queries`` / ``qrels``, split
  ``test``; qrels with ``score > 0`` are kept (relevance = the score as an int, at least 1).

``source`` is a hub id, or a local folder saved with ``datasets`` (``save_to_disk``): for v1
the folder of the split or of a ``DatasetDict`` with a ``test`` split; for v2 a folder with
``corpus/``, ``queries/`` and ``qrels/`` sub-folders. ``limit`` keeps the first ``limit`` rows
(v1) or queries (v2, with their relevant pages plus distractors up to ``limit`` pages).

Offline (``HF_HUB_OFFLINE=1`` or no network), a dataset that is not in the local HF cache
raises :class:`DatasetUnavailableError` saying so.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchorprune.data.schema import DatasetWriter

log = logging.getLogger(__name__)

VIDORE_V1 = (
    "vidore/arxivqa_test_subsampled", "vidore/docvqa_test_subsampled", "vidore/infovqa_test_subsampled",
    "vidore/tabfquad_test_subsampled", "vidore/tatdqa_test", "vidore/shiftproject_test",
    "vidore/syntheticDocQA_artificial_intelligence_test", "vidore/syntheticDocQA_energy_test",
    "vidore/syntheticDocQA_government_reports_test", "vidore/syntheticDocQA_healthcare_industry_test",
)
VIDORE_V2 = (
    "vidore/esg_reports_v2", "vidore/biomedical_lectures_v2", "vidore/economics_reports_v2",
    "vidore/esg_reports_human_labeled_v2",
)
V2_CONFIGS = ("corpus", "queries", "qrels")


class DatasetUnavailableError(RuntimeError):
    """A hub dataset is neither in the local cache nor reachable."""


def short_name(source: str) -> str:
    """A folder-safe short name: ``vidore/docvqa_test_subsampled`` -> ``docvqa_test_subsampled``.

    >>> short_name("vidore/esg_reports_v2"), short_name("/tmp/my data/")
    ('esg_reports_v2', 'my_data')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(source).rstrip("/")).name)


def vidore_version(source: str) -> int:
    """2 for v2 ids and local folders with corpus/queries/qrels, else 1."""
    p = Path(source)
    if p.is_dir():
        return 2 if all((p / c).exists() for c in V2_CONFIGS) else 1
    return 2 if source in VIDORE_V2 or source.rstrip("/").endswith("_v2") else 1


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
            raise FileNotFoundError(f"{target} does not exist (a local ViDoRe v2 copy needs corpus/, queries/, qrels/)")
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
    md5 = hashlib.md5(pil.convert("RGB").tobytes()).hexdigest()   # SPEC §5: de-duplicate pages by pixel MD5
    return data, md5


def _undecoded(ds: Any, column: str = "image"):
    """The dataset with ``column`` left as raw bytes (so images are stored exactly as published)."""
    from datasets import Image as HFImage

    return ds.cast_column(column, HFImage(decode=False)) if column in ds.column_names else ds


def add_vidore_v1(writer: DatasetWriter, source: str, *, prefix: str = "", limit: int | None = None,
                  revision: str | None = None) -> dict[str, int]:
    """Rows -> de-duplicated pages and queries with binary qrels; returns counts."""
    from tqdm import tqdm

    ds = load_split(source, revision=revision)
    missing = [c for c in ("query", "image") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing} of a ViDoRe v1 dataset (has {ds.column_names}); "
                         "is it a v2 dataset (configs corpus/queries/qrels)?")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    ds = _undecoded(ds)
    pages: dict[str, str] = {}            # pixel md5 -> page id
    queries: dict[str, str] = {}          # text -> query id
    qrels: set[tuple[str, str]] = set()
    dup_pages = 0
    for i, row in enumerate(tqdm(ds, desc=f"v1 {short_name(source)}", unit="row", disable=len(ds) < 50)):
        data, md5 = _image_bytes(row["image"])
        pid = pages.get(md5)
        if pid is None:
            pid = pages[md5] = f"{prefix}p{len(pages):05d}"
            writer.add_page(pid, data, text=None, source_doc=str(row.get("image_filename") or source),
                            page_number=int(row["page"]) if str(row.get("page") or "").isdigit() else 1)
        else:
            dup_pages += 1
        text = (row.get("query") or "").strip()
        if not text:
            continue                      # a distractor row
        qid = queries.get(text)
        if qid is None:
            qid = queries[text] = f"{prefix}q{len(queries):05d}"
            writer.add_query(qid, text)
        if (qid, pid) not in qrels:
            qrels.add((qid, pid))
            writer.add_qrel(qid, pid, 1)
        log.debug("row %d -> %s %s", i, qid, pid)
    log.info("%s: %d rows -> %d pages (%d duplicate images), %d queries, %d qrels",
             source, len(ds), len(pages), dup_pages, len(queries), len(qrels))
    return {"rows": len(ds), "pages": len(pages), "queries": len(queries), "qrels": len(qrels),
            "duplicate_images": dup_pages}


def add_vidore_v2(writer: DatasetWriter, source: str, *, prefix: str = "", limit: int | None = None,
                  revision: str | None = None) -> dict[str, int]:
    """corpus/queries/qrels configs (split test, score > 0) -> pages, queries, qrels; returns counts."""
    from tqdm import tqdm

    corpus = _undecoded(load_split(source, "corpus", revision))
    queries = load_split(source, "queries", revision)
    qrels = load_split(source, "qrels", revision)
    rels: dict[str, dict[str, int]] = {}
    for row in qrels:
        score = float(row["score"])
        if score > 0:
            rels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = max(1, int(round(score)))
    qtext = {str(r["query-id"]): str(r["query"]).strip() for r in queries}
    qids = [q for q in qtext if q in rels and qtext[q]]
    if limit is not None:
        qids = qids[:limit]
    needed = {c for q in qids for c in rels[q]}
    corpus_ids = [str(c) for c in corpus["corpus-id"]]
    keep = set(corpus_ids) if limit is None else set(needed)
    if limit is not None:
        for c in corpus_ids:
            if len(keep) >= max(limit, len(needed)):
                break
            keep.add(c)
    text_col = next((c for c in ("markdown", "text") if c in corpus.column_names), None)
    written = set()
    rows = [i for i, c in enumerate(corpus_ids) if c in keep]
    for i in tqdm(rows, desc=f"v2 {short_name(source)}", unit="page", disable=len(rows) < 50):
        row = corpus[i]
        cid = str(row["corpus-id"])
        if cid in written:
            continue
        data, _ = _image_bytes(row["image"])
        page_no = row.get("page_number_in_doc")
        writer.add_page(f"{prefix}{cid}", data, text=row.get(text_col) if text_col else None,
                        source_doc=str(row.get("doc-id") or source),
                        page_number=max(1, int(page_no)) if isinstance(page_no, int) else 1)
        written.add(cid)
    n_qrels = 0
    for q in qids:
        judged = {c: r for c, r in rels[q].items() if c in written}
        if not judged:
            log.warning("%s: query %s has no relevant page in the corpus; dropped", source, q)
            continue
        writer.add_query(f"{prefix}{q}", qtext[q])
        for c, r in judged.items():
            writer.add_qrel(f"{prefix}{q}", f"{prefix}{c}", r)
            n_qrels += 1
    counts = {"pages": len(written), "queries": len(qids), "qrels": n_qrels}
    log.info("%s: %s", source, counts)
    return counts


def build_vidore_dataset(sources: str | Sequence[str], out_dir: str | Path, *, name: str,
                         limit: int | None = None, revision: str | None = None) -> dict[str, Any]:
    """One dataset from one or more ViDoRe sources (several: ids prefixed by ``<short name>/``)."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise ValueError("no ViDoRe source given (params.yaml: data.vidore_ids)")
    writer = DatasetWriter(Path(out_dir))
    per_source = {}
    for src in sources:
        prefix = f"{short_name(src)}/" if len(sources) > 1 else ""
        add = add_vidore_v2 if vidore_version(src) == 2 else add_vidore_v1
        per_source[src] = {"version": vidore_version(src), **add(writer, src, prefix=prefix, limit=limit,
                                                                 revision=revision)}
    return writer.finish(name=name, source="vidore", revision=revision or "main",
                         extra={"sources": per_source, "limit": limit})
