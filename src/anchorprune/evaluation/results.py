"""Evaluation results as pydantic models: one config's figures, and the whole grid's.

``EvaluationResult.model_dump_json`` / ``model_validate_json`` is the on-disk format of
``reports/evaluation/<backbone>.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from anchorprune.provenance import provenance_of, provenance_path, without_provenance, write_report

BYTES_PER_VALUE = 4  # storage is reported for float32 vectors; the index may quantise further


class ConfigResult(BaseModel):
    """One evaluated config (the ``full`` reference included)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    gamma: float
    window: str | None                  # "a-b" for SAP, None otherwise
    window_spec: str | None             # how it was chosen: sr, v1, v2, sweep:a-b or the explicit range
    window_source: str | None = None    # sr | fixed (v1, v2, explicit ranges) | sweep
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

    @property
    def window_start(self) -> int | None:
        return int(self.window.split("-")[0]) if self.window else None

    @property
    def window_end(self) -> int | None:
        return int(self.window.split("-")[1]) if self.window else None

    def flat(self) -> dict:
        """One table row: scalars and metrics (no per-query arrays)."""
        row = self.model_dump(exclude={"metrics", "extra", "per_query"})
        row["window_start"], row["window_end"] = self.window_start, self.window_end
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
    #: this run's per-config cache lookups ({"hits": n, "misses": m}); not saved: a rerun must write the same file
    _cache_stats: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def cache_stats(self) -> dict[str, int]:
        return self._cache_stats

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
        """Write the figures to ``path`` and the run's provenance (MLflow run ids, git commit) beside it in
        :func:`provenance_path`: the DVC output is then the same file whenever the figures are the same."""
        prov = {"parent_run_id": self.parent_run_id, **provenance_of(self.meta),
                "run_ids": {_key_str(c.key): c.run_id for c in [self.full, *self.configs] if c.run_id}}
        clean = self.model_copy(update={
            "parent_run_id": None, "meta": without_provenance(self.meta),
            "full": self.full.model_copy(update={"run_id": None}),
            "configs": [c.model_copy(update={"run_id": None}) for c in self.configs]})
        write_report(path, clean.model_dump_json(indent=2), prov)

    @classmethod
    def load(cls, path: Path) -> EvaluationResult:
        """Read ``reports/evaluation/<backbone>.json`` (and its provenance, when there);
        a clear error if it is missing or from an older format."""
        import json

        from pydantic import ValidationError

        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `anchorprune evaluate` first")
        try:
            result = cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise ValueError(f"{path} is not an evaluation result of this version ({exc.error_count()} "
                             "problem(s)): rerun `anchorprune evaluate`") from None
        try:
            prov = json.loads(provenance_path(path).read_text())
        except (OSError, ValueError):
            return result
        ids = prov.get("run_ids") or {}
        return result.model_copy(update={
            "parent_run_id": result.parent_run_id or prov.get("parent_run_id"),
            "meta": {**result.meta, **({"git_commit": prov["git_commit"]} if prov.get("git_commit") else {})},
            "full": result.full.model_copy(update={"run_id": ids.get(_key_str(result.full.key))}),
            "configs": [c.model_copy(update={"run_id": c.run_id or ids.get(_key_str(c.key))})
                        for c in result.configs]})



def _key_str(key: tuple) -> str:
    method, gamma, window = key
    return f"{method}@{gamma:g}[{window or '-'}]"
