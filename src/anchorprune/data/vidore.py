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

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchorprune.data.schema import DatasetWriter
from anchorprune.data.vidore_ids import Protocol, normalize_languages, short_name
from anchorprune.data.vidore_read import SourceData, read_source

log = logging.getLogger(__name__)


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
