"""ViDoRe v1/v2 loaders on small datasets built here in the hub's shape and saved with `datasets`."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from anchorprune.data.schema import load_dataset_dir
from anchorprune.data.validation import validate_dataset_dir
from anchorprune.data.vidore import DatasetUnavailableError, build_vidore_dataset, vidore_version


def img(color):
    return PILImage.new("RGB", (40, 56), color)


@pytest.fixture
def v1_dir(tmp_path):
    """v1 rows: a page repeated with identical pixels, a query asked twice, a distractor row."""
    rows = {
        "query": ["what is red?", "what is blue?", "what is red?", None, "what is green?"],
        "image": [img("red"), img("blue"), img("red"), img("gray"), img("green")],
        "image_filename": ["a.png", "b.png", "a-copy.png", "d.png", "g.png"],
        "answer": ["red", "blue", "red", None, "green"],
    }
    feats = Features({"query": Value("string"), "image": Image(), "image_filename": Value("string"),
                      "answer": Value("string")})
    d = tmp_path / "docvqa_test_subsampled"
    DatasetDict({"test": Dataset.from_dict(rows, features=feats)}).save_to_disk(str(d))
    return d


@pytest.fixture
def v2_dir(tmp_path):
    d = tmp_path / "esg_reports_v2"
    corpus = Dataset.from_dict(
        {"corpus-id": [10, 11, 12, 13], "image": [img("red"), img("blue"), img("green"), img("black")],
         "doc-id": ["r1", "r1", "r2", "r2"], "markdown": ["# red", "# blue", "# green", "# black"]},
        features=Features({"corpus-id": Value("int64"), "image": Image(), "doc-id": Value("string"),
                           "markdown": Value("string")}))
    queries = Dataset.from_dict({"query-id": [1, 2, 3], "query": ["red one", "blue or green", "nothing"]})
    qrels = Dataset.from_dict({"query-id": [1, 2, 2, 3, 1], "corpus-id": [10, 11, 12, 13, 13],
                               "score": [1, 2, 1, 0, 0]})
    for name, ds in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        DatasetDict({"test": ds}).save_to_disk(str(d / name))
    return d


def test_v1_dedups_pages_by_pixels_and_queries_by_text(v1_dir, tmp_path):
    assert vidore_version(str(v1_dir)) == 1
    m = build_vidore_dataset(str(v1_dir), tmp_path / "out", name="docvqa")
    ds = load_dataset_dir(tmp_path / "out")
    assert m["counts"] == {"pages": 4, "queries": 3, "qrels": 3}
    assert m["extra"]["sources"][str(v1_dir)]["duplicate_images"] == 1
    assert sorted(ds.queries.values()) == ["what is blue?", "what is green?", "what is red?"]
    red = next(q for q, t in ds.queries.items() if t == "what is red?")
    assert ds.qrels[red] == {"p00000": 1}
    colors = {p.page_id: p.image.convert("RGB").getpixel((0, 0)) for p in ds.pages()}
    assert colors["p00000"] == (255, 0, 0) and colors["p00002"] == (128, 128, 128)   # distractor kept
    validate_dataset_dir(tmp_path / "out")


def test_v1_limit_keeps_first_rows(v1_dir, tmp_path):
    m = build_vidore_dataset(str(v1_dir), tmp_path / "out", name="docvqa", limit=2)
    assert m["counts"] == {"pages": 2, "queries": 2, "qrels": 2}


def test_v2_configs_and_positive_scores_only(v2_dir, tmp_path):
    assert vidore_version(str(v2_dir)) == 2
    m = build_vidore_dataset(str(v2_dir), tmp_path / "out", name="esg")
    ds = load_dataset_dir(tmp_path / "out")
    assert m["counts"] == {"pages": 4, "queries": 2, "qrels": 3}      # query 3 has only score 0
    assert ds.qrels == {"1": {"10": 1}, "2": {"11": 2, "12": 1}}
    assert [p.text for p in ds.pages()][:2] == ["# red", "# blue"]
    assert {p.meta["source_doc"] for p in ds.pages()} == {"r1", "r2"}
    validate_dataset_dir(tmp_path / "out")


def test_v2_limit_keeps_gold_pages_and_some_distractors(v2_dir, tmp_path):
    m = build_vidore_dataset(str(v2_dir), tmp_path / "out", name="esg", limit=1)
    ds = load_dataset_dir(tmp_path / "out")
    assert m["counts"]["queries"] == 1 and ds.qrels == {"1": {"10": 1}}
    assert "10" in ds.page_ids and len(ds.page_ids) == 1


def test_union_of_sources_prefixes_ids(v1_dir, v2_dir, tmp_path):
    m = build_vidore_dataset([str(v1_dir), str(v2_dir)], tmp_path / "out", name="union")
    ds = load_dataset_dir(tmp_path / "out")
    assert m["counts"]["pages"] == 8
    assert "esg_reports_v2/10" in ds.page_ids and "docvqa_test_subsampled/p00000" in ds.page_ids
    validate_dataset_dir(tmp_path / "out")


def test_offline_uncached_dataset_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DatasetUnavailableError, match="not in the local HF datasets cache.*unreachable"):
        build_vidore_dataset("vidore/docvqa_test_subsampled", tmp_path / "out", name="x")


def test_wrong_shape_is_named(v2_dir, tmp_path):
    with pytest.raises(ValueError, match="lacks column"):
        build_vidore_dataset(str(v2_dir / "queries"), tmp_path / "out", name="x")


def test_published_image_bytes_are_stored_as_is(tmp_path):
    import io

    buf = io.BytesIO()
    img("orange").save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    d = tmp_path / "jpeg_v1"
    Dataset.from_dict({"query": ["orange?"], "image": [{"bytes": jpeg, "path": None}]},
                      features=Features({"query": Value("string"), "image": Image()})).save_to_disk(str(d))
    build_vidore_dataset(str(d), tmp_path / "out", name="j")
    ds = load_dataset_dir(tmp_path / "out")
    stored = tmp_path / "out" / ds.corpus["image_path"][0]
    assert stored.suffix == ".jpg" and stored.read_bytes() == jpeg
