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
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from anchorprune.frozen import Frozen, format_error, unique_nonempty
from anchorprune.index_config import IndexConfig
from anchorprune.yaml_keys import RepeatedKeyError, UniqueKeyLoader

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


_CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _artefact_location(v: object) -> object:
    """A local path (kept as written) or an fsspec URL whose filesystem can write atomically."""
    from anchorprune.storage import check_location

    v = str(v)
    check_location(v)   # StorageError (a ValueError) names the URL and what to use instead
    return v


class PathsConfig(Frozen):
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
            from anchorprune.storage import LOCAL, scheme_of

            if scheme_of(v) not in LOCAL:
                raise ValueError(f"{v}: the local index memory-maps its files, so index_dir must be a local path "
                                 "or a file:// URL (share the features cache by URL instead, or use "
                                 "index.backend: elasticsearch)")
        return v

    def resolve(self, location: str, root: Path) -> str | Path:
        """``features_dir`` / ``index_dir`` as a store location: a URL as is, a relative path under ``root``."""
        from anchorprune.storage import is_url

        if is_url(location):
            return location
        p = Path(location).expanduser()
        return p if p.is_absolute() else root / p


VidoreLanguage = Literal["english", "french", "spanish", "german", "italian", "portuguese"]  # hub `language` values


class DataConfig(Frozen):
    dataset: str = "rdocs-demo"
    source: Literal["demo", "vidore", "pdfs"] = "demo"
    vidore_ids: tuple[str, ...] = ()
    vidore_languages: Literal["all"] | tuple[VidoreLanguage, ...] = "all"   # all = SAP's reference; [english] = mteb
    vidore_protocol: Literal["per_dataset", "union"] = "per_dataset"   # docs/method.md §5: per dataset, macro average
    pdf_dir: Path | None = None
    dpi: int = Field(100, ge=36, le=600)
    limit: int | None = Field(None, ge=1)
    blank_titles: bool = True
    strict_pdfs: bool = False     # pdfs: an unreadable PDF stops the build (default: skipped with a warning)
    identity: str | None = None   # suffix of this dataset's names (set on load: '' for the project's params.yaml dataset)
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


class BackboneConfig(Frozen):
    name: str
    kind: BackboneKind
    model_id: str
    revision: str = "main"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(4, ge=1)


class EncodeConfig(Frozen):
    """How ``encode`` spreads the pages missing from the features cache over workers (flows/encode.py)."""

    runner: Literal["dask", "inline"] = "dask"   # dask: shards on a Dask cluster | inline: one process, no Dask
    address: str | None = None                   # an existing scheduler (tcp://host:8786); env ANCHORPRUNE_DASK_ADDRESS wins
    workers: int | None = Field(None, ge=1)      # local cluster: worker processes (null: the machine's CPU cores)
    torch_threads: int = Field(1, ge=1)          # torch threads per local worker process
    shard_pages: int = Field(32, ge=1)           # pages per shard (one Prefect task each)
    claim_ttl_s: float = Field(900.0, gt=0)      # a claim older than this (owner on another host) is stale

    @field_validator("workers")
    @classmethod
    def _workers_fit_the_machine(cls, v: int | None) -> int | None:
        from anchorprune.limits import workers_problem

        problem = workers_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class CalibrateConfig(Frozen):
    pairs: int = Field(200, ge=1)
    min_pairs: int = Field(10, ge=1)      # fewer usable (query, gold page) pairs: calibrate refuses
    gamma: float = Field(0.05, gt=0.0, le=1.0)
    rho: float = Field(0.2, gt=0.0, le=1.0)
    random_trials: int = Field(5, ge=1)
    seed: int = 0


Method = Literal["sap", "sap_max", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool",
                 "anchor_merge", "anchor_kmeans"]


class EvaluateConfig(Frozen):
    gammas: tuple[float, ...] = (0.2, 0.1, 0.05)
    methods: tuple[Method, ...] = ("sap", "random", "eos_adaptive", "eos_topk", "cluster_merge", "hier_pool")
    windows: tuple[str, ...] = ("sr",)    # sr | v1 | v2 | sweep (sliding windows of the SR width) | "a-b"
    sweep_stride: int = Field(1, ge=1)     # layers between the starts of the sweep's windows
    cache_dir: str | None = "cache/evaluation"   # one JSON per evaluated config, keyed on its inputs; null: off
    random_trials: int = Field(5, ge=1)
    seed: int = 0
    ks: tuple[int, ...] = (1, 5, 10)
    runner: Literal["inline", "dask"] = "inline"   # dask: the grid's (method, window) groups on the encode cluster

    @field_validator("gammas")
    @classmethod
    def _gammas_in_range(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        unique_nonempty(v, "gamma")
        bad = [g for g in v if not 0.0 < g <= 1.0]
        if bad:
            raise ValueError(f"every gamma must be in (0, 1], got {bad}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods_available(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unique_nonempty(v, "method")
        if "sap_max" in v:
            raise ValueError("'sap_max' is not available: the features cache stores the head-mean (SAP-Mean) "
                             "reduction only; remove it from evaluate.methods (use 'sap')")
        return v

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        unique_nonempty(v, "cut-off k")
        bad = [k for k in v if k < 1]
        if bad:
            raise ValueError(f"every k must be >= 1 (nDCG@k, recall@k), got {bad}")
        return v

    @field_validator("windows")
    @classmethod
    def _windows_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from anchorprune.windows import window_layers

        unique_nonempty(v, "window")
        for w in v:
            if w not in ("sr", "v1", "v2", "sweep"):
                window_layers(w)  # raises naming the bad window
        return v


class PromoteConfig(Frozen):
    min_retention: float = Field(0.90, gt=0.0, le=1.0)
    require_beats_random: bool = True
    confidence: float = Field(0.95, ge=0.5, lt=1.0)   # two-sided bootstrap interval; the gate uses its lower bound
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    min_queries: int = Field(20, ge=1)                  # fewer evaluation queries: nothing is certified


class ScheduleConfig(Frozen):
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


class TrackingConfig(Frozen):
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: Path = Path("mlruns/artifacts")
    experiment: str = "anchorprune"


class Settings(Frozen):
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

    @model_validator(mode="before")
    @classmethod
    def _dataset_identity(cls, raw: Any, info: ValidationInfo) -> Any:
        """One identity per dataset (anchorprune.identity): a dataset other than the one the project's
        ``params.yaml`` names (``primary_dataset`` in the validation context, set by :func:`load_settings`)
        gets ``index.name`` suffixed ``-<dataset>``, its reports under ``<reports_dir>/<dataset>`` and
        ``data.identity`` = ``-<dataset>`` (its registered model's suffix). Without a context nothing changes."""
        from anchorprune.identity import identity_suffix, scoped_name, scoped_reports

        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            return raw
        data = raw["data"]
        dataset = data.get("dataset", DataConfig().dataset)
        if data.get("identity") is not None or not isinstance(dataset, str):
            return raw
        suffix = identity_suffix(dataset, (info.context or {}).get("primary_dataset"))
        raw = {**raw, "data": {**data, "identity": suffix}}
        index, paths = raw.get("index", {}), raw.get("paths", {})
        if suffix and isinstance(index, dict):
            raw["index"] = {**index, "name": scoped_name(str(index.get("name", IndexConfig().name)), suffix)}
        if suffix and isinstance(paths, dict):
            raw["paths"] = {**paths, "reports_dir": scoped_reports(str(paths.get("reports_dir", "reports")), suffix)}
        return raw

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
        from anchorprune.windows import KNOWN_DEPTH, window_range

        for spec in self.evaluate.windows:
            rng = window_range(spec)
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
        dump = self.model_dump(mode="json")
        if not dump["data"].get("identity"):
            dump["data"].pop("identity", None)     # the project's own dataset: the hash it had before identities
        blob = json.dumps(dump, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


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
        raw = yaml.load(text, Loader=UniqueKeyLoader) or {}    # noqa: S506 - a SafeLoader subclass
    except RepeatedKeyError as exc:
        raise ConfigError(f"config file {path} {exc}") from None
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
        return Settings.model_validate(raw, context={"primary_dataset": primary_dataset(path)})
    except ValidationError as exc:
        raise ConfigError(format_error(exc, str(path))) from None


def primary_dataset(path: str | Path) -> str | None:
    """The dataset of the project's own ``params.yaml`` next to ``path`` (``None``: ``path`` is that file, or
    there is none): the one dataset whose names carry no suffix (anchorprune.identity)."""
    path = Path(path)
    sibling = path.parent / DEFAULT_PARAMS
    if path.name == DEFAULT_PARAMS or not sibling.is_file():
        return None
    try:
        raw = yaml.safe_load(sibling.read_text()) or {}
        return str(((raw.get("data") or {}).get("dataset")) or DataConfig().dataset)
    except (OSError, yaml.YAMLError, AttributeError):
        return None
