"""The evaluation grid: methods x gamma x windows over an encoded corpus (docs/method.md §5).

Every config prunes every page from the features cache, scores each evaluation
query against the pages of its own source (all pages when the dataset has no
sources; :mod:`anchorprune.evaluation.sources`) with exhaustive MaxSim, and reports the
macro average over sources of nDCG/recall/MRR,
``ndcg_retention`` against the full index, score retention of the gold pairs,
and storage. Random runs ``random_trials`` seeds (mean and std).

Each config also keeps its **per-query** nDCG@5 (random: averaged over its trials
per query), so promotion can bootstrap over queries (:mod:`anchorprune.promotion.rule`),
and the κ an adaptive-EOS config was built with, so the same config can be served.
Results are pydantic models: ``EvaluationResult.model_dump_json`` /
``model_validate_json`` is the on-disk format of ``reports/evaluation/<backbone>.json``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anchorprune.evaluation.results import BYTES_PER_VALUE, ConfigResult, EvaluationResult
from anchorprune.features.encoding import EncodedCorpus
from anchorprune.windows import window_label, window_source

log = logging.getLogger(__name__)

WINDOWED = {"sap", "sap_max", "anchor_merge", "anchor_kmeans"}


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


def _score(corpus: EncodedCorpus, vectors: Mapping[str, torch.Tensor], qids: Sequence[str],
           pids: Sequence[str] | None = None) -> torch.Tensor:
    from anchorprune.evaluation.scoring import pack, score_packed

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
) -> tuple[dict[str, float], float, float, int, dict[str, float]]:
    from anchorprune.evaluation.metrics import evaluate_run, run_from_scores
    from anchorprune.evaluation.retention import sr_mean_of_ratios, sr_ratio_of_means

    run = run_from_scores(scores, qids, pids)
    ev = evaluate_run({q: dict(qrels[q]) for q in qids}, run, ks=tuple(ks))
    pairs = _gold_pairs(qrels, qids, pids)
    pruned = torch.tensor([float(scores[i, j]) for i, j in pairs])
    full = torch.tensor([float(full_scores[i, j]) for i, j in pairs])
    rom = sr_ratio_of_means(pruned, full)
    mor = sr_mean_of_ratios(pruned, full)
    per_query = {q: ev["per_query"][q].get("ndcg@5", 0.0) for q in qids}
    return ev["mean"], float(rom.value), float(mor.value), int(mor.excluded), per_query


def _measure_sources(
    corpus: EncodedCorpus,
    vectors: Mapping[str, torch.Tensor],
    full_scores: Mapping[str, torch.Tensor],   # source -> [Q_s, P_s] scores of the full index
    qrels: Mapping[str, Mapping[str, int]],
    groups: Sequence,                           # anchorprune.evaluation.sources.SourceGroup
    ks: Sequence[int],
) -> tuple[dict[str, float], float, float, int, dict[str, dict[str, float]], dict[str, torch.Tensor],
           dict[str, float]]:
    """Score each source's queries against its own pages only; metrics and SR are macro-averaged over sources.

    Returns (macro metrics, SR ratio of means, SR mean of ratios, excluded pairs, per-source metrics,
    per-source score matrices, per-query nDCG@5). With one source this is exactly :func:`_measure` on all pages.
    """
    from anchorprune.evaluation.sources import macro_average

    per_source, scores, roms, mors, excluded, per_query = {}, {}, [], [], 0, {}
    for g in groups:
        scores[g.name] = _score(corpus, vectors, g.qids, g.pids)
        full = full_scores.get(g.name, scores[g.name])
        metrics, rom, mor, excl, pq = _measure(scores[g.name], full, qrels, g.qids, g.pids, ks)
        per_source[g.name] = metrics
        per_query.update(pq)
        roms.append(rom), mors.append(mor)
        excluded += excl
    return (macro_average(per_source), statistics.fmean(roms), statistics.fmean(mors), excluded, per_source,
            scores, per_query)


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
    extra_configs: Sequence[tuple[str, float, Sequence[int] | None]] = (),
    query_sources: Mapping[str, str] | None = None,   # qid -> source (docs/method.md §5 per-dataset protocol)
    page_sources: Mapping[str, str] | None = None,    # pid -> source
    map_jobs: Callable[[Callable, list], Sequence] | None = None,
    cache_dir: str | Path | None = None,
    cache_identity: Mapping[str, object] | None = None,
) -> EvaluationResult:
    """Run the grid; ``eval_qids`` must be disjoint from the calibration queries.

    ``extra_configs`` are (method, γ, window layers or None) evaluated besides the grid
    when not already in it: the current champion's config, so promotion compares like
    with like. Random is added at each extra γ so the extra config has its baseline.

    With sources, each query is ranked only against its own source's pages and every metric
    (so ``ndcg_retention``, which promotion gates on) is the macro average over sources.

    ``map_jobs(fn, groups)`` runs ``fn`` on each group of configs (one per method and window) and
    returns the results in order, e.g. on a Dask cluster (``flows/evaluate.py``); default: here, in order.

    ``cache_dir``: each config's result is read from / written to a per-config cache keyed on its inputs
    (:mod:`anchorprune.evaluation.config_cache`; ``cache_identity`` names the backbone the features came
    from); only configs not in it are computed. ``result.cache_stats`` counts the hits and misses.
    """
    if "ndcg@5" not in {f"ndcg@{k}" for k in ks}:
        ks = tuple(sorted({*ks, 5}))  # promotion's figure
    with torch_threads(1):
        return _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                              kappa_calibration, progress, extra_configs, query_sources, page_sources, map_jobs,
                              cache_dir, cache_identity)


def grid_jobs(methods, gammas, windows, extra_configs=()) -> list[tuple[str, float, str | None, tuple | None]]:
    """(method, γ, window spec, layers) for every config of the grid, then the extra configs not in it."""
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

    def present(method, gamma, layers):
        return any(m == method and math.isclose(g, gamma) and (lay or None) == (layers or None)
                   for m, g, _, lay in jobs)

    for method, gamma, layers in extra_configs:
        layers = tuple(layers) if layers else None
        if not present(method, gamma, layers):
            jobs.append((method, gamma, window_label(layers), layers))
        if method != "random" and not present("random", gamma, None):
            jobs.append(("random", gamma, None, None))
    return jobs


def _evaluate_grid(corpus, qrels, eval_qids, methods, gammas, windows, random_trials, seed, ks,
                   kappa_calibration, progress, extra_configs=(), query_sources=None,
                   page_sources=None, map_jobs=None, cache_dir=None, cache_identity=None) -> EvaluationResult:
    from anchorprune.evaluation.sources import per_source_keys, source_groups

    qids = [q for q in eval_qids if q in corpus.queries]
    if not qids:
        raise ValueError("no evaluation query has been encoded: check the split and the queries file")
    pids = corpus.page_ids
    dim = next(iter(corpus.features.values())).embeddings.shape[1]
    full_vecs = {p: f.embeddings for p, f in corpus.features.items()}
    groups = source_groups(qids, pids, query_sources, page_sources)
    full_metrics, _, _, _, full_by_source, full_scores, full_pq = _measure_sources(
        corpus, full_vecs, {}, qrels, groups, ks)
    n_full = statistics.fmean(v.shape[0] for v in full_vecs.values())
    several = len(groups) > 1
    full = ConfigResult(method="full", gamma=1.0, window=None, window_spec=None, metrics=full_metrics,
                        ndcg_retention=1.0, sr_ratio_of_means=1.0, sr_mean_of_ratios=1.0, sr_excluded_pairs=0,
                        vectors_per_page=n_full, bytes_per_page=n_full * dim * BYTES_PER_VALUE,
                        realised_gamma=1.0, per_query=full_pq,
                        extra=per_source_keys(full_by_source) if several else {})
    base = full_metrics.get("ndcg@5", 0.0)

    jobs = grid_jobs(methods, gammas, windows, extra_configs)
    calib_feats = list(kappa_calibration) if kappa_calibration else list(corpus.features.values())
    cache = None
    if cache_dir is not None:
        cache = _config_cache(cache_dir, cache_identity or {}, corpus, qrels, qids, groups, ks, seed, random_trials,
                              calib_feats)
    cached: dict[int, ConfigResult] = {}
    if cache is not None:
        for i, (method, gamma, spec, layers) in enumerate(jobs):
            hit = cache.get(method, gamma, layers)
            if hit is not None:   # relabelled: the same layers may have been reached through another spec
                cached[i] = hit.model_copy(update={"window_spec": spec, "window_source": window_source(spec),
                                                   "run_id": None})

    ctx = _GridContext(corpus=corpus, qrels=qrels, qids=qids, pids=pids, ks=tuple(ks), groups=groups,
                       full_scores=full_scores, full_by_source=full_by_source, full_vecs=full_vecs, base=base,
                       dim=dim, several=several, seed=seed, random_trials=random_trials,
                       calib_feats=calib_feats)
    # one group per (method, window): its pruners are shared across gammas (hier_pool computes each page's
    # Ward linkage once); groups are independent, so map_jobs may run them on other workers
    order: dict[tuple, list[int]] = {}
    for i, (method, _, _, layers) in enumerate(jobs):
        if i not in cached:
            order.setdefault((method, layers), []).append(i)
    groups_of_jobs = [[jobs[i] for i in idx] for idx in order.values()]
    if map_jobs is None:
        bar = tqdm(total=len(jobs), desc=f"evaluate {corpus.backbone}", disable=not progress)
        results = []
        for g in groups_of_jobs:
            results.append(evaluate_job_group(ctx, g))
            bar.update(len(g))
        bar.close()
    else:
        results = list(map_jobs(functools.partial(evaluate_job_group, ctx), groups_of_jobs))
    by_index = {i: r for idx, rs in zip(order.values(), results, strict=True) for i, r in zip(idx, rs, strict=True)}
    if cache is not None:
        for i, r in by_index.items():
            cache.put(r, jobs[i][3])
    by_index.update(cached)
    configs = [by_index[i] for i in range(len(jobs))]
    out = EvaluationResult(backbone=corpus.backbone, full=full, configs=configs, num_queries=len(qids),
                           num_pages=len(pids), sources=[g.name for g in groups] if several else [],
                           query_sources={q: g.name for g in groups for q in g.qids} if several else {})
    out._cache_stats = {"hits": len(cached), "misses": len(jobs) - len(cached)} if cache is not None else {}
    if cache is not None:
        log.info("evaluate %s: %d configs from the cache, %d computed", corpus.backbone, len(cached),
                 len(jobs) - len(cached))
    return out


def _config_cache(cache_dir, identity, corpus, qrels, qids, groups, ks, seed, random_trials, calib_feats):
    """The per-config cache with everything the configs share in its base key (the job adds method, γ, layers)."""
    from anchorprune.evaluation.config_cache import ConfigCache, code_version, corpus_fingerprint

    base = {
        "corpus": corpus_fingerprint(corpus, identity),
        "qids": list(qids),
        "qrels": {q: dict(sorted(qrels.get(q, {}).items())) for q in qids},
        "groups": [[g.name, list(g.qids), list(g.pids)] for g in groups],
        "ks": list(ks), "seed": seed, "random_trials": random_trials,
        "kappa_pages": [[f.page_id, f.content_hash] for f in calib_feats],
        "code": code_version(),
    }
    return ConfigCache(cache_dir, base)


@dataclass
class _GridContext:
    """What every config of the grid is measured against (the full index's scores, the queries, ...)."""

    corpus: EncodedCorpus
    qrels: Mapping[str, Mapping[str, int]]
    qids: list[str]
    pids: list[str]
    ks: tuple[int, ...]
    groups: list
    full_scores: dict
    full_by_source: dict
    full_vecs: dict
    base: float
    dim: int
    several: bool
    seed: int
    random_trials: int
    calib_feats: list


def evaluate_job_group(ctx: _GridContext, jobs: Sequence[tuple]) -> list[ConfigResult]:
    """The configs of one (method, window) group, in order: a unit a task runner can run anywhere."""
    from anchorprune.evaluation.sources import per_source_keys
    from anchorprune.pruning import build_pruner
    from anchorprune.pruning.eos import calibrate_kappa

    corpus, qrels, groups, ks, qids, pids = ctx.corpus, ctx.qrels, ctx.groups, ctx.ks, ctx.qids, ctx.pids
    full_scores, full_vecs, full_by_source = ctx.full_scores, ctx.full_vecs, ctx.full_by_source
    seed, random_trials, calib_feats, several, base, dim = (ctx.seed, ctx.random_trials, ctx.calib_feats,
                                                            ctx.several, ctx.base, ctx.dim)
    configs: list[ConfigResult] = []
    pruners: dict[tuple, object] = {}
    with torch_threads(1):
        for method, gamma, spec, layers in jobs:
            seeds = list(range(seed, seed + random_trials)) if method == "random" else [seed]
            trials = []
            kappa = calibrate_kappa(calib_feats, gamma) if method == "eos_adaptive" else None
            for s in seeds:
                kwargs: dict = {"seed": s}
                if layers is not None:
                    kwargs["window"] = list(layers)
                if method == "eos_adaptive":
                    kwargs["kappa"] = kappa
                    pruner = build_pruner(method, **kwargs)
                else:   # one pruner across gammas: hier_pool then computes each page's Ward linkage once
                    if (method, s, layers) not in pruners:
                        pruners[(method, s, layers)] = build_pruner(method, **kwargs)
                    pruner = pruners[(method, s, layers)]
                pruned = {p: pruner.prune(f, gamma) for p, f in corpus.features.items()}
                vecs = {p: pp.vectors for p, pp in pruned.items()}
                metrics, rom, mor, excl, by_source, _, pq = _measure_sources(corpus, vecs, full_scores, qrels, groups,
                                                                             ks)
                n_kept = statistics.fmean(v.shape[0] for v in vecs.values())
                realised = statistics.fmean(vecs[p].shape[0] / full_vecs[p].shape[0] for p in pids)
                trials.append((metrics, rom, mor, excl, n_kept, realised, by_source, pq))
            metrics = {k: statistics.fmean(t[0][k] for t in trials) for k in trials[0][0]}
            if len(trials) > 1:
                metrics.update({f"{k}_std": statistics.stdev(t[0][k] for t in trials) for k in trials[0][0]})
            rom = statistics.fmean(t[1] for t in trials)
            mor = statistics.fmean(t[2] for t in trials)
            n_kept = statistics.fmean(t[4] for t in trials)
            per_query = {q: statistics.fmean(t[7][q] for t in trials) for q in qids}
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
                    method=method, gamma=gamma, window=window_label(layers), window_spec=spec,
                    window_source=window_source(spec), metrics=metrics,
                    ndcg_retention=metrics.get("ndcg@5", 0.0) / base if base > 0 else float("nan"),
                    sr_ratio_of_means=rom, sr_mean_of_ratios=mor, sr_excluded_pairs=trials[0][3],
                    vectors_per_page=n_kept, bytes_per_page=n_kept * dim * BYTES_PER_VALUE,
                    realised_gamma=statistics.fmean(t[5] for t in trials), per_query=per_query, kappa=kappa,
                    extra=extra,
                )
            )
    return configs
