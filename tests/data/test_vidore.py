"""ViDoRe v1/v2/v3 loaders on datasets built here in the hub's shape and saved with `datasets`."""

from __future__ import annotations

from collections import Counter

import pytest
import vidore_fixtures as F
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from anchorprune.data.schema import load_dataset_dir
from anchorprune.data.validation import validate_dataset_dir
from anchorprune.data.vidore import build_vidore_dataset
from anchorprune.data.vidore_ids import DatasetUnavailableError, vidore_format, vidore_version
from anchorprune.data.vidore_read import read_source


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


# ---------------------------------------------------------------- the hub's real shapes and counts
# Fixtures: tests/data/vidore_fixtures.py (schemas, traps and counts from docs/vidore.md).


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The four v2 sets at their real sizes, three v1 QA sets, tatdqa in BEIR form, a v3 set."""
    import datasets

    datasets.disable_progress_bars()
    root = tmp_path_factory.mktemp("hub")
    sets = {k: str(v) for k, v in F.save_v2_sets(root).items()}
    sets["docvqa_test_subsampled"] = str(F.save_v1_qa(root, "docvqa_test_subsampled", F.docvqa_rows()))
    sets["tabfquad_test_subsampled"] = str(F.save_v1_qa(root, "tabfquad_test_subsampled", F.tabfquad_rows()))
    sets["shiftproject_test"] = str(F.save_v1_qa(root, "shiftproject_test", F.shift_rows(),
                                                 pixel_dups=F.SHIFT_PIXEL_DUPS))
    sets["tatdqa_test_beir"] = str(F.save_tatdqa_beir(root))
    sets["vidore_v3_pharmaceuticals"] = str(F.save_v3(root))
    return sets


V2_NAMES = [s.name for s in F.V2_SHAPES]


@pytest.mark.parametrize("languages", ["all", ["english"]])
def test_v2_counts_per_set_match_the_note(hub, languages):
    """mteb's statistics: 228/640/232 queries in all languages, 57/160/58 in English, HL 52 either way."""
    english = languages != "all"
    for shape in F.V2_SHAPES:
        d = read_source(hub[shape.name], languages=None if not english else ("english",))
        assert len(d.pages) == shape.corpus                       # v2 pages are not de-duplicated
        assert len(d.queries) == (shape.english_queries if english else shape.queries_all_languages), shape.name
        per_lang = shape.positive_qrels_all_languages // len(shape.languages)
        assert sum(len(r) for r in d.qrels.values()) == (per_lang if english else shape.positive_qrels_all_languages)
        assert d.stats["language_column"] == (shape.name != F.HL.name)
    assert sum(s.english_queries for s in F.V2_SHAPES) == 327      # docs/vidore.md's English total
    assert sum(s.queries_all_languages for s in F.V2_SHAPES) == 1152


def test_language_filter_keeps_the_qrels_of_kept_queries_only(hub):
    d = read_source(hub["esg_reports_v2"], languages=("english", "german"))
    assert len(d.queries) == 2 * 57 and d.stats["languages_kept"] == ["english", "german"]
    assert set(d.qrels) == set(d.queries)
    assert all(t.startswith(("[english]", "[german]")) for t in d.queries.values())
    # a translation is its own query id, judged on the same pages as its English original
    by_text = {t: q for q, t in d.queries.items()}
    assert d.qrels[by_text["[german] question 3 of esg_reports_v2?"]] == \
        d.qrels[by_text["[english] question 3 of esg_reports_v2?"]]


def test_v2_four_sets_per_dataset_default(hub, tmp_path):
    """Default protocol: each set keeps its own corpus (ESG twice), a source column, no cross-source qrel."""
    m = build_vidore_dataset([hub[n] for n in V2_NAMES], tmp_path / "out", name="v2")
    assert m["counts"] == {"pages": 1538 + 1016 + 452 + 1538, "queries": 1152, "qrels": 888 + 2060 + 14512 + 128}
    assert m["extra"]["protocol"] == "per_dataset" and m["extra"]["languages"] == "all"
    ds = load_dataset_dir(tmp_path / "out")
    assert Counter(ds.page_sources.values()) == {"esg_reports_v2": 1538, "biomedical_lectures_v2": 1016,
                                                 "economics_reports_v2": 452, "esg_reports_human_labeled_v2": 1538}
    assert Counter(ds.query_sources.values()) == {"esg_reports_v2": 228, "biomedical_lectures_v2": 640,
                                                  "economics_reports_v2": 232, "esg_reports_human_labeled_v2": 52}
    assert all(ds.page_sources[p] == ds.query_sources[q] for q, rels in ds.qrels.items() for p in rels)
    # the HL set shares ESG's pages: same content, two ids, one per source
    hashes = dict(zip(ds.corpus["page_id"], ds.corpus["content_hash"], strict=True))
    assert hashes["esg_reports_v2/7"] == hashes["esg_reports_human_labeled_v2/7"]
    # economics: str corpus ids in the corpus, int64 in the qrels; every positive qrel still found
    assert m["extra"]["sources"][hub["economics_reports_v2"]]["qrels"] == 14512


def test_v2_union_english_dedups_pixels_and_remaps(hub, tmp_path):
    """Union option: ESG and HL pages collapse, biomedical/economics pixel twins too: 1538 + 994 + 426."""
    m = build_vidore_dataset([hub[n] for n in V2_NAMES], tmp_path / "out", name="u", protocol="union",
                             languages=["english"])
    assert m["counts"]["pages"] == 2958 and m["counts"]["queries"] == 327
    assert m["counts"]["qrels"] == 222 + 515 + 3628 + 128
    assert m["extra"]["union_duplicate_pages"] == 1538 + 22 + 26
    ds = load_dataset_dir(tmp_path / "out")
    assert ds.query_sources == {} and ds.sources == []              # one corpus: the old protocol
    assert not any(p.startswith("esg_reports_human_labeled_v2/") for p in ds.page_ids)
    hl = [q for q in ds.queries if q.startswith("esg_reports_human_labeled_v2/")]
    assert len(hl) == 52 and all(p.startswith("esg_reports_v2/") for q in hl for p in ds.qrels[q])


def test_v1_qa_repeated_texts_and_images_match_the_note(hub, tmp_path):
    """docvqa 451 texts / 500 pages (a text on 12 pages); tabfquad 70 pages; shift 100 queries, 999 pages."""
    expected = {"docvqa_test_subsampled": (500, 451, 500, 12), "tabfquad_test_subsampled": (70, 280, 280, 1),
                "shiftproject_test": (999, 100, 100, 1)}
    for name, (pages, queries, qrels, max_rel) in expected.items():
        d = read_source(hub[name])
        assert (len(d.pages), len(d.queries), sum(len(r) for r in d.qrels.values())) == (pages, queries, qrels)
        assert max(len(r) for r in d.qrels.values()) == max_rel, name
        assert d.version == 1 and d.format == "qa" and not d.stats["language_column"]
    m = build_vidore_dataset(hub["tabfquad_test_subsampled"], tmp_path / "tab", name="tab", languages=["english"])
    assert m["counts"] == {"pages": 70, "queries": 280, "qrels": 280}     # no language column: all kept
    assert m["extra"]["sources"][hub["tabfquad_test_subsampled"]]["duplicate_images"] == 210


def test_v1_beir_form(hub, tmp_path):
    src = hub["tatdqa_test_beir"]
    assert vidore_format(src) == "beir" and vidore_format("vidore/tatdqa_test_beir") == "beir"
    m = build_vidore_dataset(src, tmp_path / "p", name="t")
    assert m["counts"] == {"pages": 277, "queries": 1646, "qrels": 1663}   # the card's corpus, kept as is
    u = build_vidore_dataset(src, tmp_path / "u", name="t", protocol="union")
    assert u["counts"] == {"pages": 271, "queries": 1646, "qrels": 1663}   # pixel twins removed, qrels remapped
    ds = load_dataset_dir(tmp_path / "u")
    assert ds.qrels["11"] == {"11": 1, "0": 1}      # its second page was the copy 271 of page 0


def test_v3_underscore_ids_languages_markdown_documents(hub, tmp_path):
    src = hub["vidore_v3_pharmaceuticals"]
    n = F.V3_QUESTIONS
    m = build_vidore_dataset(src, tmp_path / "all", name="v3")
    assert m["counts"] == {"pages": F.V3_PAGES, "queries": 6 * n, "qrels": 6 * 2 * n}
    assert m["extra"]["sources"][src]["version"] == 3
    assert m["extra"]["sources"][src]["languages_present"] == sorted(F.V3_LANGS)
    en = build_vidore_dataset(src, tmp_path / "en", name="v3", languages=["english"])
    assert en["counts"] == {"pages": F.V3_PAGES, "queries": n, "qrels": 2 * n}
    ds = load_dataset_dir(tmp_path / "en")
    assert ds.qrels == {str(i): {str(c): s for c, s in g.items()} for i, g in enumerate(F.v3_gold())}  # 2 and 1 kept
    pages = {p.page_id: p for p in ds.pages(images=False)}
    assert pages["3"].text == "# page 3 of vidore_v3_pharmaceuticals"
    assert pages["3"].meta["source_doc"] == "doc_1" and pages["3"].meta["source"] == "vidore_v3_pharmaceuticals"
    assert pages["3"].meta["document"]["doc_year"] == 2024 and pages["3"].meta["document"]["url"].endswith("doc_1.pdf")
    validate_dataset_dir(tmp_path / "en")


def test_mixed_generations_validate_and_keep_sources_apart(hub, tmp_path):
    m = build_vidore_dataset([hub["tatdqa_test_beir"], hub["vidore_v3_pharmaceuticals"]], tmp_path / "out",
                             name="mix", languages=["english"])
    assert m["counts"]["queries"] == 1646 + F.V3_QUESTIONS
    ds = load_dataset_dir(tmp_path / "out")
    assert ds.sources == ["tatdqa_test_beir", "vidore_v3_pharmaceuticals"]
    report = validate_dataset_dir(tmp_path / "out")
    assert any("cross-source qrel" in r.check and r.success for r in report.results)


def test_language_missing_from_a_set_is_named_and_nothing_is_written(hub, tmp_path):
    from anchorprune.data.versioning import build_staged

    data = tmp_path / "data"
    with pytest.raises(ValueError, match=r"esg_reports_v2: no query in language\(s\) \['italian'\]"):
        build_staged(data, "x", lambda s: build_vidore_dataset(
            [hub["vidore_v3_pharmaceuticals"], hub["esg_reports_v2"]], s, name="x", languages=["italian"]))
    assert not data.exists()
    with pytest.raises(ValueError, match="unknown ViDoRe language"):
        build_vidore_dataset(hub["esg_reports_v2"], tmp_path / "y", name="y", languages=["en"])


def test_two_sources_with_one_short_name_are_refused(hub, tmp_path):
    with pytest.raises(ValueError, match="same short name"):
        build_vidore_dataset([hub["esg_reports_v2"], "vidore/esg_reports_v2"], tmp_path / "o", name="o")


def test_hub_ids_are_classified():
    assert vidore_version("vidore/vidore_v3_hr") == 3 and vidore_format("vidore/vidore_v3_hr") == "beir"
    assert vidore_version("vidore/esg_reports_human_labeled_v2") == 2
    assert vidore_format("vidore/shiftproject_test") == "qa"


def test_v3_hub_copy_without_documents_metadata_loads(hub, monkeypatch):
    """mteb's ``*_mteb_format`` copies have corpus/queries/qrels only; the loader must not need the 4th config."""
    import anchorprune.data.vidore_read as V

    real = V.load_split
    local = hub["vidore_v3_pharmaceuticals"]

    def fake(source, config=None, revision=None):
        assert source == "vidore/vidore_v3_pharmaceuticals_mteb_format"
        if config == "documents_metadata":
            raise ValueError("BuilderConfig 'documents_metadata' not found. Available: ['corpus', 'queries', 'qrels']")
        return real(local, config, revision)

    monkeypatch.setattr(V, "load_split", fake)
    d = read_source("vidore/vidore_v3_pharmaceuticals_mteb_format", languages=("english",))
    assert d.version == 3 and d.documents == {} and len(d.queries) == F.V3_QUESTIONS


@pytest.mark.parametrize("shape", ["v1", "v2"])
def test_the_hubs_parquet_layout_reads_as_the_save_to_disk_copy(shape, v1_dir, v2_dir, tmp_path):
    saved = v1_dir if shape == "v1" else v2_dir
    hub = F.as_hub_parquet(saved, tmp_path / "hub" / saved.name)
    assert sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*.parquet")) == (
        ["data/test-00000-of-00001.parquet"] if shape == "v1" else
        [f"{c}/test-00000-of-00001.parquet" for c in ("corpus", "qrels", "queries")])
    assert vidore_format(str(hub)) == vidore_format(str(saved))
    a, b = read_source(str(saved)), read_source(str(hub))
    assert (a.queries, a.qrels, len(a.pages)) == (b.queries, b.qrels, len(b.pages))
    out = build_vidore_dataset([str(hub)], tmp_path / "out", name="x")
    assert out["counts"] == build_vidore_dataset([str(saved)], tmp_path / "out2", name="x")["counts"]
    validate_dataset_dir(tmp_path / "out")
