"""ViDoRe look-alikes saved with ``datasets``: the hub's schemas, traps and counts, tiny images.

Every fact used here comes from `docs/vidore.md` (sources cited
there: illuin-tech/vidore-benchmark @e0885ea62d3c, embeddings-benchmark/mteb @a905523d0111
and its descriptive statistics, the dataset cards, SAP @702a5c4513c1). The v2 sets and the
v1 sets are built at their **real sizes** (pages, queries, qrels rows; images are 16x16), so a
loaded count can be compared with the published one as is. The v3 set is a scaled-down
``vidore_v3_pharmaceuticals`` (its real 2,313 pages would cost seconds for no new trap).

Traps reproduced:

- v2 (`corpus` / `queries` / `qrels` configs, split `test`, ids ``corpus-id`` / ``query-id``):
  every question in english, french, spanish and german under its **own** ``query-id``
  (``language`` column), each translation judged on the same pages; qrels rows with score 0;
  pixel-identical pages inside a corpus (biomedical 1016 rows / 994 pixel-unique, economics
  452 / 426) stored with different bytes; ``esg_reports_human_labeled_v2`` (English only, no
  ``language`` column) sharing the 1,538-page ESG corpus; int ids on one side and str ids on
  the other (economics: ``corpus-id`` str in the corpus, int64 in the qrels).
- v1 QA (one row per (query, image), split ``test``): docvqa's 500 rows with 451 distinct
  query texts (a repeated text judged on several pages, up to 12); tabfquad's 280 rows over
  70 pages; shiftproject's 1,000 rows with 100 non-null queries (the rest are distractors)
  and 999 pixel-unique images.
- v1 BEIR (``*_beir``): tatdqa_test_beir, ``corpus-id`` / ``query-id`` int64, 277 corpus rows
  of which 271 are pixel-unique, 1,646 queries, 1,663 qrels rows with float64 scores.
- v3 (``corpus_id`` / ``query_id`` with underscores, int64): six languages, ``markdown`` page
  text, ``doc_id`` and ``page_number_in_doc``, qrels scores 1 and 2 with ``content_type`` and
  ``bounding_boxes``, the ``documents_metadata`` config, list-valued query columns.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage

V2_LANGS = ("english", "french", "spanish", "german")
V3_LANGS = ("english", "french", "spanish", "german", "italian", "portuguese")


@dataclass(frozen=True)
class V2Shape:
    """One ViDoRe v2 set as mteb's descriptive statistics describe it (docs/vidore.md §2, "Counts")."""

    name: str
    english_queries: int
    corpus: int
    pixel_unique: int
    positive_qrels_all_languages: int
    languages: tuple[str, ...] = V2_LANGS

    @property
    def queries_all_languages(self) -> int:
        return self.english_queries * len(self.languages)


# docs/vidore.md §2 "Counts" (MT descriptive_stats at the revisions MT pins)
ESG = V2Shape("esg_reports_v2", 57, 1538, 1538, 888)
BIO = V2Shape("biomedical_lectures_v2", 160, 1016, 994, 2060)
ECON = V2Shape("economics_reports_v2", 58, 452, 426, 14512)
HL = V2Shape("esg_reports_human_labeled_v2", 52, 1538, 1538, 128, languages=("english",))
V2_SHAPES = (ESG, BIO, ECON, HL)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(seed: str, *, tag: str | None = None, side: int = 16) -> bytes:
    """A ``side`` x ``side`` RGB PNG whose pixels depend only on ``seed``.

    ``tag`` adds a tEXt chunk: other bytes, same pixels (a re-encoded copy of a page). Written by
    hand (zlib + crc) because PIL's encoder costs ~1 ms a page on a busy machine.
    """
    digest = hashlib.sha256(seed.encode()).digest()
    row = b"\x00" + (digest * (3 * side // len(digest) + 1))[: 3 * side]    # filter byte 0 + RGB pixels
    raw = b"".join(row[:1] + row[1 + (3 * y) % 7:] + row[1:1 + (3 * y) % 7] for y in range(side))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    if tag is not None:
        out += _chunk(b"tEXt", b"copy\x00" + tag.encode())
    return out + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def pixel_md5(data: bytes) -> str:
    return hashlib.md5(PILImage.open(io.BytesIO(data)).convert("RGB").tobytes()).hexdigest()


def _save(d: Path, config: str, ds: Dataset) -> None:
    DatasetDict({"test": ds}).save_to_disk(str(d / config))


def _corpus_images(shape: V2Shape, seed: str) -> list[bytes]:
    """``corpus`` images of which ``pixel_unique`` are distinct: the last rows repeat earlier pixels."""
    dups = shape.corpus - shape.pixel_unique
    images = [png(f"{seed}/{i}") for i in range(shape.pixel_unique)]
    for j in range(dups):                       # same pixels as page j, other bytes (a re-encoded copy)
        images.append(png(f"{seed}/{j}", tag=f"copy {j}"))
    return images


def save_v2(root: Path, shape: V2Shape, *, corpus_seed: str | None = None, str_corpus_ids: bool = False) -> Path:
    """A v2 set in the hub's shape; ``corpus_seed`` lets two sets share one corpus (ESG and its HL set)."""
    d = root / shape.name
    rng = random.Random(shape.name)
    images = _corpus_images(shape, corpus_seed or shape.name)
    ids = list(range(shape.corpus))
    corpus = Dataset.from_dict(
        {"corpus-id": [str(i) for i in ids] if str_corpus_ids else ids,
         "image": [{"bytes": b, "path": None} for b in images],
         "doc-id": [f"doc{i // 40:03d}.pdf" for i in ids]},
        features=Features({"corpus-id": Value("string") if str_corpus_ids else Value("int64"), "image": Image(),
                           "doc-id": Value("string")}))
    n = shape.english_queries
    per_lang = shape.positive_qrels_all_languages // len(shape.languages)
    assert per_lang * len(shape.languages) == shape.positive_qrels_all_languages
    # each English question's relevant pages (only pixel-unique pages, so a union keeps every qrel)
    gold: list[list[int]] = [[] for _ in range(n)]
    pool = list(range(shape.pixel_unique))
    for q in range(n):
        gold[q] = rng.sample(pool, per_lang // n + (q < per_lang % n))
    qid, qtext, qlang, r_q, r_c, r_s = [], [], [], [], [], []
    for li, lang in enumerate(shape.languages):
        for i in range(n):
            query_id = li * n + i                  # a translation is a separate query id
            qid.append(query_id)
            qtext.append(f"[{lang}] question {i} of {shape.name}?")
            qlang.append(lang)
            for page in gold[i]:
                r_q.append(query_id), r_c.append(page), r_s.append(1)
            r_q.append(query_id), r_c.append(pool[-1 - i % len(pool)]), r_s.append(0)   # judged not relevant
    qcols = {"query-id": qid, "query": qtext}
    qfeats = {"query-id": Value("int64"), "query": Value("string")}
    if shape.languages != ("english",):
        qcols["language"], qfeats["language"] = qlang, Value("string")
    _save(d, "corpus", corpus)
    _save(d, "queries", Dataset.from_dict(qcols, features=Features(qfeats)))
    _save(d, "qrels", Dataset.from_dict(
        {"query-id": r_q, "corpus-id": r_c, "score": r_s},
        features=Features({"query-id": Value("int64"), "corpus-id": Value("int64"), "score": Value("int64")})))
    return d


def save_v2_sets(root: Path) -> dict[str, Path]:
    """The four v2 sets of docs/method.md §5; HL shares ESG's corpus pixels and ids; economics has str corpus ids."""
    return {
        ESG.name: save_v2(root, ESG, corpus_seed="esg-corpus"),
        BIO.name: save_v2(root, BIO),
        ECON.name: save_v2(root, ECON, str_corpus_ids=True),
        HL.name: save_v2(root, HL, corpus_seed="esg-corpus"),
    }


# ------------------------------------------------------------------ v1, QA rows
def save_v1_qa(root: Path, name: str, rows: list[tuple[str | None, int]], *, pixel_dups: dict[int, int] | None = None,
               ) -> Path:
    """A raw v1 set: rows of (query or None, image number); ``pixel_dups`` maps image -> same pixels as."""
    pixel_dups = pixel_dups or {}
    d = root / name
    images = []
    for _, img in rows:
        src = pixel_dups.get(img, img)
        images.append(png(f"{name}/{src}", tag=None if src == img else f"copy of {src} as {img}"))
    ds = Dataset.from_dict(
        {"query": [q for q, _ in rows], "image": [{"bytes": b, "path": None} for b in images],
         "image_filename": [f"images/{name}_{img}.jpg" for _, img in rows],
         "answer": [None] * len(rows)},
        features=Features({"query": Value("string"), "image": Image(), "image_filename": Value("string"),
                           "answer": Value("string")}))
    DatasetDict({"test": ds}).save_to_disk(str(d))
    return d


def docvqa_rows() -> list[tuple[str | None, int]]:
    """500 rows, 500 distinct pages, 451 distinct texts; one text on 12 pages (docs/vidore.md §1 table)."""
    texts = [f"docvqa question {i}?" for i in range(451)]
    # 49 repeats: text 0 asked on 11 more pages (12 relevant in all), texts 1..38 once more each
    repeats = [0] * 11 + list(range(1, 39))
    assert len(repeats) == 49
    return [(t, i) for i, t in enumerate(texts + [texts[r] for r in repeats])]


def tabfquad_rows() -> list[tuple[str | None, int]]:
    """280 rows over 70 pages (4 questions per page), every text distinct."""
    return [(f"question tabfquad {i} ?", i // 4) for i in range(280)]


def shift_rows() -> list[tuple[str | None, int]]:
    """1000 rows, the first 100 with a query, the rest None (distractors)."""
    return [(f"shift question {i}?" if i < 100 else None, i) for i in range(1000)]


SHIFT_PIXEL_DUPS = {999: 500}       # one distractor image repeats another's pixels: 999 pixel-unique


# ------------------------------------------------------------------ v1, BEIR form
def save_tatdqa_beir(root: Path) -> Path:
    """tatdqa_test_beir: corpus 277 rows (271 pixel-unique), 1,646 queries, 1,663 qrels (float64 scores)."""
    d = root / "tatdqa_test_beir"
    images = [png(f"tat/{i}") for i in range(271)] + [png(f"tat/{j}", tag=f"copy {j}") for j in range(6)]
    _save(d, "corpus", Dataset.from_dict(
        {"corpus-id": list(range(277)), "image": [{"bytes": b, "path": None} for b in images]},
        features=Features({"corpus-id": Value("int64"), "image": Image()})))
    _save(d, "queries", Dataset.from_dict(
        {"query-id": list(range(1646)), "query": [f"tat question {i}?" for i in range(1646)]},
        features=Features({"query-id": Value("int64"), "query": Value("string")})))
    # 1646 queries, 17 of them with a second relevant page: 1663 rows (docs/vidore.md §1 table); six of
    # those second pages are the pixel copies 271..276 (of pages 0..5)
    q = list(range(1646)) + list(range(17))
    c = [i % 271 for i in range(1646)] + [i + 100 for i in range(11)] + [271 + k for k in range(6)]
    _save(d, "qrels", Dataset.from_dict(
        {"query-id": q, "corpus-id": c, "score": [1.0] * len(q)},
        features=Features({"query-id": Value("int64"), "corpus-id": Value("int64"), "score": Value("float64")})))
    return d


# ------------------------------------------------------------------ v3
V3_QUESTIONS = 6       # English questions (real pharmaceuticals: 364)
V3_PAGES = 20          # corpus rows (real: 2,313)
V3_DOCS = 2


def v3_gold() -> list[dict[int, int]]:
    """Question i -> {corpus_id: score}; scores 1 and 2 (docs/vidore.md §3: qrels ``score`` int64)."""
    return [{i: 2, (i + 7) % V3_PAGES: 1} for i in range(V3_QUESTIONS)]


def save_v3(root: Path, name: str = "vidore_v3_pharmaceuticals") -> Path:
    """A scaled-down v3 set with the card's configs and columns (docs/vidore.md §3 table)."""
    d = root / name
    pages = list(range(V3_PAGES))
    _save(d, "corpus", Dataset.from_dict(
        {"corpus_id": pages, "image": [{"bytes": png(f"{name}/{i}"), "path": None} for i in pages],
         "doc_id": [f"doc_{i % V3_DOCS}" for i in pages], "markdown": [f"# page {i} of {name}" for i in pages],
         "page_number_in_doc": [i // V3_DOCS for i in pages]},
        features=Features({"corpus_id": Value("int64"), "image": Image(), "doc_id": Value("string"),
                           "markdown": Value("string"), "page_number_in_doc": Value("int64")})))
    rows: dict[str, list] = {k: [] for k in (
        "query_id", "query", "language", "query_types", "query_format", "content_type", "raw_answers",
        "query_generator", "query_generation_pipeline", "source_type", "query_type_for_generation", "answer")}
    for li, lang in enumerate(V3_LANGS):
        for i in range(V3_QUESTIONS):
            for k, v in (("query_id", li * V3_QUESTIONS + i), ("query", f"({lang}) v3 question {i}"),
                         ("language", lang), ("query_types", ["extractive", "numerical"]),
                         ("query_format", "question"), ("content_type", "text"), ("raw_answers", [f"a{i}"]),
                         ("query_generator", "human"), ("query_generation_pipeline", "x"),
                         ("source_type", "pdf"), ("query_type_for_generation", "extractive"),
                         ("answer", f"a{i}")):
                rows[k].append(v)
    qfeats = Features({k: (List(Value("string")) if k in ("query_types", "raw_answers")
                           else Value("int64") if k == "query_id" else Value("string")) for k in rows})
    _save(d, "queries", Dataset.from_dict(rows, features=qfeats))
    r: dict[str, list] = {"query_id": [], "corpus_id": [], "score": [], "content_type": [], "bounding_boxes": []}
    for li in range(len(V3_LANGS)):
        for i, gold in enumerate(v3_gold()):
            for cid, score in gold.items():
                r["query_id"].append(li * V3_QUESTIONS + i), r["corpus_id"].append(cid), r["score"].append(score)
                r["content_type"].append("table"), r["bounding_boxes"].append(
                    [{"annotator": 1, "x1": 0, "x2": 5, "y1": 0, "y2": 5}])
    bbox = {"annotator": Value("int64"), "x1": Value("int64"), "x2": Value("int64"), "y1": Value("int64"),
            "y2": Value("int64")}
    _save(d, "qrels", Dataset.from_dict(r, features=Features({
        "query_id": Value("int64"), "corpus_id": Value("int64"), "score": Value("int64"),
        "content_type": Value("string"), "bounding_boxes": List(bbox)})))
    _save(d, "documents_metadata", Dataset.from_dict({
        "file_name": [f"doc_{k}.pdf" for k in range(V3_DOCS)], "doc_id": [f"doc_{k}" for k in range(V3_DOCS)],
        "url": [f"https://example.org/doc_{k}.pdf" for k in range(V3_DOCS)], "doc_type": ["report"] * V3_DOCS,
        "doc_language": ["english"] * V3_DOCS, "doc_year": [2023 + k for k in range(V3_DOCS)],
        "visual_types": [["table", "chart"]] * V3_DOCS, "page_number": [V3_PAGES // V3_DOCS] * V3_DOCS,
        "license": ["CC-BY-4.0"] * V3_DOCS}))
    return d


def as_hub_parquet(saved: Path, out: Path) -> Path:
    """A ``save_to_disk`` copy rewritten in the hub's parquet layout, as a snapshot of the hub repository has
    it: ``<config>/test-00000-of-00001.parquet`` per BEIR config, ``data/test-00000-of-00001.parquet`` for a
    QA set (its default config). Same rows, same column names and features."""
    from datasets import load_from_disk

    configs = [c for c in sorted(saved.iterdir()) if c.is_dir() and (c / "dataset_dict.json").exists()]
    targets = [(c, out / c.name) for c in configs] if configs else [(saved, out / "data")]
    for src, dst in targets:
        dst.mkdir(parents=True, exist_ok=True)
        load_from_disk(str(src))["test"].to_parquet(str(dst / "test-00000-of-00001.parquet"))
    return out
