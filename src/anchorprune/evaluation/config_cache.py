"""Per-config cache of the evaluation grid: one JSON per (backbone, method, window, γ), keyed on its inputs.

A config's figures depend only on the pages' features (the features cache's identity: backbone id,
revision and dtype, each page's content hash and captured layers), the evaluation queries' vectors
and qrels, the protocol (sources, cut-offs, seeds, random trials, the κ calibration pages) and the
code that prunes and scores. All of it goes into the key, so a grid change recomputes only the new
configs and a rerun with nothing changed recomputes nothing, in ``make demo`` (Prefect) and
``make repro`` (DVC) alike: both call :func:`anchorprune.evaluation.grid.evaluate_grid`.

Entries live in ``evaluate.cache_dir`` (default ``cache/evaluation/<key>.json``, ignored by git and
outside every DVC output); deleting the folder only costs recomputation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anchorprune.evaluation.results import ConfigResult

log = logging.getLogger(__name__)

#: the code a config's figures depend on (package-relative globs)
CODE_GLOBS = ("evaluation/*.py", "pruning/**/*.py", "features/record.py")


@functools.cache
def code_version() -> str:
    """Hash of the pruning, scoring and evaluation sources plus the package version."""
    import anchorprune

    root = Path(anchorprune.__file__).parent
    h = hashlib.sha256(anchorprune.__version__.encode())
    for pattern in CODE_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.name == "config_cache.py":
                continue            # the cache's own bookkeeping does not change any figure
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def corpus_fingerprint(corpus: Any, identity: Mapping[str, Any]) -> str:
    """The features-cache identity of the pages (backbone ``identity``, content hashes, layers, token counts)
    and the queries' vectors (their bytes: a few KB per query)."""
    h = hashlib.sha256(json.dumps(dict(identity), sort_keys=True, default=str).encode())
    h.update(f"{corpus.backbone}|{corpus.num_layers}".encode())
    for pid, f in corpus.features.items():
        h.update(f"{pid}|{f.content_hash}|{list(f.layers)}|{f.num_tokens}|{tuple(f.embeddings.shape)}".encode())
    for qid in sorted(corpus.queries):
        t = corpus.queries[qid].detach().to("cpu").contiguous()
        h.update(qid.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class ConfigCache:
    """``get``/``put`` of one config's :class:`ConfigResult`; ``hits``/``misses`` count this run's lookups."""

    def __init__(self, root: str | Path, base: Mapping[str, Any]):
        self.root = Path(root)
        self.base = json.dumps(dict(base), sort_keys=True, default=str)
        self.hits = 0
        self.misses = 0

    def key(self, method: str, gamma: float, layers: Sequence[int] | None) -> str:
        job = json.dumps({"method": method, "gamma": round(float(gamma), 6),
                          "layers": list(layers) if layers else None}, sort_keys=True)
        return hashlib.sha256(f"{self.base}|{job}".encode()).hexdigest()[:32]

    def get(self, method: str, gamma: float, layers: Sequence[int] | None) -> ConfigResult | None:
        path = self.root / f"{self.key(method, gamma, layers)}.json"
        try:
            cfg = ConfigResult.model_validate_json(path.read_text())
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return cfg

    def put(self, cfg: ConfigResult, layers: Sequence[int] | None) -> None:
        from anchorprune.ioutil import write_text_atomic

        self.root.mkdir(parents=True, exist_ok=True)
        blob = cfg.model_copy(update={"run_id": None}).model_dump_json()
        write_text_atomic(self.root / f"{self.key(cfg.method, cfg.gamma, layers)}.json", blob)
