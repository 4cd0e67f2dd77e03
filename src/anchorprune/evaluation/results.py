"""Evaluation results as pydantic models: one config's figures, and the whole grid's.

``EvaluationResult.model_dump_json`` / ``model_validate_json`` is the on-disk format of
``reports/evaluation/<backbone>.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

BYTES_PER_VALUE = 4  # storage is reported for float32 vectors; the index may quantise further


class ConfigResult(BaseModel):
    """One evaluated config (the ``full`` reference included)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    gamma: float
    window: str | None                  # "a-b" for SAP, None otherwise
    window_spec: str | None             # how it was chosen: sr, v1, v2 or the explicit range
    metrics: dict[str, float]           # nDCG@k, recall@k, MRR@10 means (and *_std for random)
    ndcg_retention: float
    sr_ratio_of_means: float
    sr_mean_of_ratios: float
    sr_excluded_pairs: int
    vectors_per_page: float
    bytes_per_page: float
    realised_gamma: float
    per_query: dict[str, float] = Field(default_factory=dict)  # qid -> nDCG@5 (random: mean over trials)
    kappa: float | None = None          # the κ eos_adaptive was built with
    extra: dict[str, float] = Field(default_factory=dict)
    run_id: str | None = None           # the MLflow child run that logged this config

    @property
    def label(self) -> str:
        return self.method if self.window is None else f"{self.method}[{self.window}]"

    @property
    def key(self) -> tuple[str, float, str | None]:
        """What identifies a config across evaluations: method, γ, window."""
        return (self.method, round(self.gamma, 6), self.window)

    def flat(self) -> dict:
        """One table row: scalars and metrics (no per-query arrays)."""
        row = self.model_dump(exclude={"metrics", "extra", "per_query"})
        row.update(self.metrics)
        row.update(self.extra)
        row["label"] = self.label
        return row


class EvaluationResult(BaseModel):
    """A grid over one backbone; ``meta`` and ``parent_run_id`` are filled by the evaluate stage."""

    model_config = ConfigDict(extra="forbid")

    backbone: str
    full: ConfigResult
    configs: list[ConfigResult]
    num_queries: int
    num_pages: int
    meta: dict[str, Any] = Field(default_factory=dict)
    parent_run_id: str | None = None
    sources: list[str] = Field(default_factory=list)         # evaluation datasets, when more than one
    query_sources: dict[str, str] = Field(default_factory=dict)  # qid -> source, when more than one

    def rows(self) -> list[dict]:
        return [self.full.flat()] + [c.flat() for c in self.configs]

    def random_for(self, gamma: float) -> ConfigResult | None:
        """The random baseline at ``gamma``, if evaluated."""
        for c in self.configs:
            if c.method == "random" and math.isclose(c.gamma, gamma):
                return c
        return None

    def random_retention(self, gamma: float) -> float | None:
        r = self.random_for(gamma)
        return r.ndcg_retention if r else None

    def find(self, method: str, gamma: float, window: str | None) -> ConfigResult | None:
        for c in self.configs:
            if c.method == method and math.isclose(c.gamma, gamma) and c.window == window:
                return c
        return None

    def save(self, path: Path) -> None:
        from anchorprune.ioutil import write_text_atomic

        write_text_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> EvaluationResult:
        """Read ``reports/evaluation/<backbone>.json``; a clear error if it is missing or from an older format."""
        from pydantic import ValidationError

        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `anchorprune evaluate` first")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise ValueError(f"{path} is not an evaluation result of this version ({exc.error_count()} "
                             "problem(s)): rerun `anchorprune evaluate`") from None
