"""The one on-disk dataset schema, its writer, its loader and the calibration/evaluation split.

Every source (ViDoRe, a folder of PDFs, the Debian demo) is written in this layout::

    data/<dataset>/
      corpus.parquet    page_id, content_hash, source_doc, page_number, text, image_path
      images/           one file per page (image_path is relative to the dataset folder)
      queries.parquet   query_id, text
      qrels.parquet     query_id, page_id, relevance
      manifest.json     name, source, revision, counts, schema_version, extra

The folder depends only on its content: the manifest holds no build time, so rebuilding the
same pages gives the same DVC hash (``data.dvc``, ``dvc.lock``) and no stage is marked stale.

Optionally ``corpus.parquet`` and ``queries.parquet`` carry a ``source`` column (both or
neither): the evaluation dataset each page and query belongs to (e.g. one per ViDoRe set).
With it, a query is ranked only against the pages of its own source (docs/method.md §5); without it
the whole dataset is one source.

``content_hash`` is the sha256 of the stored image bytes and the text layer
(see :func:`page_content_hash`): the features cache keys on it, so a page is
encoded once per content.

Examples
--------
>>> import tempfile
>>> from PIL import Image
>>> d = Path(tempfile.mkdtemp()) / "tiny"
>>> w = DatasetWriter(d)
>>> _ = w.add_page("p1", Image.new("RGB", (64, 80), "white"), text="What is R?", source_doc="faq.pdf", page_number=1)
>>> w.add_query("q1", "what is r")
>>> w.add_qrel("q1", "p1", 1)
>>> _ = w.finish(name="tiny", source="doctest", revision="0")
>>> ds = load_dataset_dir(d)
>>> [(p.page_id, p.text, p.image.size) for p in ds.pages()]
[('p1', 'What is R?', (64, 80))]
>>> ds.queries, ds.qrels
({'q1': 'what is r'}, {'q1': {'p1': 1}})
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anchorprune.pages import Page

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CORPUS_FILE = "corpus.parquet"
QUERIES_FILE = "queries.parquet"
QRELS_FILE = "qrels.parquet"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"

CORPUS_COLUMNS = ("page_id", "content_hash", "source_doc", "page_number", "text", "image_path")
QUERIES_COLUMNS = ("query_id", "text")
QRELS_COLUMNS = ("query_id", "page_id", "relevance")
SOURCE_COLUMN = "source"          # optional, in corpus and queries: the evaluation dataset of each row

_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"GIF8": "gif", b"RIFF": "webp",
                b"II*\x00": "tif", b"MM\x00*": "tif", b"BM": "bmp"}


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or not in the anchorprune schema."""


def page_content_hash(image_bytes: bytes | None, text: str | None) -> str:
    """sha256 over a page's stored image bytes and its text layer (what a backbone can see).

    >>> page_content_hash(b"img", "t") == page_content_hash(b"img", "t")
    True
    >>> page_content_hash(b"img", "t") == page_content_hash(b"img", "u")
    False
    """
    h = hashlib.sha256()
    h.update(image_bytes or b"")
    h.update(b"\x00")
    h.update((text or "").encode("utf-8"))
    return h.hexdigest()


def _image_ext(data: bytes) -> str:
    for magic, ext in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return ext
    return "bin"  # unknown bytes are stored as given; validation reports them


@dataclass
class DatasetWriter:
    """Write a dataset folder in the schema (used by every builder, always into a staging folder).

    Images are stored as given (``bytes``) or encoded (PIL: PNG, or JPEG with ``image_format="jpeg"``).
    Nothing is validated here: :mod:`anchorprune.data.validation` runs on the finished folder.
    """

    root: Path
    image_format: str = "png"
    jpeg_quality: int = 85
    grayscale: bool = False          # store "L" images (a third of the bytes for black-on-white documents)
    _pages: list[dict[str, Any]] = field(default_factory=list)
    _queries: list[dict[str, Any]] = field(default_factory=list)
    _qrels: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)

    def encode_image(self, image: Any) -> bytes:
        buf = io.BytesIO()
        image = image.convert("L" if self.grayscale else "RGB")
        if self.image_format == "jpeg":
            image.save(buf, format="JPEG", quality=self.jpeg_quality)
        else:
            image.save(buf, format="PNG")
        return buf.getvalue()

    def add_page(self, page_id: str, image: Any | bytes | None, *, text: str | None = None,
                 source_doc: str = "", page_number: int = 1, source: str | None = None) -> str:
        """Store one page; returns its content hash. ``source``: its evaluation dataset (optional)."""
        data = image if isinstance(image, bytes | bytearray) or image is None else self.encode_image(image)
        image_path = None
        if data is not None:
            image_path = f"{IMAGES_DIR}/{len(self._pages):06d}.{_image_ext(bytes(data))}"
            (self.root / image_path).write_bytes(data)
        chash = page_content_hash(data, text)
        self._pages.append({"page_id": page_id, "content_hash": chash, "source_doc": source_doc,
                            "page_number": int(page_number), "text": text, "image_path": image_path,
                            SOURCE_COLUMN: source})
        return chash

    def add_query(self, query_id: str, text: str, *, source: str | None = None) -> None:
        self._queries.append({"query_id": query_id, "text": text, SOURCE_COLUMN: source})

    def add_qrel(self, query_id: str, page_id: str, relevance: int = 1) -> None:
        self._qrels.append({"query_id": query_id, "page_id": page_id, "relevance": int(relevance)})

    @property
    def num_pages(self) -> int:
        return len(self._pages)

    def finish(self, *, name: str, source: str, revision: str, extra: Mapping[str, Any] | None = None) -> dict:
        """Write the three parquet files and the manifest; returns the manifest.

        The ``source`` column is written (in corpus and queries) only when some row was given one.
        """
        sourced = any(r[SOURCE_COLUMN] is not None for r in (*self._pages, *self._queries))
        extra_cols = [SOURCE_COLUMN] if sourced else []
        frames = {
            CORPUS_FILE: pd.DataFrame(self._pages, columns=[*CORPUS_COLUMNS, *extra_cols]).astype(
                {"page_number": "int64"}),
            QUERIES_FILE: pd.DataFrame(self._queries, columns=[*QUERIES_COLUMNS, *extra_cols]),
            QRELS_FILE: pd.DataFrame(self._qrels, columns=list(QRELS_COLUMNS)).astype({"relevance": "int64"}),
        }
        for fname, df in frames.items():
            df.to_parquet(self.root / fname, index=False)
        manifest = {
            "name": name,
            "source": source,
            "revision": revision,
            "schema_version": SCHEMA_VERSION,
            "counts": {"pages": len(self._pages), "queries": len(self._queries), "qrels": len(self._qrels)},
            "extra": dict(extra or {}),
        }
        (self.root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest


def _lazy_image(path: Path):
    """A PIL image that decodes on first pixel access; holds the compressed bytes, no open file."""
    from PIL import Image

    return Image.open(io.BytesIO(path.read_bytes()))


@dataclass
class Dataset:
    """A loaded dataset folder: the corpus table, queries, qrels and manifest."""

    path: Path
    corpus: pd.DataFrame                         # one row per page, CORPUS_COLUMNS
    queries: dict[str, str]                      # query_id -> text
    qrels: dict[str, dict[str, int]]             # query_id -> {page_id: relevance}
    manifest: dict[str, Any]
    query_sources: dict[str, str] = field(default_factory=dict)   # query_id -> source ({} = one source)
    page_sources: dict[str, str] = field(default_factory=dict)    # page_id -> source ({} = one source)

    def __len__(self) -> int:
        return len(self.corpus)

    @property
    def page_ids(self) -> list[str]:
        return self.corpus["page_id"].tolist()

    @property
    def sources(self) -> list[str]:
        """The evaluation datasets in this folder, in corpus order (``[]``: the whole folder is one)."""
        return list(dict.fromkeys(self.page_sources.values()))

    def pages(self, images: bool = True) -> Iterator[Page]:
        """Yield every page as an :class:`anchorprune.pages.Page`, in corpus order.

        ``images=True`` attaches a lazily decoded PIL image (nothing is decoded until a backbone
        touches the pixels); ``images=False`` yields text-only pages (``meta['image_path']`` still set).
        With a ``source`` column, ``meta`` also has ``source`` and, where the manifest holds its
        document's metadata (ViDoRe v3 ``documents_metadata``), ``document``.
        """
        yield from self._pages(self.corpus, images)

    def pages_for(self, page_ids, images: bool = True) -> Iterator[Page]:
        """The pages whose ids are in ``page_ids``, in corpus order (as :meth:`pages`)."""
        wanted = set(page_ids)
        yield from self._pages(self.corpus[self.corpus["page_id"].isin(wanted)], images)

    def _pages(self, rows: pd.DataFrame, images: bool) -> Iterator[Page]:
        documents = (self.manifest.get("extra") or {}).get("documents") or {}
        for row in rows.itertuples(index=False):
            img_path = self.path / row.image_path if isinstance(row.image_path, str) else None
            text = row.text if isinstance(row.text, str) else None
            meta = {"source_doc": row.source_doc, "page_number": int(row.page_number),
                    "image_path": str(img_path) if img_path else None}
            source = getattr(row, SOURCE_COLUMN, None)
            if isinstance(source, str):
                meta[SOURCE_COLUMN] = source
                doc = documents.get(source, {}).get(str(row.source_doc))
                if doc is not None:
                    meta["document"] = doc
            yield Page(
                page_id=row.page_id,
                content_hash=row.content_hash,
                image=_lazy_image(img_path) if images and img_path is not None else None,
                text=text,
                meta=meta,
            )


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        raise DatasetError(f"{path} is missing; rebuild the dataset (anchorprune data build-demo / data pdfs / "
                           "data vidore) or fetch it with `dvc pull`")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise DatasetError(f"{path} is not a readable parquet file: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(f"{path} lacks column(s) {missing}; expected {list(columns)}")
    return df


def read_tables(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The raw corpus, queries and qrels tables plus the manifest of a dataset folder."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist; build it first "
                           "(e.g. `anchorprune data build-demo`) or run `dvc pull`")
    corpus = _read_table(path / CORPUS_FILE, CORPUS_COLUMNS)
    queries = _read_table(path / QUERIES_FILE, QUERIES_COLUMNS)
    qrels = _read_table(path / QRELS_FILE, QRELS_COLUMNS)
    mpath = path / MANIFEST_FILE
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{mpath} is missing; the dataset was not written completely") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{mpath} is not valid JSON: {exc}") from exc
    return corpus, queries, qrels, manifest


def load_dataset_dir(path: str | Path) -> Dataset:
    """Load ``data/<dataset>`` (as written by :class:`DatasetWriter`); raises :class:`DatasetError`."""
    path = Path(path)
    corpus, queries, qrels, manifest = read_tables(path)
    qmap = dict(zip(queries["query_id"].astype(str), queries["text"].astype(str), strict=True))
    rels: dict[str, dict[str, int]] = {}
    for qid, pid, rel in qrels[list(QRELS_COLUMNS)].itertuples(index=False):
        rels.setdefault(str(qid), {})[str(pid)] = int(rel)
    qsrc: dict[str, str] = {}
    psrc: dict[str, str] = {}
    if SOURCE_COLUMN in corpus.columns and SOURCE_COLUMN in queries.columns:
        qsrc = dict(zip(queries["query_id"].astype(str), queries[SOURCE_COLUMN].astype(str), strict=True))
        psrc = dict(zip(corpus["page_id"].astype(str), corpus[SOURCE_COLUMN].astype(str), strict=True))
    elif SOURCE_COLUMN in corpus.columns or SOURCE_COLUMN in queries.columns:
        raise DatasetError(f"{path}: only one of corpus.parquet and queries.parquet has a '{SOURCE_COLUMN}' "
                           "column; rebuild the dataset (both or neither must have it)")
    return Dataset(path=path, corpus=corpus.reset_index(drop=True), queries=qmap, qrels=rels, manifest=manifest,
                   query_sources=qsrc, page_sources=psrc)


def _rank_key(seed: int, qid: str) -> str:
    return hashlib.sha256(f"{seed}\x00{qid}".encode()).hexdigest()


def split_queries(dataset: Dataset | Mapping[str, Any] | Iterable[str], calibration_fraction: float,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """Split query ids into disjoint (calibration, evaluation) lists, deterministic in ``seed``.

    Each query id is ranked by a hash of (seed, id), so the split does not depend on the
    order queries were stored in, and adding a query never moves another one across. With at
    least two queries both sides get at least one. Only queries with a positive qrel count.

    >>> calib, evalq = split_queries([f"q{i}" for i in range(10)], 0.3, seed=0)
    >>> len(calib), len(evalq), set(calib) & set(evalq)
    (3, 7, set())
    >>> split_queries([f"q{i}" for i in range(10)], 0.3, seed=0) == (calib, evalq)
    True
    """
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    if isinstance(dataset, Dataset):
        qids = [q for q in dataset.queries if any(r > 0 for r in dataset.qrels.get(q, {}).values())]
    else:
        qids = [str(q) for q in dataset]
    if len(set(qids)) != len(qids):
        raise ValueError("query ids must be unique to split them")
    ranked = sorted(qids, key=lambda q: (_rank_key(seed, q), q))
    n = len(ranked)
    k = round(n * calibration_fraction)
    if n >= 2:
        k = min(max(k, 1), n - 1)
    calib, evalq = ranked[:k], ranked[k:]
    return sorted(calib), sorted(evalq)
