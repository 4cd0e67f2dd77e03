"""Calibration: the SR-by-layer curve on held-out (query, gold page) pairs, then the SR-guided window."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anchorprune.features.encoding import EncodedCorpus


@dataclass
class CalibrationResult:
    backbone: str
    num_layers: int
    gamma: float
    rho: float
    num_pairs: int
    excluded_pairs: int
    sr_mean: list[float]          # per layer
    sr_std: list[float]
    random_mean: list[float]
    random_std: list[float]
    window: list[int]             # SR-selected layers
    alpha: float
    beta: float
    median: float
    warnings: list[str] = field(default_factory=list)   # e.g. a flat SR curve (every layer equal)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> CalibrationResult:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `anchorprune calibrate` first")
        return cls(**json.loads(path.read_text()))


def calibration_pairs(
    qrels: Mapping[str, Mapping[str, int]],
    qids: Sequence[str],
    page_ids: Sequence[str],
    max_pairs: int,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """(query id, gold page id) pairs from ``qids``, at most ``max_pairs``, sampled reproducibly.

    >>> calibration_pairs({"q1": {"a": 1, "b": 0}, "q2": {"c": 2}}, ["q1", "q2"], ["a", "b", "c"], 10)
    [('q1', 'a'), ('q2', 'c')]
    """
    known = set(page_ids)
    pairs = [(q, p) for q in qids for p, rel in sorted(qrels.get(q, {}).items()) if rel > 0 and p in known]
    if len(pairs) > max_pairs:
        pairs = sorted(random.Random(seed).sample(pairs, max_pairs))
    return pairs


class CalibrationError(ValueError):
    """Too few usable (query, gold page) pairs to calibrate on."""


def too_few_pairs(usable: int, min_pairs: int, excluded: int = 0) -> CalibrationError:
    why = f" ({excluded} excluded: gold pages with fewer than two tokens)" if excluded else ""
    return CalibrationError(
        f"calibration has {usable} usable (query, gold page) pairs{why}, fewer than calibrate.min_pairs = "
        f"{min_pairs}: add queries (PDF outline entries, labelled questions) or lower calibrate.min_pairs")


def flat_curve_warning(sr_mean: Sequence[float], tol: float = 1e-9) -> str | None:
    """A warning when every layer has the same SR: the window choice is then arbitrary.

    >>> flat_curve_warning([1.0, 1.0, 1.0]) is not None, flat_curve_warning([0.9, 1.0])
    (True, None)
    """
    if len(sr_mean) > 1 and max(sr_mean) - min(sr_mean) <= tol:
        return (f"flat SR curve: every layer has SR {sr_mean[0]:.3f}, so the window is arbitrary (too few "
                "tokens per page, or a backbone that does not read these pages)")
    return None


def calibrate(
    corpus: EncodedCorpus,
    pairs: Sequence[tuple[str, str]],
    gamma: float,
    rho: float,
    random_trials: int = 5,
    seed: int = 0,
    min_pairs: int = 1,
) -> CalibrationResult:
    """Per-layer SR (W = {l}) at ``gamma``, the random line, and the SR-guided window (docs/method.md §3).

    Raises :class:`CalibrationError` with fewer than ``min_pairs`` usable pairs (before or after the
    pairs whose gold page has fewer than two tokens are excluded).
    """
    from anchorprune.evaluation.grid import torch_threads
    from anchorprune.evaluation.retention import select_sr_window, sr_curve

    if not pairs:
        raise ValueError("calibration needs at least one (query, gold page) pair: are there calibration queries?")
    if len(pairs) < min_pairs:
        raise too_few_pairs(len(pairs), min_pairs)
    with torch_threads(1):  # many small per-pair ops: see torch_threads
        curve = sr_curve(
            [(corpus.queries[q], corpus.features[p]) for q, p in pairs],
            gamma=gamma, random_trials=random_trials, seed=seed,
        )
    if int(curve.num_pairs) < min_pairs:
        raise too_few_pairs(int(curve.num_pairs), min_pairs, int(curve.excluded))
    win = select_sr_window(list(curve.mean), rho=rho)
    flat = flat_curve_warning([float(x) for x in curve.mean])
    return CalibrationResult(
        backbone=corpus.backbone,
        num_layers=corpus.num_layers,
        gamma=gamma,
        rho=rho,
        num_pairs=int(curve.num_pairs),
        excluded_pairs=int(curve.excluded),
        sr_mean=[float(x) for x in curve.mean],
        sr_std=[float(x) for x in curve.std],
        random_mean=[float(x) for x in curve.random_mean],
        random_std=[float(x) for x in curve.random_std],
        window=list(win.layers),
        alpha=float(win.alpha),
        beta=float(win.beta),
        median=float(win.median),
        warnings=[flat] if flat else [],
    )
