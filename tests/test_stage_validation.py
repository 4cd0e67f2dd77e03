"""Every stage validates its dataset (GX suites) before use; a pass is cached by content hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchorprune.config import load_settings
from anchorprune.data import validation
from anchorprune.data.schema import DatasetWriter
from anchorprune.data.validation import DataValidationError, dataset_content_hash, ensure_valid
from anchorprune.stages.calibrate import stage_calibrate
from anchorprune.stages.evaluate import stage_evaluate
from anchorprune.stages.promote import stage_promote
from anchorprune.stages.workspace import Workspace


def write_dataset(d: Path, *, dup_page: bool = False, dangling_qrel: bool = False, n: int = 6) -> Path:
    """Written directly (no staging, no validation), as a hand-edited or foreign folder would be."""
    w = DatasetWriter(d)
    for i in range(n):
        w.add_page(f"p{i}", None, text=f"page {i} topic:t{i}", source_doc="s", page_number=i + 1)
        w.add_query(f"q{i}", f"which page is about topic:t{i}?")
        w.add_qrel(f"q{i}", f"p{i}", 1)
    if dup_page:
        w.add_page("p0", None, text="another page 0", source_doc="s", page_number=n + 1)
    if dangling_qrel:
        w.add_qrel("q0", "p-missing", 1)
    w.finish(name=d.name, source="test", revision="0")
    return d


def workspace(root: Path) -> Workspace:
    params = root / "params.yaml"
    params.write_text(
        "data: {dataset: broken, calibration_fraction: 0.5}\n"
        "backbones: [{name: mock, kind: mock, model_id: m}]\n"
        "evaluate: {gammas: [0.2], methods: [sap, random], windows: ['0-1'], random_trials: 1}\n"
    )
    return Workspace(load_settings(params), root)


@pytest.mark.parametrize("defect", ["dup_page", "dangling_qrel"])
def test_stages_refuse_a_broken_dataset_before_writing_anything(tmp_path, defect, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_dataset(tmp_path / "data" / "broken", **{defect: True})
    ws = workspace(tmp_path)
    bcfg = ws.settings.backbones[0]
    expected = "duplicate page_id" if defect == "dup_page" else "every qrel points to an existing page"
    for stage in (stage_calibrate, stage_evaluate, stage_promote):
        with pytest.raises(DataValidationError, match=expected):
            stage(ws, bcfg)
    assert not (tmp_path / "reports").exists()            # no report written
    assert not (tmp_path / "mlruns").exists()             # no MLflow run (not even an empty store)
    assert not (tmp_path / "cache" / "validation").exists() or not any((tmp_path / "cache" / "validation").iterdir())


def test_a_pass_is_cached_by_content_hash(tmp_path, monkeypatch):
    d = write_dataset(tmp_path / "data" / "ok")
    calls = []
    real = validation.validate_dataset_dir
    monkeypatch.setattr(validation, "validate_dataset_dir", lambda p, **kw: calls.append(p) or real(p, **kw))
    cache = tmp_path / "cache" / "validation"

    first = ensure_valid(d, cache)
    assert first == dataset_content_hash(d) and len(calls) == 1
    assert ensure_valid(d, cache) == first and len(calls) == 1          # cached: no second GX run

    write_dataset(tmp_path / "data" / "ok", dup_page=True)               # same folder, new content
    with pytest.raises(DataValidationError):
        ensure_valid(d, cache)
    assert len(calls) == 2
    with pytest.raises(DataValidationError):                             # a failure is never cached
        ensure_valid(d, cache)
    assert len(calls) == 3


def test_content_hash_ignores_where_the_folder_lives(tmp_path):
    a = write_dataset(tmp_path / "a" / "ds")
    b = write_dataset(tmp_path / "b" / "ds")
    assert dataset_content_hash(a) == dataset_content_hash(b)
    (b / "manifest.json").write_text((b / "manifest.json").read_text().replace('"0"', '"1"'))
    assert dataset_content_hash(a) != dataset_content_hash(b)


def test_dataset_files_depend_only_on_content(tmp_path):
    """Two builds of the same pages give byte-identical folders (so one DVC hash), whenever they run."""
    import json

    from PIL import Image

    def build(d: Path) -> Path:
        w = DatasetWriter(d)
        for i in range(3):
            w.add_page(f"p{i}", Image.new("RGB", (40, 50), (i * 40, 255, 255)), text=f"t{i}", page_number=i + 1)
            w.add_query(f"q{i}", f"about t{i}")
            w.add_qrel(f"q{i}", f"p{i}")
        w.finish(name="ds", source="test", revision="0")
        return d

    a = build(tmp_path / "a" / "ds")
    b = build(tmp_path / "b" / "ds")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    # nothing time- or machine-dependent in the manifest (no created_at), so a rebuild of the same data is identical
    assert set(json.loads((a / "manifest.json").read_text())) == {"name", "source", "revision", "schema_version",
                                                                 "counts", "extra"}


def _image_only(d: Path, n: int = 4) -> Path:
    from PIL import Image

    w = DatasetWriter(d)
    for i in range(n):
        w.add_page(f"p{i}", Image.new("L", (32, 32), color=40 * i), source_doc="s", page_number=i + 1)
        w.add_query(f"q{i}", f"question {i}")
        w.add_qrel(f"q{i}", f"p{i}", 1)
    w.finish(name=d.name, source="test", revision="0")
    return d


def test_a_text_backbone_over_image_only_pages_is_refused_before_any_encode(tmp_path):
    from anchorprune.data.inputs import DatasetInputError
    from anchorprune.stages.encode import plan_encode, stage_encode

    _image_only(tmp_path / "data" / "scans")
    (tmp_path / "params.yaml").write_text(
        "data: {dataset: scans}\nbackbones: [{name: minilm, kind: minilm-text, model_id: x}]\n")
    ws = Workspace(load_settings(tmp_path / "params.yaml"), tmp_path)
    bcfg = ws.settings.backbones[0]
    for stage in (stage_encode, plan_encode, stage_calibrate):
        with pytest.raises(DatasetInputError, match=r"reads each page's text layer.*text on 0 of 4 pages") as e:
            stage(ws, bcfg)         # no backbone is loaded: model_id 'x' would fail to load
        assert "\n" not in str(e.value)
    assert not (tmp_path / "cache" / "features").exists()


def test_a_vision_backbone_over_pages_without_images_is_refused(tmp_path):
    from anchorprune.data.inputs import DatasetInputError, check_backbone_inputs

    d = write_dataset(tmp_path / "data" / "texts")
    with pytest.raises(DatasetInputError, match="reads page images, but dataset 'texts' has an image on 0 of 6"):
        check_backbone_inputs(d, "colqwen", "colqwen2")
    assert check_backbone_inputs(d, "mock", "mock")["text"] == 6


def test_calibration_refuses_fewer_than_min_pairs_and_flags_a_flat_curve(tmp_path, monkeypatch):
    from anchorprune.evaluation.calibration import CalibrationError, calibrate, flat_curve_warning
    from anchorprune.features.encoding import EncodedCorpus

    corpus = EncodedCorpus("m", 2, {}, {})
    with pytest.raises(CalibrationError, match=r"1 usable \(query, gold page\) pairs, fewer than "
                                               r"calibrate.min_pairs = 10"):
        calibrate(corpus, [("q", "p")], gamma=0.1, rho=0.5, min_pairs=10)
    assert load_settings_default_min_pairs() == 10
    assert "flat SR curve" in flat_curve_warning([1.0, 1.0, 1.0, 1.0])


def load_settings_default_min_pairs() -> int:
    from anchorprune.config import CalibrateConfig

    return CalibrateConfig().min_pairs



def test_the_encode_report_holds_no_commit(tmp_path):
    """Which commit ran a stage is provenance: beside the DVC output (reports/.provenance/), never in it."""
    import json

    from anchorprune.provenance import provenance_path
    from anchorprune.stages.encode import stage_encode

    write_dataset(tmp_path / "data" / "broken")      # a valid dataset despite the folder name
    ws = workspace(tmp_path)
    bcfg = ws.settings.backbones[0]
    stage_encode(ws, bcfg)
    path = ws.reports / "encode" / f"{bcfg.name}.json"
    assert "git_commit" not in json.loads(path.read_text()) and json.loads(path.read_text())["pages"] == 6
    assert "git_commit" in json.loads(provenance_path(path).read_text())
