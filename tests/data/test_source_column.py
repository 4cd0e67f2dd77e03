"""The optional ``source`` column: written only when given, loaded as maps, validated (no cross-source qrel)."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from anchorprune.data.schema import DatasetError, DatasetWriter, load_dataset_dir
from anchorprune.data.validation import DataValidationError, validate_dataset_dir


def _write(root, *, sources=True, cross=False):
    w = DatasetWriter(root)
    for s, color in (("a", "red"), ("b", "blue")):
        src = s if sources else None
        w.add_page(f"{s}/p", Image.new("RGB", (32, 32), color), source_doc="d", source=src)
        w.add_query(f"{s}/q", f"query {s}", source=src)
    w.add_qrel("a/q", "a/p", 1)
    w.add_qrel("b/q", "a/p" if cross else "b/p", 1)
    w.finish(name="s", source="test", revision="0")
    return root


def test_sources_written_loaded_and_valid(tmp_path):
    d = _write(tmp_path / "ds")
    ds = load_dataset_dir(d)
    assert list(ds.corpus.columns)[-1] == "source" and ds.sources == ["a", "b"]
    assert ds.query_sources == {"a/q": "a", "b/q": "b"} and ds.page_sources == {"a/p": "a", "b/p": "b"}
    assert [p.meta["source"] for p in ds.pages(images=False)] == ["a", "b"]
    report = validate_dataset_dir(d)
    assert any("cross-source qrel" in r.check for r in report.results)


def test_no_sources_no_column(tmp_path):
    d = _write(tmp_path / "ds", sources=False)
    assert "source" not in pd.read_parquet(d / "corpus.parquet").columns
    assert "source" not in pd.read_parquet(d / "queries.parquet").columns
    ds = load_dataset_dir(d)
    assert ds.sources == [] and ds.query_sources == {}
    assert not any("cross-source qrel" in r.check for r in validate_dataset_dir(d).results)


def test_cross_source_qrel_fails_validation_naming_it(tmp_path):
    d = _write(tmp_path / "ds", cross=True)
    with pytest.raises(DataValidationError, match=r"cross-source qrel.*'b/q \(b\)->a/p \(a\)'"):
        validate_dataset_dir(d)


def test_source_on_one_table_only_is_refused(tmp_path):
    d = _write(tmp_path / "ds")
    q = pd.read_parquet(d / "queries.parquet").drop(columns=["source"])
    q.to_parquet(d / "queries.parquet", index=False)
    with pytest.raises(DatasetError, match="only one of corpus.parquet and queries.parquet has a 'source'"):
        load_dataset_dir(d)
    with pytest.raises(DataValidationError, match="queries has exactly the schema's columns"):
        validate_dataset_dir(d)


def test_empty_source_fails(tmp_path):
    d = _write(tmp_path / "ds")
    c = pd.read_parquet(d / "corpus.parquet")
    c.loc[0, "source"] = ""
    c.to_parquet(d / "corpus.parquet", index=False)
    with pytest.raises(DataValidationError, match="corpus.source is not empty"):
        validate_dataset_dir(d)
