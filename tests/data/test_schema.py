"""The on-disk schema: writer -> loader round trip, lazy pages, and the query split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anchorprune.data.schema import (
    DatasetError,
    DatasetWriter,
    load_dataset_dir,
    page_content_hash,
    split_queries,
)


def _write(root, n_pages=3, n_queries=2):
    w = DatasetWriter(root)
    for i in range(n_pages):
        w.add_page(f"p{i}", Image.new("RGB", (40 + i, 50), (i * 40, 0, 0)), text=f"page {i}",
                   source_doc="doc.pdf", page_number=i + 1)
    for j in range(n_queries):
        w.add_query(f"q{j}", f"query {j}")
        w.add_qrel(f"q{j}", f"p{j}", 1)
    return w.finish(name="t", source="test", revision="r1", extra={"dpi": 72})


def test_round_trip_pages_queries_qrels_manifest(tmp_path):
    manifest = _write(tmp_path / "ds")
    ds = load_dataset_dir(tmp_path / "ds")
    assert manifest["counts"] == {"pages": 3, "queries": 2, "qrels": 2}
    assert ds.manifest["revision"] == "r1" and ds.manifest["extra"] == {"dpi": 72}
    assert ds.queries == {"q0": "query 0", "q1": "query 1"}
    assert ds.qrels == {"q0": {"p0": 1}, "q1": {"p1": 1}}
    pages = list(ds.pages())
    assert [p.page_id for p in pages] == ["p0", "p1", "p2"]
    assert [p.image.size for p in pages] == [(40, 50), (41, 50), (42, 50)]
    assert pages[1].image.convert("RGB").getpixel((0, 0)) == (40, 0, 0)
    assert pages[2].meta["page_number"] == 3 and pages[2].text == "page 2"
    # the hash covers the stored image bytes and the text
    img_bytes = (tmp_path / "ds" / ds.corpus["image_path"][0]).read_bytes()
    assert pages[0].content_hash == page_content_hash(img_bytes, "page 0")
    assert len({p.content_hash for p in pages}) == 3


def test_text_only_pages(tmp_path):
    _write(tmp_path / "ds")
    pages = list(load_dataset_dir(tmp_path / "ds").pages(images=False))
    assert all(p.image is None and p.text for p in pages)


def test_missing_folder_and_missing_file_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset_dir(tmp_path / "nope")
    _write(tmp_path / "ds")
    (tmp_path / "ds" / "qrels.parquet").unlink()
    with pytest.raises(DatasetError, match="qrels.parquet is missing"):
        load_dataset_dir(tmp_path / "ds")


def test_split_on_dataset_counts_only_judged_queries(tmp_path):
    _write(tmp_path / "ds", n_pages=6, n_queries=6)
    ds = load_dataset_dir(tmp_path / "ds")
    calib, evalq = split_queries(ds, 0.5, seed=3)
    assert len(calib) == 3 and len(evalq) == 3
    assert sorted(calib + evalq) == sorted(ds.queries)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 60), frac=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_split_is_disjoint_complete_deterministic(n, frac, seed):
    qids = [f"q{i}" for i in range(n)]
    calib, evalq = split_queries(qids, frac, seed)
    assert not set(calib) & set(evalq)
    assert sorted(calib + evalq) == sorted(qids)
    assert split_queries(list(reversed(qids)), frac, seed) == (calib, evalq)
    if n >= 2:
        assert calib and evalq


def test_split_stable_when_a_query_is_added():
    qids = [f"q{i}" for i in range(40)]
    calib, _ = split_queries(qids, 0.3, 1)
    calib2, _ = split_queries(qids + ["q-new"], 0.3, 1)
    assert len(set(calib) - set(calib2)) <= 1


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="calibration_fraction"):
        split_queries(["a", "b"], 1.0, 0)
