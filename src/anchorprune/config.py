"""Typed, frozen configuration read from ``params.yaml``.

Every stage reads its own section. Models are strict (``extra="forbid"``): an
unknown or mistyped key fails at start with a :class:`ConfigError` that names
the key and the file.

Examples
--------
>>> cfg = Settings.model_validate({"calibrate": {"gamma": 0.1},
...                                "backbones": [{"name": "m", "kind": "mock", "model_id": "x"}]})
>>> cfg.calibrate.gamma, cfg.calibrate.rho
(0.1, 0.2)

Relative paths in a params file (``paths.*``, ``data.pdf_dir``, the tracking store) are
relative to the folder holding that file: :func:`project_root` is that folder, whatever the
current directory is.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


def _is_number_type(ann: object) -> bool:
    """Whether a field holds numbers (int, float, optionally None, or a tuple of them), not booleans."""
    if ann in (int, float):
        return True
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType, tuple):
        args = [a for a in typing.get_args(ann) if a not in (type(None), Ellipsis)]
        return bool(args) and all(_is_number_type(a) for a in args)
    return False


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: object, info) -> object:
        """YAML reads true/yes/on as booleans; pydantic would silently turn them into 1 (``gamma: true``)."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None or not _is_number_type(field.annotation):
            return v
        items = v if isinstance(v, list | tuple) else [v]
        if any(isinstance(x, bool) for x in items):
            raise ValueError(f"expected a number, got {v!r} (YAML reads true/false/yes/no/on/off as booleans)")
        return v


def _unique_nonempty(v: tuple, what: str) -> tuple:
    if not v:
        raise ValueError(f"list at least one {what} (an empty list would run nothing)")
    dupes = sorted({str(x) for x in v if list(v).count(x) > 1})
    if dupes:
        raise ValueError(f"each {what} must appear once, repeated: {dupes}")
    return v


#: decoder depth of backbone kinds whose depth does not depend on the checkpoint
KNOWN_DEPTH: dict[str, int] = {"minilm-text": 6, "mock": 8}

_CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _window_range(spec: str) -> tuple[int, int] | None:
    lo, sep, hi = spec.partition("-")
    return (int(lo), int(hi)) if sep and lo.isdigit() and hi.isdigit() else None


def _artefact_location(v: object) -> object:
    """A local path (kept as written) or an fsspec URL whose filesystem can write atomically."""
    from anchorprune.features.storage import check_location

    v = str(v)
    check_location(v)   # StorageError (a ValueError) names the URL and what to use instead
    return v


class PathsConfig(_Frozen):
    data_dir: Path = Path("data")
    features_dir: str = "cache/features"              # local path or fsspec URL (memory://, s3://bucket/features)
    index_dir: str = "indexes"                        # local path or file:// URL (memory maps need local files)
    reports_dir: Path = Path("reports")
    validation_dir: Path = Path("cache/validation")   # GX verdicts by dataset content hash
    metrics_file: Path = Path("metrics.json")         # headline metrics, tracked in git (dvc metrics show/diff)

    @field_validator("features_dir", "index_dir", mode="before")
    @classmethod
    def _locations_usable(cls, v: object, info) -> object:
        v = _artefact_location(v)
        if info.field_name == "index_dir":
            from anchorprune.features.storage import LOCAL, scheme_of

            if scheme_of(v) not in LOCAL:
                raise ValueError(f"{v}: the local index memory-maps its files, so index_dir must be a local path "
                                 "or a file:// URL (share the features cache by URL instead, or use "
                                 "index.backend: elasticsearch)")
        return v

    def resolve(self, location: str, root: Path) -> str | Path:
        """``features_dir`` / ``index_dir`` as a store location: a URL as is, a relative path under ``root``."""
        from anchorprune.features.storage import is_url

        if is_url(location):
            return location
        p = Path(location).expanduser()
        return p if p.is_absolute() else root / p


VidoreLanguage = Literal["english", "french", "spanish", "german", "italian", "portuguese"]  # hub `language` values


class DataConfig(_Frozen):
    dataset: str = "rdocs-demo"
    source: Literal["demo", "vidore", "pdfs"] = "demo"
    vidore_ids: tuple[str, ...] = ()
    vidore_languages: Literal["all"] | tuple[VidoreLanguage, ...] = "all"   # all = SAP's reference; [english] = mteb
    vidore_protocol: Literal["per_dataset", "union"] = "per_dataset"   # docs/method.md §5: per dataset, macro average
    pdf_dir: Path | None = None
    dpi: int = Field(100, ge=36, le=600)
    limit: int | None = Field(None, ge=1)
    blank_titles: bool = True
    demo_variant: Literal["small", "large", "debian"] = "small"   # debian: the ~10.7k-page benchmark corpus
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


class EncodeConfig(_Frozen):
    """How ``encode`` spreads the pages missing from the features cache over workers (flows/encode.py)."""

    runner: Literal["dask", "inline"] = "dask"   # dask: shards on a Dask cluster | inline: one process, no Dask
    address: str | None = None                   # an existing scheduler (tcp://host:8786); env ANCHORPRUNE_DASK_ADDRESS wins
    workers: int | None = Field(None, ge=1)      # local cluster: worker processes (null: the machine's CPU cores)
    torch_threads: int = Field(1, ge=1)          # torch threads per local worker process
    shard_pages: int = Field(32, ge=1)           # pages per shard (one Prefect task each)
    claim_ttl_s: float = Field(900.0, gt=0)      # a claim older than this (owner on another host) is stale


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
    runner: Literal["inline", "dask"] = "inline"   # dask: the grid's (method, window) groups on the encode cluster

    @field_validator("gammas")
    @classmethod
    def _gammas_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        _unique_nonempty(v, "gamma")
        bad = [g for g in v if not 0.0 < g <= 1.0]
        if bad:
            raise ValueError(f"every gamma must be in (0, 1], got {bad}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods_available(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _unique_nonempty(v, "method")
        if "sap_max" in v:
            raise ValueError("'sap_max' is not available: the features cache stores the head-mean (SAP-Mean) "
                             "reduction only; remove it from evaluate.methods (use 'sap')")
        return v

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        _unique_nonempty(v, "cut-off k")
        bad = [k for k in v if k < 1]
        if bad:
            raise ValueError(f"every k must be >= 1 (nDCG@k, recall@k), got {bad}")
        return v

    @field_validator("windows")
    @classmethod
    def _windows_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from anchorprune.evaluation.windows import window_layers

        _unique_nonempty(v, "window")
        for w in v:
            if w not in ("sr", "v1", "v2"):
                window_layers(w)  # raises naming the bad window
        return v


class PromoteConfig(_Frozen):
    min_retention: float = Field(0.90, gt=0.0, le=1.0)
    require_beats_random: bool = True
    confidence: float = Field(0.95, ge=0.5, lt=1.0)   # two-sided bootstrap interval; the gate uses its lower bound
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    min_queries: int = Field(20, ge=1)                  # fewer evaluation queries: nothing is certified


class MuveraConfig(_Frozen):
    """MUVERA FDE parameters (index.first_stage: muvera); dims = reps * 2**k_sim * d_proj, or final_dim."""

    k_sim: int = Field(4, ge=0, le=12)
    d_proj: int | None = Field(16, ge=1)
    reps: int = Field(16, ge=1)
    final_dim: int | None = Field(None, ge=1)
    seed: int = 0


class TokenIvfConfig(_Frozen):
    """Token-level first stage (index.first_stage: token_ivf; anchorprune.index.token_ivf)."""

    centroids: int | None = Field(None, ge=1)   # k-means lists (null: a power of two near 2 sqrt(tokens))
    nprobe: int = Field(8, ge=1)                # lists probed per query token (local backend)
    iters: int = Field(8, ge=0)                 # k-means iterations
    seed: int = 0


class IndexConfig(_Frozen):
    backend: Literal["local", "elasticsearch"] = "local"
    backbone: str | None = None   # whose champion the index serves; default: the first backbone
    name: str = Field("anchorprune", pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    dtype: Literal["float32", "float16", "bfloat16", "bits"] = "float16"
    two_stage: bool = False
    # first stage before exact MaxSim: none | mean | muvera | token_ivf | auto; null: mean if two_stage else none.
    # Left out: auto (exact below first_stage_threshold pages, token_ivf from there), or mean if two_stage
    first_stage: Literal["none", "mean", "muvera", "token_ivf", "auto"] | None = "auto"
    # auto: indexes of >= first_stage_threshold pages use first_stage_auto, smaller ones exact MaxSim
    # (20000 = first_stage.AUTO_THRESHOLD_PAGES: where token_ivf at 500 candidates is >= 5x faster than exact
    # with recall@10 >= 0.99, benchmarks/results/first_stage_threshold.json; docs/index.md)
    first_stage_threshold: int = Field(20_000, ge=1)
    first_stage_auto: Literal["mean", "muvera", "token_ivf"] = "token_ivf"
    muvera: MuveraConfig = MuveraConfig()
    token_ivf: TokenIvfConfig = TokenIvfConfig()
    candidates: int = Field(100, ge=1)
    keep_versions: int = Field(2, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _two_stage_alone_means_mean(cls, data: Any) -> Any:
        """``two_stage: true`` without a ``first_stage`` keeps its old meaning: the mean vector."""
        if isinstance(data, dict) and "first_stage" not in data and data.get("two_stage") is True:
            return {**data, "first_stage": "mean"}
        return data

    @model_validator(mode="after")
    def _fde_fits_elasticsearch(self) -> IndexConfig:
        """Elasticsearch's dense_vector holds at most 4096 dims (DenseVectorFieldMapper.MAX_DIMS_COUNT)."""
        uses_muvera = self.first_stage == "muvera" or (self.first_stage == "auto" and self.first_stage_auto == "muvera")
        if self.backend != "elasticsearch" or not uses_muvera:
            return self
        from anchorprune.index.first_stage import muvera_dims  # here: the index package imports this module

        m = self.muvera
        dims = muvera_dims(None, m.model_dump())             # None: d_proj null, known only with the vectors' dim
        if dims is not None and dims > 4096:
            raise ValueError(f"index.muvera gives {dims}-dim FDEs (reps {m.reps} x 2^k_sim {1 << m.k_sim} x d_proj "
                             f"{m.d_proj}{'' if m.final_dim is None else f', final_dim {m.final_dim}'}), above "
                             "Elasticsearch's dense_vector limit of 4096: lower reps, k_sim or d_proj, or set final_dim")
        return self

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

    @field_validator("reindex_cron", "recalibrate_cron")
    @classmethod
    def _cron_parses(cls, v: str) -> str:
        """Five-field cron (or @daily etc.), parsed now rather than when the deployment is served."""
        from cronsim import CronSim, CronSimError

        try:
            CronSim(_CRON_ALIASES.get(v.strip(), v), datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"{v!r} is not a cron expression ({exc}); write five fields like '0 2 * * *' "
                             "(minute hour day month weekday) or @daily") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone; use a name like 'UTC' or 'Europe/Paris'") from None
        return v


class TrackingConfig(_Frozen):
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: Path = Path("mlruns/artifacts")
    experiment: str = "anchorprune"


class Settings(_Frozen):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    backbones: tuple[BackboneConfig, ...] = ()
    encode: EncodeConfig = EncodeConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    promote: PromoteConfig = PromoteConfig()
    index: IndexConfig = IndexConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _unique_backbone_names(self) -> Settings:
        names = [b.name for b in self.backbones]
        if not names:
            raise ValueError("'backbones' lists no backbone: add one (name, kind, model_id), e.g. the "
                             "minilm-text entry of the repository's params.yaml")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backbone names must be unique, repeated: {dupes}")
        if self.index.backbone is not None and self.index.backbone not in names:
            raise ValueError(f"index.backbone {self.index.backbone!r} is not one of the backbones "
                             f"(known: {', '.join(names)}); set it to one of them or remove it")
        return self

    @model_validator(mode="after")
    def _windows_inside_backbones(self) -> Settings:
        """Explicit windows ('a-b') must fit every backbone whose depth is known before loading it."""
        for spec in self.evaluate.windows:
            rng = _window_range(spec)
            if rng is None:
                continue
            for b in self.backbones:
                depth = KNOWN_DEPTH.get(b.kind)
                if depth is not None and rng[1] >= depth:
                    raise ValueError(f"evaluate.windows {spec!r} reaches layer {rng[1]} but backbone {b.name!r} "
                                     f"({b.kind}) has {depth} layers (0..{depth - 1}); use 'sr' or a range "
                                     f"inside 0..{depth - 1}")
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
    """One line: the file, then each bad key and what to do about it."""
    items = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            items.append(f"unknown key '{key}' (check the spelling; allowed keys are the fields of its section)")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            items.append(msg if key == "<root>" else f"'{key}': {msg}")
    return f"invalid configuration in {source}: " + "; ".join(items)


def project_root(params: str | Path = DEFAULT_PARAMS) -> Path:
    """The folder relative paths in a params file are resolved against: the file's own folder."""
    return Path(params).resolve().parent


def load_settings(path: str | Path = DEFAULT_PARAMS, overrides: dict | None = None) -> Settings:
    """Read and validate a params file; ``overrides`` are merged on top (section by section).

    Raises :class:`ConfigError` naming the file and each bad key.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass the YAML file, e.g. {path / 'params.yaml'}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {what}") from None
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
