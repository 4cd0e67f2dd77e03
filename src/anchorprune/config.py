"""Typed, frozen configuration read from ``params.yaml``.

Every stage reads its own section. Models are strict (``extra="forbid"``): an
unknown or mistyped key fails at start with a :class:`ConfigError` that names
the key and the file.

Examples
--------
>>> cfg = Settings.model_validate({"calibrate": {"gamma": 0.1}})
>>> cfg.calibrate.gamma, cfg.calibrate.rho
(0.1, 0.2)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Frozen):
    data_dir: Path = Path("data")
    features_dir: Path = Path("cache/features")
    index_dir: Path = Path("indexes")
    reports_dir: Path = Path("reports")


VidoreLanguage = Literal["english", "french", "spanish", "german", "italian", "portuguese"]  # hub `language` values


class DataConfig(_Frozen):
    dataset: str = "rdocs-demo"
    source: Literal["demo", "vidore", "pdfs"] = "demo"
    vidore_ids: tuple[str, ...] = ()
    vidore_languages: Literal["all"] | tuple[VidoreLanguage, ...] = "all"   # all = SAP's reference; [english] = mteb
    vidore_protocol: Literal["per_dataset", "union"] = "per_dataset"   # SPEC §5: per dataset, macro average
    pdf_dir: Path | None = None
    dpi: int = Field(100, ge=36, le=600)
    limit: int | None = Field(None, ge=1)
    blank_titles: bool = True
    demo_variant: Literal["small", "large"] = "small"
    calibration_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    seed: int = 0

    @field_validator("vidore_languages", mode="before")
    @classmethod
    def _known_languages(cls, v: object) -> object:
        allowed = VidoreLanguage.__args__
        if v == "all":
            return v
        items = [v] if isinstance(v, str) else list(v) if isinstance(v, list | tuple) else None
        bad = [x for x in items or [] if x not in allowed]
        if not items or bad:
            raise ValueError(f"{bad or v!r} is not 'all' or a list of ViDoRe languages {list(allowed)} "
                             "(e.g. [english] for mteb's protocol)")
        return tuple(sorted(set(items)))


BackboneKind = Literal["minilm-text", "colpali", "colqwen2", "colpali-engine", "jina-v4", "mock"]


class BackboneConfig(_Frozen):
    name: str
    kind: BackboneKind
    model_id: str
    revision: str = "main"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(4, ge=1)


class CalibrateConfig(_Frozen):
    pairs: int = Field(200, ge=1)
    gamma: float = Field(0.05, gt=0.0, le=1.0)
    rho: float = Field(0.2, gt=0.0, le=1.0)
    random_trials: int = Field(5, ge=1)
    seed: int = 0


Method = Literal["sap", "sap_max", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool",
                 "anchor_merge"]


class EvaluateConfig(_Frozen):
    gammas: tuple[float, ...] = (0.2, 0.1, 0.05)
    methods: tuple[Method, ...] = ("sap", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool")
    windows: tuple[str, ...] = ("sr",)
    random_trials: int = Field(5, ge=1)
    seed: int = 0
    ks: tuple[int, ...] = (1, 5, 10)

    @field_validator("gammas")
    @classmethod
    def _gammas_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [g for g in v if not 0.0 < g <= 1.0]
        if bad:
            raise ValueError(f"every gamma must be in (0, 1], got {bad}")
        return v

    @field_validator("windows")
    @classmethod
    def _windows_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for w in v:
            if w in ("sr", "v1", "v2"):
                continue
            lo, sep, hi = w.partition("-")
            if not (sep and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi)):
                raise ValueError(f"window {w!r} is not 'sr', 'v1', 'v2' or an inclusive range like '8-11'")
        return v


class PromoteConfig(_Frozen):
    min_retention: float = Field(0.90, gt=0.0, le=1.0)
    require_beats_random: bool = True


class MuveraConfig(_Frozen):
    """MUVERA FDE parameters (index.first_stage: muvera); dims = reps * 2**k_sim * d_proj, or final_dim."""

    k_sim: int = Field(4, ge=0, le=12)
    d_proj: int | None = Field(16, ge=1)
    reps: int = Field(16, ge=1)
    final_dim: int | None = Field(None, ge=1)
    seed: int = 0


class IndexConfig(_Frozen):
    backend: Literal["local", "elasticsearch"] = "local"
    backbone: str | None = None   # whose champion the index serves; default: the first backbone
    name: str = Field("anchorprune", pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    dtype: Literal["float32", "float16", "bfloat16", "bits"] = "float16"
    two_stage: bool = False
    # first stage before exact MaxSim: none | mean | muvera; null: mean if two_stage else none
    first_stage: Literal["none", "mean", "muvera"] | None = None
    muvera: MuveraConfig = MuveraConfig()
    candidates: int = Field(100, ge=1)
    keep_versions: int = Field(2, ge=2)

    @field_validator("candidates")
    @classmethod
    def _candidates_within_knn_limit(cls, v: int) -> int:
        # Elasticsearch refuses kNN num_candidates above 10000 (KnnSearchBuilder); the local backend follows suit
        if v > 10_000:
            raise ValueError(f"{v} is above 10000, the most kNN candidates Elasticsearch accepts "
                             "(num_candidates); use 10000 or fewer")
        return v


class ScheduleConfig(_Frozen):
    reindex_cron: str = "0 2 * * *"
    recalibrate_cron: str = "0 3 * * 0"
    timezone: str = "UTC"


class TrackingConfig(_Frozen):
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: Path = Path("mlruns/artifacts")
    experiment: str = "anchorprune"


class Settings(_Frozen):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    backbones: tuple[BackboneConfig, ...] = ()
    calibrate: CalibrateConfig = CalibrateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    promote: PromoteConfig = PromoteConfig()
    index: IndexConfig = IndexConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _unique_backbone_names(self) -> Settings:
        names = [b.name for b in self.backbones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backbone names must be unique, repeated: {dupes}")
        return self

    def backbone(self, name: str) -> BackboneConfig:
        for b in self.backbones:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.backbones) or "none"
        raise ConfigError(f"no backbone named {name!r} in the config (known: {known})")

    def config_hash(self) -> str:
        """Short stable hash of the whole configuration (recorded on every artefact)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}' (check the spelling; allowed keys are the fields of its section)")
        else:
            lines.append(f"  '{key}': {e['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path = DEFAULT_PARAMS, overrides: dict | None = None) -> Settings:
    """Read and validate a params file; ``overrides`` are merged on top (section by section).

    Raises :class:`ConfigError` naming the file and each bad key.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, str(path))) from None
