"""The evaluation grid: methods x gamma x windows over an encoded corpus (SPEC §5).

Every config prunes every page from the features cache, scores each evaluation
query against the pages of its own source (all pages when the dataset has no
sources; :mod:`anchorprune.sources`) with exhaustive MaxSim, and reports the
macro average over sources of nDCG/recall/MRR,
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
    sources: list[str] = field(default_factory=list)   # evaluation datasets, when more than one

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


def _score(corpus: EncodedCorpus, vectors: Mapping[str, torch.Tensor], qids: Sequence[str],
           pids: Sequence[str] | None = None) -> torch.Tensor:
    from anchorprune.scoring import pack, score_packed

    pids = corpus.page_ids if pids is None else pids
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


def _measure_sources(
    corpus: EncodedCorpus,
    vectors: Mapping[str, torch.Tensor],
    full_scores: Mapping[str, torch.Tensor],   # source -> [Q_s, P_s] scores of the full index
    qrels: Mapping[str, Mapping[str, int]],
    groups: Sequence,                           # anchorprune.sources.SourceGroup
    ks: Sequence[int],
) -> tuple[dict[str, float], float, float, int, dict[str, dict[str, float]], dict[str, torch.Tensor]]:
    """Score each source's queries against its own pages only; metrics and SR are macro-averaged over sources.

    Returns (macro metrics, SR ratio of means, SR mean of ratios, excluded pairs, per-source metrics,
    per-source score matrices). With one source this is exactly :func:`_measure` on all pages.
    """
    from anchorprune.sources import macro_average

    per_source, scores, roms, mors, excluded = {}, {}, [], [], 0
    for g in groups:
        scores[g.name] = _score(corpus, vectors, g.qids, g.pids)
        full = full_scores.get(g.name, scores[g.name])
        metrics, rom, mor, excl = _measure(scores[g.name], full, qrels, g.qids, g.pids, ks)
        per_source[g.name] = metrics
        roms.append(rom), mors.append(mor)
        excluded += excl
    return (macro_average(per_source), statistics.fmean(roms), statistics.fmean(mors), excluded, per_source,
            scores)


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
    query_sources: Mapping[str, str] | None = None,   # qid -> source (SPEC §5 per-dataset protocol)
    page_sources: Mapping[str, str] | None = None,    # pid -> source
) -> EvaluationResult:
    """Run the grid; ``eval_qids`` must be disjoint from the calibration queries.

    With sources, each query is ranked only against its own source's pages and every metric
    (so ``ndcg_retention``, which promotion gates on) is the macro average over sources.
    """
    with torch_threads(1):
        return _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                              kappa_calibration, progress, query_sources, page_sources)


def _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                   kappa_calibration, progress, query_sources=None, page_sources=None) -> EvaluationResult:
    from anchorprune.pruning import build_pruner
    from anchorprune.pruning.eos import calibrate_kappa
    from anchorprune.sources import per_source_keys, source_groups

    qids = [q for q in eval_qids if q in corpus.queries]
    if not qids:
        raise ValueError("no evaluation query has been encoded: check the split and the queries file")
    pids = corpus.page_ids
    dim = next(iter(corpus.features.values())).embeddings.shape[1]
    full_vecs = {p: f.embeddings for p, f in corpus.features.items()}
    groups = source_groups(qids, pids, query_sources, page_sources)
    full_metrics, _, _, _, full_by_source, full_scores = _measure_sources(corpus, full_vecs, {}, qrels, groups, ks)
    n_full = statistics.fmean(v.shape[0] for v in full_vecs.values())
    several = len(groups) > 1
    full = ConfigResult("full", 1.0, None, None, full_metrics, 1.0, 1.0, 1.0, 0, n_full,
                        n_full * dim * BYTES_PER_VALUE, 1.0,
                        extra=per_source_keys(full_by_source) if several else {})
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
            metrics, rom, mor, excl, by_source, _ = _measure_sources(corpus, vecs, full_scores, qrels, groups, ks)
            n_kept = statistics.fmean(v.shape[0] for v in vecs.values())
            realised = statistics.fmean(vecs[p].shape[0] / full_vecs[p].shape[0] for p in pids)
            trials.append((metrics, rom, mor, excl, n_kept, realised, by_source))
        metrics = {k: statistics.fmean(t[0][k] for t in trials) for k in trials[0][0]}
        if len(trials) > 1:
            metrics.update({f"{k}_std": statistics.stdev(t[0][k] for t in trials) for k in trials[0][0]})
        rom = statistics.fmean(t[1] for t in trials)
        mor = statistics.fmean(t[2] for t in trials)
        n_kept = statistics.fmean(t[4] for t in trials)
        extra: dict[str, float] = {}
        if several:                      # per source: mean over trials, and retention against that source's full
            by_source = {g.name: {k: statistics.fmean(t[6][g.name][k] for t in trials) for k in trials[0][6][g.name]}
                         for g in groups}
            for name, m in by_source.items():
                b = full_by_source[name].get("ndcg@5", 0.0)
                m["ndcg_retention"] = m.get("ndcg@5", 0.0) / b if b > 0 else float("nan")
            extra = per_source_keys(by_source)
        configs.append(
            ConfigResult(
                method=method, gamma=gamma, window=window_label(layers), window_spec=spec, metrics=metrics,
                ndcg_retention=metrics.get("ndcg@5", 0.0) / base if base > 0 else float("nan"),
                sr_ratio_of_means=rom, sr_mean_of_ratios=mor, sr_excluded_pairs=trials[0][3],
                vectors_per_page=n_kept, bytes_per_page=n_kept * dim * BYTES_PER_VALUE,
                realised_gamma=statistics.fmean(t[5] for t in trials), extra=extra,
            )
        )
    return EvaluationResult(corpus.backbone, full, configs, len(qids), len(pids),
                            [g.name for g in groups] if several else [])
