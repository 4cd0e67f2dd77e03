"""The evaluation grid: methods x gamma x windows over an encoded corpus (SPEC §5).

Every config prunes every page from the features cache, scores all evaluation
queries against all pages with exhaustive MaxSim, and reports nDCG/recall/MRR,
``ndcg_retention`` against the full index, score retention of the gold pairs,
and storage. Random runs ``random_trials`` seeds (mean and std).
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from anchorprune.encoding import EncodedCorpus

log = logging.getLogger(__name__)

WINDOWED = {"sap", "sap_max", "anchor_merge"}
BYTES_PER_VALUE = 4  # storage is reported for float32 vectors; the index may quantise further


@dataclass
class ConfigResult:
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
    extra: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None           # the MLflow child run that logged this config

    @property
    def label(self) -> str:
        return self.method if self.window is None else f"{self.method}[{self.window}]"

    def flat(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k not in ("metrics", "extra")}
        row.update(self.metrics)
        row.update(self.extra)
        row["label"] = self.label
        return row


@dataclass
class EvaluationResult:
    backbone: str
    full: ConfigResult
    configs: list[ConfigResult]
    num_queries: int
    num_pages: int

    def rows(self) -> list[dict]:
        return [self.full.flat()] + [c.flat() for c in self.configs]

    def random_retention(self, gamma: float) -> float | None:
        for c in self.configs:
            if c.method == "random" and math.isclose(c.gamma, gamma):
                return c.ndcg_retention
        return None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore.

    The grid is thousands of small per-page tensor ops; with several threads on a busy 2-core
    machine they spin-wait (measured: random pruning 13x slower, cluster-merge 2x).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def window_label(layers: Sequence[int] | None) -> str | None:
    """``[8, 9, 10, 11]`` -> ``'8-11'`` (windows are contiguous inclusive ranges).

    >>> window_label([8, 9, 10, 11]), window_label(None)
    ('8-11', None)
    """
    if not layers:
        return None
    return f"{min(layers)}-{max(layers)}"


def _score(corpus: EncodedCorpus, vectors: Mapping[str, torch.Tensor], qids: Sequence[str]) -> torch.Tensor:
    from anchorprune.scoring import pack, score_packed

    pids = corpus.page_ids
    vecs, offsets = pack([vectors[p] for p in pids])
    return score_packed([corpus.queries[q] for q in qids], vecs, offsets)  # [Q, P]


def _gold_pairs(qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str], pids: Sequence[str]):
    col = {p: j for j, p in enumerate(pids)}
    return [(i, col[p]) for i, q in enumerate(qids) for p, rel in qrels.get(q, {}).items() if rel > 0 and p in col]


def _measure(
    scores: torch.Tensor,            # [Q, P]
    full_scores: torch.Tensor,       # [Q, P]
    qrels: Mapping[str, Mapping[str, int]],
    qids: Sequence[str],
    pids: Sequence[str],
    ks: Sequence[int],
) -> tuple[dict[str, float], float, float, int]:
    from anchorprune.metrics import evaluate_run, run_from_scores
    from anchorprune.retention import sr_mean_of_ratios, sr_ratio_of_means

    run = run_from_scores(scores, qids, pids)
    ev = evaluate_run({q: dict(qrels[q]) for q in qids}, run, ks=tuple(ks))
    pairs = _gold_pairs(qrels, qids, pids)
    pruned = torch.tensor([float(scores[i, j]) for i, j in pairs])
    full = torch.tensor([float(full_scores[i, j]) for i, j in pairs])
    rom = sr_ratio_of_means(pruned, full)
    mor = sr_mean_of_ratios(pruned, full)
    return ev["mean"], float(rom.value), float(mor.value), int(mor.excluded)


def evaluate_grid(
    corpus: EncodedCorpus,
    qrels: Mapping[str, Mapping[str, int]],
    eval_qids: Sequence[str],
    methods: Sequence[str],
    gammas: Sequence[float],
    windows: Mapping[str, Sequence[int]],     # spec ("sr", "v1", "8-11") -> layers
    random_trials: int = 5,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    kappa_calibration: Sequence | None = None,  # features of calibration pages for the EOS κ
    progress: bool = True,
) -> EvaluationResult:
    """Run the grid; ``eval_qids`` must be disjoint from the calibration queries."""
    with torch_threads(1):
        return _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                              kappa_calibration, progress)


def _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                   kappa_calibration, progress) -> EvaluationResult:
    from anchorprune.pruning import build_pruner
    from anchorprune.pruning.eos import calibrate_kappa

    qids = [q for q in eval_qids if q in corpus.queries]
    if not qids:
        raise ValueError("no evaluation query has been encoded: check the split and the queries file")
    pids = corpus.page_ids
    dim = next(iter(corpus.features.values())).embeddings.shape[1]
    full_vecs = {p: f.embeddings for p, f in corpus.features.items()}
    full_scores = _score(corpus, full_vecs, qids)
    full_metrics, _, _, _ = _measure(full_scores, full_scores, qrels, qids, pids, ks)
    n_full = statistics.fmean(v.shape[0] for v in full_vecs.values())
    full = ConfigResult("full", 1.0, None, None, full_metrics, 1.0, 1.0, 1.0, 0, n_full,
                        n_full * dim * BYTES_PER_VALUE, 1.0)
    base = full_metrics.get("ndcg@5", 0.0)

    jobs: list[tuple[str, float, str | None, tuple[int, ...] | None]] = []
    for gamma in gammas:
        for method in methods:
            if method in WINDOWED:
                seen = set()
                for spec, layers in windows.items():
                    key = tuple(layers)
                    if key in seen:
                        continue
                    seen.add(key)
                    jobs.append((method, gamma, spec, key))
            else:
                jobs.append((method, gamma, None, None))

    calib_feats = list(kappa_calibration) if kappa_calibration else list(corpus.features.values())
    configs: list[ConfigResult] = []
    pruners: dict[tuple, object] = {}
    for method, gamma, spec, layers in tqdm(jobs, desc=f"evaluate {corpus.backbone}", disable=not progress):
        seeds = list(range(seed, seed + random_trials)) if method == "random" else [seed]
        trials = []
        for s in seeds:
            kwargs: dict = {"seed": s}
            if layers is not None:
                kwargs["window"] = list(layers)
            if method == "eos_adaptive":
                kwargs["kappa"] = calibrate_kappa(calib_feats, gamma)
                pruner = build_pruner(method, **kwargs)
            else:   # one pruner across gammas: hier_pool then computes each page's Ward linkage once
                if (method, s, layers) not in pruners:
                    pruners[(method, s, layers)] = build_pruner(method, **kwargs)
                pruner = pruners[(method, s, layers)]
            pruned = {p: pruner.prune(f, gamma) for p, f in corpus.features.items()}
            vecs = {p: pp.vectors for p, pp in pruned.items()}
            scores = _score(corpus, vecs, qids)
            metrics, rom, mor, excl = _measure(scores, full_scores, qrels, qids, pids, ks)
            n_kept = statistics.fmean(v.shape[0] for v in vecs.values())
            realised = statistics.fmean(vecs[p].shape[0] / full_vecs[p].shape[0] for p in pids)
            trials.append((metrics, rom, mor, excl, n_kept, realised))
        metrics = {k: statistics.fmean(t[0][k] for t in trials) for k in trials[0][0]}
        if len(trials) > 1:
            metrics.update({f"{k}_std": statistics.stdev(t[0][k] for t in trials) for k in trials[0][0]})
        rom = statistics.fmean(t[1] for t in trials)
        mor = statistics.fmean(t[2] for t in trials)
        n_kept = statistics.fmean(t[4] for t in trials)
        configs.append(
            ConfigResult(
                method=method, gamma=gamma, window=window_label(layers), window_spec=spec, metrics=metrics,
                ndcg_retention=metrics.get("ndcg@5", 0.0) / base if base > 0 else float("nan"),
                sr_ratio_of_means=rom, sr_mean_of_ratios=mor, sr_excluded_pairs=trials[0][3],
                vectors_per_page=n_kept, bytes_per_page=n_kept * dim * BYTES_PER_VALUE,
                realised_gamma=statistics.fmean(t[5] for t in trials),
            )
        )
    return EvaluationResult(corpus.backbone, full, configs, len(qids), len(pids))
