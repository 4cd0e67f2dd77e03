"""The ``index`` section of ``params.yaml``: backend, name, storage dtype, first stage and its parameters.

Kept apart from the index package so that reading the configuration never imports the index (and torch);
its limits come from :mod:`anchorprune.limits`, which the index backends use too.

>>> IndexConfig(two_stage=True).first_stage, IndexConfig().first_stage_threshold
('mean', 20000)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from anchorprune.frozen import Frozen
from anchorprune.limits import (
    ES_INDEX_NAME,
    ES_MAX_DIMS,
    KMEANS_SAMPLE_PER_CENTROID,
    candidates_problem,
    kmeans_memory_problem,
    muvera_dims,
    muvera_memory_problem,
    target_recall_problem,
)


class MuveraConfig(Frozen):
    """MUVERA FDE parameters (index.first_stage: muvera); dims = reps * 2**k_sim * d_proj, or final_dim."""

    k_sim: int = Field(4, ge=0, le=12)
    d_proj: int | None = Field(16, ge=1)
    reps: int = Field(16, ge=1)
    final_dim: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _fits_in_memory(self) -> MuveraConfig:
        """An FDE this machine cannot hold is refused when the config loads, not mid-build."""
        problem = muvera_memory_problem(self.model_dump())
        if problem:
            raise ValueError(problem)
        return self


#: a rebuild keeps the serving version's token_ivf centroids while the new tokens' mean assignment distance
#: (1 - cos to the nearest centroid) is at most this much above the training tokens' (anchorprune.index.ivf_update).
#: Measured (benchmarks/results/first_stage_incremental.json, MiniLM stand-in vectors of the Debian corpus):
#: 1%-page changes of the same corpus drift -0.07..-0.01 (3,000 pages, 10 rounds) and carried lists keep recall@10
#: within 0.003 of a retrain; pages from a part of the corpus the centroids never saw drift +0.42..+0.44 (lose
#: 0.0025 at 5% of the pages, 0.0125 at 20%), replacing half the pages +0.145 (loses 0.010; 1,500 pages): 0.10
#: keeps every measured in-domain 1% change and retrains every measured harmful one
TOKEN_IVF_RETRAIN_DRIFT = 0.10
#: ... and while the tokens added + dropped since the centroids were trained stay below this share of them.
#: Measured as above: after 10 successive 1% rebuilds (15% of the tokens) carried lists gave recall@10 0.996 vs
#: 0.997 retrained; 75% of the tokens changed lost 0.010; 0.25 is a conservative point between (not pinned down)
TOKEN_IVF_RETRAIN_CHANGED = 0.25


class TokenIvfConfig(Frozen):
    """Token-level first stage (index.first_stage: token_ivf; anchorprune.index.token_ivf)."""

    centroids: int | None = Field(None, ge=1)   # k-means lists (null: a power of two near 2 sqrt(tokens))
    nprobe: int = Field(8, ge=1)                # lists probed per query token (local backend)
    iters: int = Field(8, ge=0)                 # k-means iterations
    seed: int = 0
    # Incremental rebuilds (index/ivf_update.py) keep the serving version's centroids and retrain past either
    # threshold; 0 retrains at every rebuild. MEASURED: see docs/index.md "Incremental rebuilds"
    retrain_drift: float = Field(TOKEN_IVF_RETRAIN_DRIFT, ge=0)
    retrain_changed: float = Field(TOKEN_IVF_RETRAIN_CHANGED, ge=0)

    @model_validator(mode="after")
    def _fits_in_memory(self) -> TokenIvfConfig:
        """k-means this machine cannot hold is refused when the config loads, not mid-build."""
        problem = kmeans_memory_problem(self.centroids, KMEANS_SAMPLE_PER_CENTROID)
        if problem:
            raise ValueError(problem)
        return self


#: the lower confidence bound the calibration applies (``mean - 1.645 sd / sqrt(n)``) is only as good as its sample:
#: when every one of ``n`` queries gets its full top 10, ``sd`` is 0 and the bound says 1.0 whatever ``n`` is. The
#: exact 95% bound in that case (rule of three) is that at most ~3/n of queries lose a page; with a lost page
#: costing 0.1 of a query's recall@10 that is recall >= 1 - 0.3/n, which reaches 0.99 (the default target) from
#: n = 30. At 30 one query missing one page still passes (mean 0.9967, sd 0.018, bound 0.9912), two do not.
#: (20, promote.min_queries, would certify only ~0.985.) Hence 30 held-out queries before they are trusted
CALIBRATION_MIN_QUERIES = 30


class CalibrationConfig(Frozen):
    """How a build calibrates its token_ivf first stage to ``index.target_recall`` (anchorprune.index.calibration).

    ``source`` picks the sample: ``none`` (no calibration: fixed settings), ``queries`` (the dataset's
    calibration-split queries, those ``data.calibration_fraction`` holds out for SR calibration, never the
    evaluation ones, encoded with the serving backbone's query encoder), ``pseudo`` (pseudo-queries drawn from
    the page tokens) or ``auto`` (``queries`` when the split holds at least ``min_queries``, else ``pseudo``).
    Left out, it keeps what ``queries`` meant before ``source`` existed: ``pseudo`` when ``queries > 0``,
    ``none`` when 0.

    >>> CalibrationConfig().source, CalibrationConfig(queries=80).source, CalibrationConfig(queries=0).source
    ('none', 'pseudo', 'none')
    """

    # Off by default; `queries` is the recommended source. On the docstrings corpus pseudo-queries overestimated
    # real-query recall (chose nprobe 2 / 100 candidates: 0.995 on pseudo-, 0.862 on real queries, where the fixed
    # 8 / 500 gave 0.995; benchmarks/results/first_stage_calibration_docstrings.json), and `auto` falls back to them
    source: Literal["none", "queries", "pseudo", "auto"] = "none"
    # the sample size: pseudo-queries drawn, or at most this many of the calibration split (a seeded draw when it
    # holds more). 0 (only with source none / left out): no calibration, as before `source` existed
    queries: int = Field(200, ge=0)
    min_queries: int = Field(CALIBRATION_MIN_QUERIES, ge=2)   # queries / auto: fewer split queries than this
    query_tokens: tuple[int, int] = (4, 16)     # pseudo-query length in tokens, uniform in [lo, hi]
    noise: float = Field(0.5, ge=0)             # relative Gaussian noise on each pseudo-query token
    recall: Literal["tie_aware", "plain"] = "tie_aware"   # the recall the target is met on
    seed: int = 0                               # pseudo-queries, and the draw from a split larger than `queries`

    @model_validator(mode="before")
    @classmethod
    def _source_left_out_keeps_the_old_meaning(cls, data: Any) -> Any:
        """No ``source``: ``queries > 0`` meant pseudo-query calibration and ``0`` none (params.yaml before
        ``source``); YAML reads ``source: off`` as false, which means ``none`` too."""
        if not isinstance(data, dict):
            return data
        if data.get("source") is False:
            return {**data, "source": "none"}
        if "source" not in data and "queries" in data:
            q = data["queries"]
            if isinstance(q, int) and not isinstance(q, bool):
                return {**data, "source": "pseudo" if q > 0 else "none"}
        return data

    @field_validator("source", mode="before")
    @classmethod
    def _source_named(cls, v: Any) -> Any:
        if v not in ("none", "queries", "pseudo", "auto"):
            raise ValueError(f"index.calibration.source must be none | queries | pseudo | auto, got {v!r} "
                             "(queries: the dataset's held-out calibration queries, the recommended source)")
        return v

    @field_validator("query_tokens")
    @classmethod
    def _tokens_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"query_tokens must be [lo, hi] with 1 <= lo <= hi, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _sample_size_fits_the_source(self) -> CalibrationConfig:
        if self.source != "none" and self.queries < 1:
            raise ValueError(f"index.calibration.queries is the sample size and must be >= 1 with source "
                             f"{self.source!r}, got {self.queries}; to turn calibration off write source: none")
        if self.source in ("queries", "auto") and self.queries < self.min_queries:
            raise ValueError(f"index.calibration.queries ({self.queries}) caps the calibration queries measured, so "
                             f"it must be >= min_queries ({self.min_queries}) with source {self.source!r}")
        return self


class IndexConfig(Frozen):
    backend: Literal["local", "elasticsearch"] = "local"
    backbone: str | None = None   # whose champion the index serves; default: the first backbone
    name: str = Field("anchorprune", pattern=f"^{ES_INDEX_NAME.pattern}$")
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
    # calibration (token_ivf): a build measures the cheapest (nprobe, candidates) reaching recall@10 >= target_recall
    # and records it; searches use it unless candidates / token_ivf.nprobe are set here (set = pinned)
    target_recall: float = 0.99
    calibration: CalibrationConfig = CalibrationConfig()
    candidates: int = Field(100, ge=1)          # left out: the version's calibrated value (100 when it has none)
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
        """Elasticsearch's dense_vector holds at most :data:`~anchorprune.limits.ES_MAX_DIMS` dims."""
        uses_muvera = self.first_stage == "muvera" or (self.first_stage == "auto" and self.first_stage_auto == "muvera")
        if self.backend != "elasticsearch" or not uses_muvera:
            return self
        m = self.muvera
        dims = muvera_dims(None, m.model_dump())             # None: d_proj null, known only with the vectors' dim
        if dims is not None and dims > ES_MAX_DIMS:
            raise ValueError(f"index.muvera gives {dims}-dim FDEs (reps {m.reps} x 2^k_sim {1 << m.k_sim} x d_proj "
                             f"{m.d_proj}{'' if m.final_dim is None else f', final_dim {m.final_dim}'}), above "
                             f"Elasticsearch's dense_vector limit of {ES_MAX_DIMS}: lower reps, k_sim or d_proj, or "
                             "set final_dim")
        return self

    @field_validator("target_recall")
    @classmethod
    def _recall_in_unit_interval(cls, v: float) -> float:
        problem = target_recall_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    def pinned(self) -> dict[str, int]:
        """The search settings this config sets explicitly (they win over a version's calibrated ones).

        >>> IndexConfig().pinned(), IndexConfig(candidates=300, token_ivf={"nprobe": 4}).pinned()
        ({}, {'candidates': 300, 'nprobe': 4})
        """
        out = {}
        if "candidates" in self.model_fields_set:
            out["candidates"] = self.candidates
        if "nprobe" in self.token_ivf.model_fields_set:
            out["nprobe"] = self.token_ivf.nprobe
        return out

    @field_validator("candidates")
    @classmethod
    def _candidates_within_knn_limit(cls, v: int) -> int:
        problem = candidates_problem(v)         # both backends keep to Elasticsearch's kNN limit
        if problem:
            raise ValueError(problem)
        return v
