"""Quality evidence table on the offline demo corpus, with the MiniLM text STAND-IN backbone.

Corpus: the Debian ``r-doc-pdf`` manuals (``demo``: 291 pages; ``large``: 677 pages), R-FAQ's
human-written questions as queries, the answer page as the single relevant page (labels from the
PDF outline, question titles blanked on every page). Backbone: all-MiniLM-L6-v2 over each page's
text layer (``anchorprune.backbones.minilm_text``): a text encoder, NOT a vision model.

Table: full, random (5 seeds, mean ± sd), SAP with each single layer and with the SR-selected
window, EOS/[CLS] attention (adaptive and top-k), cluster-merge, hierarchical pooling, and
anchor-guided merging (SAP anchors of the SR window, with and without a token-distance prior) and
anchor-seeded k-means (``anchor_kmeans``: the same anchors seed a few cosine Lloyd steps) at
γ = 0.2 / 0.1 / 0.05: nDCG@5, recall@5, score retention (SR, both aggregates), with paired
bootstrap 95% intervals of (method − random) on per-query nDCG@5 and per-pair SR, for
``anchor_merge`` also against the SR-window SAP and hierarchical pooling (``anchor_kmeans``: and
``anchor_merge``), and the pruning CPU time
per page of every method (``time.process_time``, one torch thread). Hierarchical pooling keeps one
pruner for all γ (one Ward linkage per page, cut per γ); its CPU/page in each row is what one index
build at that γ costs: the page's linkage (measured at the first γ) plus that γ's cut. The SR curve and
the window are calibrated on queries disjoint from the evaluation queries (``split_queries``).

Run (one heavy job at a time machine-wide)::

    python benchmarks/quality_demo.py
    python benchmarks/quality_demo.py --variant large

The ``debian`` variant is the 10,749-page benchmark corpus (``benchmarks/debian-bench.yaml``: four Debian
documentation packages, outline titles as WEAK-LABEL queries, each title blanked on its target page), same
stand-in. Its pages are read from the features cache and never encoded here (``benchmarks/debian_bench.py``
encodes them); ``--queries`` evaluation and ``--calibration-queries`` calibration queries are drawn with the
seed from the disjoint split, ``--pages N`` evaluates a seeded page subset that keeps every relevant page of
the drawn queries (default: every page); chunks of pages are pruned and scored by ``--workers`` forked
processes, one torch thread each, so no more than a chunk of features is in memory::

    python benchmarks/quality_demo.py --variant debian \
        --only "sap[sr],hier_pool,anchor_merge" --no-mlflow

Writes ``benchmarks/results/quality_demo[_large|_debian].json`` and logs one MLflow run (``--no-mlflow`` to skip).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anchorprune.backbones.base import LayerCapture  # noqa: E402
from anchorprune.backbones.minilm_text import MiniLMTextBackbone  # noqa: E402
from anchorprune.features import PageFeatures  # noqa: E402
from recorded import command_line, relative_path  # noqa: E402

log = logging.getLogger("quality_demo")

GAMMAS = (0.2, 0.1, 0.05)
K = 5


# ---------------------------------------------------------------------------------------------
# data and encoding
# ---------------------------------------------------------------------------------------------

def load_or_build(variant: str, data_dir: Path | None):
    from anchorprune.data.schema import load_dataset_dir

    path = data_dir or ROOT / "data" / ("rdocs-demo" if variant == "demo" else "rdocs-large")
    if not (path / "manifest.json").exists():
        from anchorprune.data.demo import build_demo  # Debian r-doc-pdf download + build + validate

        log.info("building the %s corpus into %s", variant, path)
        build_demo(path.parent, name=path.name, variant="small" if variant == "demo" else "large",
                   cache_dir=ROOT / "cache" / "debs")
    return load_dataset_dir(path)


def encode_shared(ds, backbone: MiniLMTextBackbone, features_root: Path):
    """All-layers features and query vectors through the project's content-addressed features cache.

    Pages already encoded by any stage or run (same content hash, same backbone identity) are hits, so the
    ``large`` variant only encodes the pages the ``demo`` variant lacks. Returns ``(features, queries,
    encode_s, cache_stats)``; ``encode_s`` covers this run's cache misses only.
    """
    from anchorprune.features.cache import FeaturesCache, QueryCache

    pages = list(ds.pages(images=False))       # the text stand-in reads the text layer only
    cache = FeaturesCache(features_root)
    hits = sum(1 for pg in pages if cache.get(backbone, pg, LayerCapture.all()) is not None)
    t0 = time.perf_counter()
    feats = {f.page_id: f for f in cache.get_or_encode(backbone, pages, LayerCapture.all(), batch_size=16)}
    encode_s = time.perf_counter() - t0
    qids = list(ds.queries)
    qv = QueryCache(features_root).get_or_encode(backbone, [ds.queries[q] for q in qids])
    stats = {"root": relative_path(features_root), "page_hits": hits, "pages_encoded": len(pages) - hits}
    log.info("features cache %s: %d hits, %d pages encoded in %.1f s", features_root, hits, len(pages) - hits,
             encode_s)
    return feats, dict(zip(qids, qv, strict=True)), encode_s, stats


def encode(ds, backbone: MiniLMTextBackbone, cache_dir: Path, batch_pages: int = 16):
    """All-layers features for every page and query vectors, cached on (dataset content, model revision)."""
    key_src = json.dumps([sorted(ds.corpus["content_hash"]), sorted(ds.queries.items()),
                          backbone.model_id, backbone.revision, "all-layers"]).encode()
    key = hashlib.sha256(key_src).hexdigest()[:16]
    path = cache_dir / f"quality-{key}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=False)
        log.info("features from cache %s", path)
        return blob["features"], blob["queries"], blob["encode_s"]
    pages = list(ds.pages(images=False))
    t0 = time.perf_counter()
    feats: dict[str, PageFeatures] = {}
    for i in tqdm(range(0, len(pages), batch_pages), desc="encode pages", unit="batch"):
        for f in backbone.encode_pages(pages[i:i + batch_pages], LayerCapture.all()):
            feats[f.page_id] = f
    encode_s = time.perf_counter() - t0
    qids = list(ds.queries)
    queries = dict(zip(qids, backbone.encode_queries([ds.queries[q] for q in qids]), strict=True))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"features": feats, "queries": queries, "encode_s": encode_s}, tmp)
    tmp.replace(path)
    return feats, queries, encode_s


# ---------------------------------------------------------------------------------------------
# scoring and per-query measures
# ---------------------------------------------------------------------------------------------

def score_matrix(queries: Sequence[torch.Tensor], docs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Exhaustive MaxSim ``[Q, P]`` through the project's scoring module."""
    from anchorprune.evaluation.scoring import maxsim_matrix

    return maxsim_matrix(list(queries), list(docs))


def per_query(scores: torch.Tensor, qids: Sequence[str], pids: Sequence[str],
              qrels: Mapping[str, Mapping[str, int]], top: int | None = None) -> dict[str, np.ndarray]:
    """Per-query nDCG@5 and recall@5 (``anchorprune.evaluation.metrics``), in ``qids`` order.

    ``top`` keeps each query's best ``top`` pages in the run (the @5 measures only read the first 5
    ranks and the qrels): the Debian corpus's 10.7k pages per query would otherwise make a run of
    millions of entries per method.
    """
    from anchorprune.evaluation.metrics import evaluate_run, run_from_scores

    run = run_from_scores(scores, list(qids), list(pids), top=top)
    ev = evaluate_run({q: dict(qrels[q]) for q in qids}, run, ks=(K,))
    per = ev["per_query"]
    return {m: np.array([per[q][m] for q in qids], dtype=np.float64) for m in (f"ndcg@{K}", f"recall@{K}")}


def gold_pairs(qids: Sequence[str], pids: Sequence[str], qrels) -> list[tuple[int, int]]:
    col = {p: j for j, p in enumerate(pids)}
    return [(i, col[p]) for i, q in enumerate(qids) for p, r in sorted(qrels[q].items()) if r > 0 and p in col]


def pair_sr(scores: torch.Tensor, full: torch.Tensor, pairs) -> np.ndarray:
    """Per-pair score retention; NaN where the full score is <= 0 (excluded, docs/method.md §3)."""
    out = np.full(len(pairs), np.nan)
    for n, (i, j) in enumerate(pairs):
        f = float(full[i, j])
        if f > 0:
            out[n] = float(scores[i, j]) / f
    return out


def paired_bootstrap(diff: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """Mean of ``diff`` and its 95% percentile interval over ``reps`` resamples of the units.

    >>> m, lo, hi = paired_bootstrap(np.array([1.0, 1.0, 1.0]), 100, 0)
    >>> (m, lo, hi)
    (1.0, 1.0, 1.0)
    """
    diff = diff[~np.isnan(diff)]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(reps, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------

def pruner_for(method: str, **kwargs):
    from anchorprune.pruning import build_pruner

    return build_pruner(method, **kwargs)


def prune_all(feats: Mapping[str, PageFeatures], pids: Sequence[str], pruner, gamma: float) -> list[torch.Tensor]:
    return [pruner.prune(feats[p], gamma).vectors for p in pids]


# (label, family, build_pruner name, kwargs for a gamma, seeded). Plain tuples of module-level data and
# closures: the Debian variant's worker processes are forked and read them from ``_WORKER``.
MethodSpec = tuple[str, str, str, Callable[[float], dict], bool]


def evaluate_chunk(feats: Mapping[str, PageFeatures], chunk: Sequence[str], qlist: Sequence[torch.Tensor],
                   specs: Sequence[MethodSpec], trials: int, seed: int) -> dict:
    """Prune the pages ``chunk`` with every method x gamma (x seed) and score them against ``qlist``.

    Returns the full scores ``[Q, len(chunk)]``, token counts, and per ``(label, gamma, seed)`` the
    pruned scores, kept vectors per page and pruning CPU seconds (``time.process_time``). Pruners are
    built per chunk: random is seeded per (seed, page) and the others are per-page functions, so chunking
    changes no vector; hier_pool keeps one pruner for every gamma of the chunk (one Ward linkage per
    page, cut per gamma), its linkage CPU split off at the first gamma by pruning again (cache hit).
    """
    out: dict = {"full": score_matrix(qlist, [feats[p].embeddings for p in chunk]),
                 "n_tokens": [feats[p].num_tokens for p in chunk], "configs": {},
                 "hier_linkage_cpu_s": 0.0, "hier_linkages_computed": 0}
    hier = None
    for gamma in GAMMAS:
        for label, _family, name, kwargs, seeded in specs:
            for s in (range(seed, seed + trials) if seeded else [seed]):
                if name == "hier_pool":
                    hier = hier or pruner_for("hier_pool")
                    pruner = hier
                else:
                    pruner = pruner_for(name, **(kwargs(gamma) | ({"seed": s} if seeded else {})))
                c0 = time.process_time()
                docs = prune_all(feats, chunk, pruner, gamma)
                cpu_s = time.process_time() - c0
                if name == "hier_pool" and gamma == GAMMAS[0]:
                    c1 = time.process_time()
                    prune_all(feats, chunk, pruner, gamma)
                    cut = time.process_time() - c1
                    out["hier_linkage_cpu_s"] += cpu_s - cut
                    cpu_s = cut
                out["configs"][(label, gamma, s)] = {"scores": score_matrix(qlist, docs),
                                                     "kept": [int(d.shape[0]) for d in docs], "cpu_s": cpu_s}
    if hier is not None:
        out["hier_linkages_computed"] = hier.linkages_computed
    return out


_WORKER: dict = {}     # the Debian variant's state, set before forking the worker processes


def _debian_chunk(chunk: Sequence[str]) -> dict:
    """Worker: read the chunk's all-layer features from the features cache, then :func:`evaluate_chunk`."""
    torch.set_num_threads(1)
    w = _WORKER
    t0 = time.perf_counter()
    feats = {p: w["load"](p) for p in chunk}
    load_s = time.perf_counter() - t0
    out = evaluate_chunk(feats, chunk, w["qlist"], w["specs"], w["trials"], w["seed"])
    out["load_s"] = load_s
    return out


def debian_source(args: argparse.Namespace) -> dict:
    """The Debian benchmark corpus (``benchmarks/debian-bench.yaml``) read from the features cache.

    Never encodes a page (``benchmarks/debian_bench.py`` does: ~70 min). Queries: the weak-label outline
    titles, split into calibration / evaluation with ``split_queries``, then ``--queries`` evaluation and
    ``--calibration-queries`` calibration queries drawn with the seed. Pages: all of them, or with
    ``--pages N`` a seeded subset of N that keeps every relevant page of the sampled evaluation queries.
    """
    from anchorprune.config import load_settings, project_root
    from anchorprune.data.schema import split_queries
    from anchorprune.features.cache import FeaturesCache, QueryCache
    from anchorprune.stages.workspace import Workspace

    params = ROOT / "benchmarks" / "debian-bench.yaml"
    ws = Workspace(load_settings(params), project_root(params))
    ds = ws.dataset
    backbone = ws.backbone(ws.settings.backbones[0])
    fc = FeaturesCache(ws.features_dir)
    calib_all, eval_all = split_queries(ds, args.calibration_fraction, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    eval_q = sorted(rng.choice(eval_all, min(args.queries, len(eval_all)), replace=False).tolist())
    calib_q = sorted(rng.choice(calib_all, min(args.calibration_queries, len(calib_all)), replace=False).tolist())
    pages = {pg.page_id: pg for pg in ds.pages(images=False)}
    gold = {p for q in eval_q for p, r in ds.qrels[q].items() if r > 0 and p in pages}
    all_ids = list(ds.page_ids)
    if args.pages and args.pages < len(all_ids):
        rest = sorted(set(all_ids) - gold)
        extra = set(rng.choice(rest, max(0, args.pages - len(gold)), replace=False).tolist())
        pids = [p for p in all_ids if p in gold or p in extra]
    else:
        pids = all_ids
    capture = LayerCapture.all()

    def load(pid: str) -> PageFeatures:
        f = fc.get(backbone, pages[pid], capture)
        deadline = time.monotonic() + args.wait_for_pages
        while f is None and time.monotonic() < deadline:     # another process is still encoding it
            time.sleep(10.0)
            f = fc.get(backbone, pages[pid], capture)
        if f is None:
            raise SystemExit(f"page {pid} of the Debian corpus is not in the features cache {ws.features_dir}; "
                             "run benchmarks/debian_bench.py first (this benchmark never encodes pages)"
                             + (f" (waited {args.wait_for_pages:g} s)" if args.wait_for_pages else ""))
        return f

    qids = eval_q + calib_q
    qv = QueryCache(ws.features_dir).get_or_encode(backbone, [ds.queries[q] for q in qids], progress=False)
    calib_pages = sorted({p for q in calib_q for p, r in ds.qrels[q].items() if r > 0 and p in pages})
    sample = {"evaluation_pool": len(eval_all), "calibration_pool": len(calib_all),
              "evaluation_sampled": len(eval_q), "calibration_sampled": len(calib_q),
              "pages_in_corpus": len(all_ids), "pages_evaluated": len(pids),
              "page_subset": (f"seeded subset of {len(pids)} pages: every relevant page of the sampled "
                              f"evaluation queries ({len(gold)}) plus pages drawn with seed {args.seed}")
              if len(pids) < len(all_ids) else "all pages",
              "labels": "weak labels: outline titles as queries, the title blanked on its target page"}
    return {"ds": ds, "backbone": backbone, "pids": pids, "load": load, "eval_q": eval_q, "calib_q": calib_q,
            "qvecs": dict(zip(qids, qv, strict=True)), "calib_feats": {p: load(p) for p in calib_pages},
            "sample": sample, "features_root": relative_path(ws.features_dir)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=("demo", "large", "debian"), default="demo",
                    help="debian: the 10.7k-page benchmark corpus (benchmarks/debian-bench.yaml), read from "
                         "its features cache, never encoded here")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "cache" / "bench")
    ap.add_argument("--features-cache", type=Path, default=None,
                    help="the content-addressed features cache (e.g. cache/features): per-page hits across "
                         "variants and stages, instead of the per-dataset file in --cache-dir")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--trials", type=int, default=5, help="random seeds")
    ap.add_argument("--bootstrap", type=int, default=10000)
    ap.add_argument("--calibration-fraction", type=float, default=0.3)
    ap.add_argument("--sr-gamma", type=float, default=0.05)
    ap.add_argument("--rho", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None,
                    help="comma-separated labels to run (e.g. random,sap[sr],hier_pool,anchor_merge); "
                         "'sap[sr]' names the SR-window row, a label prefix keeps its variants")
    ap.add_argument("--anchor-radius", type=int, default=16,
                    help="anchor_merge position-prior row (tokens); negative: no such row")
    ap.add_argument("--queries", type=int, default=500,
                    help="debian: evaluation queries drawn with the seed from the evaluation split")
    ap.add_argument("--calibration-queries", type=int, default=300,
                    help="debian: calibration queries drawn with the seed from the calibration split")
    ap.add_argument("--pages", type=int, default=None,
                    help="debian: a seeded subset of this many pages (keeps every relevant page of the "
                         "sampled evaluation queries); default all 10,749")
    ap.add_argument("--wait-for-pages", type=float, default=0.0,
                    help="debian: wait up to this many seconds for a page that another process is still encoding "
                         "into the features cache (polls every 10 s; pruning CPU times are unaffected, wall times "
                         "include the wait)")
    ap.add_argument("--workers", type=int, default=2,
                    help="debian: processes, each pruning and scoring whole chunks of pages on one thread")
    ap.add_argument("--chunk-pages", type=int, default=128, help="debian: pages per worker task")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)    # as the evaluate stage: threaded torch ops stall on the oversubscribed CPU
    debian = args.variant == "debian"
    out_path = args.out or ROOT / "benchmarks" / "results" / {
        "demo": "quality_demo.json", "large": "quality_demo_large.json",
        "debian": "quality_demo_debian.json"}[args.variant]

    from anchorprune.data.schema import split_queries
    from anchorprune.evaluation.retention import select_sr_window, sr_curve

    cache_stats: dict = {}
    sample: dict | None = None
    if debian:
        src = debian_source(args)
        ds, backbone, pids, qvecs = src["ds"], src["backbone"], src["pids"], src["qvecs"]
        calib_q, eval_q = src["calib_q"], src["eval_q"]
        calib_feats: Mapping[str, PageFeatures] = src["calib_feats"]
        feats: Mapping[str, PageFeatures] = {}
        encode_s, sample = 0.0, src["sample"]
        cache_stats = {"root": src["features_root"], "pages_encoded": 0,
                       "note": "every page read from the features cache; none encoded by this run"}
    else:
        ds = load_or_build(args.variant, args.data_dir)
        calib_q, eval_q = split_queries(ds, args.calibration_fraction, seed=args.seed)
        backbone = MiniLMTextBackbone()
        if args.features_cache is not None:
            feats, qvecs, encode_s, cache_stats = encode_shared(ds, backbone, args.features_cache)
        else:
            feats, qvecs, encode_s = encode(ds, backbone, args.cache_dir)
        pids = list(ds.page_ids)
        calib_feats = feats
    assert not set(calib_q) & set(eval_q)
    log.info("%d pages, %d calibration / %d evaluation queries, encode %.1f s",
             len(pids), len(calib_q), len(eval_q), encode_s)

    # ---- calibration: SR curve per layer and SR-guided window, on calibration queries only ----
    calib_pairs = [(qvecs[q], calib_feats[p]) for q in calib_q for p, r in sorted(ds.qrels[q].items())
                   if r > 0 and p in calib_feats]
    curve = sr_curve(calib_pairs, gamma=args.sr_gamma, random_trials=args.trials, seed=args.seed)
    win = select_sr_window([float(x) for x in curve.mean], rho=args.rho)
    window = [int(x) for x in win.layers]
    log.info("SR by layer %s (random %.3f); window %s", [round(float(x), 3) for x in curve.mean],
             float(np.mean(curve.random_mean)), window)

    # ---- methods ----
    from anchorprune.pruning.eos import calibrate_kappa

    calib_pages = sorted({p for q in calib_q for p, r in ds.qrels[q].items() if r > 0})
    last = backbone.num_layers - 1
    # eos_adaptive's kappa is query-free: every corpus page on the demo corpora; on the Debian corpus the
    # calibration queries' pages (the corpus is never held in memory at once)
    kappa_feats = list(calib_feats.values()) if debian else [feats[p] for p in pids]
    specs: list[MethodSpec] = [("random", "random", "random", lambda g: {}, True)]
    for layer in range(backbone.num_layers):
        specs.append((f"sap[{layer}]", "sap", "sap", lambda g, layer=layer: {"window": [layer]}, False))
    sap_label = f"sap[sr {window[0]}-{window[-1]}]"
    specs.append((sap_label, "sap", "sap", lambda g: {"window": window}, False))
    specs.append(("eos_topk", "eos", "eos_topk", lambda g: {"eos_layer": last}, False))
    kappas: dict[float, float] = {}
    specs.append(("eos_adaptive", "eos", "eos_adaptive", lambda g: {"eos_layer": last, "kappa": kappas[g]}, False))
    specs.append(("cluster_merge", "merge", "cluster_merge", lambda g: {}, False))
    specs.append(("hier_pool", "merge", "hier_pool", lambda g: {}, False))
    specs.append(("anchor_merge", "anchor_merge", "anchor_merge", lambda g: {"window": window}, False))
    if args.anchor_radius >= 0:
        specs.append((f"anchor_merge[r={args.anchor_radius}]", "anchor_merge", "anchor_merge",
                      lambda g: {"window": window, "radius": args.anchor_radius}, False))
    # anchor-seeded k-means with its measured defaults (anchorprune.pruning.anchor_kmeans, issue #30)
    specs.append(("anchor_kmeans", "anchor_kmeans", "anchor_kmeans", lambda g: {"window": window}, False))
    paired_refs = {"anchor_merge": (sap_label, "hier_pool"),     # family -> labels compared against
                   "anchor_kmeans": (sap_label, "hier_pool", "anchor_merge")}
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]

        def keep(label: str) -> bool:
            return any(label.startswith(w) if w != "sap[sr]" else label.startswith("sap[sr ") for w in wanted)
        specs = [m for m in specs if m[0] == "random" or keep(m[0])]      # random: the reference line
    if any(m[2] == "eos_adaptive" for m in specs):
        kappas.update({g: calibrate_kappa(kappa_feats, g, layer=last) for g in GAMMAS})

    # ---- prune and score, chunk by chunk ----
    qlist = [qvecs[q] for q in eval_q]
    t_eval = time.perf_counter()
    if debian:
        import multiprocessing as mp

        _WORKER.update(load=src["load"], qlist=qlist, specs=specs, trials=args.trials, seed=args.seed)
        chunks = [pids[i:i + args.chunk_pages] for i in range(0, len(pids), args.chunk_pages)]
        if args.workers > 1:
            with mp.get_context("fork").Pool(args.workers) as pool:
                parts = list(tqdm(pool.imap(_debian_chunk, chunks), total=len(chunks), desc="page chunks"))
        else:
            parts = [_debian_chunk(c) for c in tqdm(chunks, desc="page chunks")]
    else:
        parts = [evaluate_chunk(feats, pids, qlist, specs, args.trials, args.seed)]
    prune_score_s = time.perf_counter() - t_eval
    full_scores = torch.cat([pt["full"] for pt in parts], dim=1)
    n_tokens = [n for pt in parts for n in pt["n_tokens"]]
    hier_cost = {"linkage_ms_per_page": 1000.0 * sum(pt["hier_linkage_cpu_s"] for pt in parts) / len(pids)}
    hier_linkages = sum(pt["hier_linkages_computed"] for pt in parts)
    load_s = sum(pt.get("load_s", 0.0) for pt in parts)
    top = 100 if debian else None
    pairs = gold_pairs(eval_q, pids, ds.qrels)
    full_pq = per_query(full_scores, eval_q, pids, ds.qrels, top=top)
    log.info("pruned and scored %d pages in %.1f s; %d tokens/page mean", len(pids), prune_score_s,
             int(np.mean(n_tokens)))

    rows: list[dict] = []
    full_row = {"label": "full", "gamma": 1.0, "ndcg@5": float(full_pq["ndcg@5"].mean()),
                "recall@5": float(full_pq["recall@5"].mean()), "sr_ratio_of_means": 1.0,
                "sr_mean_of_ratios": 1.0, "vectors_per_page": float(np.mean(n_tokens)), "realised_gamma": 1.0}
    rows.append(full_row)
    jobs = [(g, m) for g in GAMMAS for m in specs]
    random_ref: dict[float, dict[str, np.ndarray]] = {}
    per_label: dict[tuple[str, float], dict[str, np.ndarray]] = {}   # (label, gamma) -> per-query / per-pair
    for gamma, (label, family, _name, _kwargs, seeded) in tqdm(jobs, desc="methods x gamma"):
        seeds = range(args.seed, args.seed + args.trials) if seeded else [args.seed]
        trials = []
        for s in seeds:
            cfg = [pt["configs"][(label, gamma, s)] for pt in parts]
            scores = torch.cat([c["scores"] for c in cfg], dim=1)
            kept = [k for c in cfg for k in c["kept"]]
            cpu_s = sum(c["cpu_s"] for c in cfg)
            pq = per_query(scores, eval_q, pids, ds.qrels, top=top)
            sr = pair_sr(scores, full_scores, pairs)
            pruned_gold = np.array([float(scores[i, j]) for i, j in pairs])
            full_gold = np.array([float(full_scores[i, j]) for i, j in pairs])
            trials.append({
                "ndcg": pq["ndcg@5"], "recall": pq["recall@5"], "sr": sr,
                "rom": float(pruned_gold.sum() / full_gold.sum()),
                "kept": float(np.mean(kept)),
                "realised": float(np.mean([k / n for k, n in zip(kept, n_tokens, strict=True)])),
                "cpu_ms_per_page": 1000.0 * cpu_s / len(pids),
            })
        ndcg_q = np.mean([t["ndcg"] for t in trials], axis=0)      # per query, mean over seeds
        sr_p = np.nanmean([t["sr"] for t in trials], axis=0)        # per pair, mean over seeds
        row = {
            "label": label, "family": family, "gamma": gamma,
            "ndcg@5": float(np.mean([t["ndcg"].mean() for t in trials])),
            "recall@5": float(np.mean([t["recall"].mean() for t in trials])),
            "sr_ratio_of_means": float(np.mean([t["rom"] for t in trials])),
            "sr_mean_of_ratios": float(np.mean([np.nanmean(t["sr"]) for t in trials])),
            "sr_excluded_pairs": int(np.isnan(trials[0]["sr"]).sum()),
            "vectors_per_page": float(np.mean([t["kept"] for t in trials])),
            "realised_gamma": float(np.mean([t["realised"] for t in trials])),
            "ndcg_retention": float(np.mean([t["ndcg"].mean() for t in trials]) / full_row["ndcg@5"]),
            "cpu_ms_per_page": float(np.mean([t["cpu_ms_per_page"] for t in trials])),
        }
        if label == "hier_pool":   # one index build at this gamma = the page's linkage + this cut
            row["cpu_ms_per_page_cut_only"] = row["cpu_ms_per_page"]
            row["cpu_ms_per_page"] = hier_cost["linkage_ms_per_page"] + row["cpu_ms_per_page_cut_only"]
        if len(trials) > 1:
            row["ndcg@5_sd"] = statistics.stdev(float(t["ndcg"].mean()) for t in trials)
            row["recall@5_sd"] = statistics.stdev(float(t["recall"].mean()) for t in trials)
            row["sr_mean_of_ratios_sd"] = statistics.stdev(float(np.nanmean(t["sr"])) for t in trials)
            row["sr_ratio_of_means_sd"] = statistics.stdev(t["rom"] for t in trials)
        if label == "random":
            random_ref[gamma] = {"ndcg": ndcg_q, "sr": sr_p}
        else:
            ref = random_ref[gamma]
            m, lo, hi = paired_bootstrap(ndcg_q - ref["ndcg"], args.bootstrap, args.seed)
            row["d_ndcg@5_vs_random"] = {"mean": m, "ci95": [lo, hi]}
            m, lo, hi = paired_bootstrap(sr_p - ref["sr"], args.bootstrap, args.seed)
            row["d_sr_vs_random"] = {"mean": m, "ci95": [lo, hi]}
        per_label[(label, gamma)] = {"ndcg": ndcg_q, "sr": sr_p}
        for other in paired_refs.get(family, ()):
            if (other, gamma) not in per_label:
                continue
            ref = per_label[(other, gamma)]
            m, lo, hi = paired_bootstrap(ndcg_q - ref["ndcg"], args.bootstrap, args.seed)
            row.setdefault("vs", {})[other] = {"d_ndcg@5": {"mean": m, "ci95": [lo, hi]}}
            m, lo, hi = paired_bootstrap(sr_p - ref["sr"], args.bootstrap, args.seed)
            row["vs"][other]["d_sr"] = {"mean": m, "ci95": [lo, hi]}
            other_row = next(r for r in rows if r["label"] == other and r["gamma"] == gamma)
            row["vs"][other]["cpu_ratio"] = row["cpu_ms_per_page"] / other_row["cpu_ms_per_page"]
        rows.append(row)
    eval_s = time.perf_counter() - t_eval

    # ---- hierarchical pooling over the gamma grid: a linkage per gamma would recompute the Ward linkage
    #      (len(GAMMAS) linkages + cuts per page); the grid does one linkage per page and one cut per gamma.
    #      Both totals from the measured linkage and cut CPU times above.
    ward_grid: dict = {}
    hp_rows = [r for r in rows if r["label"] == "hier_pool"]
    if hp_rows:
        link = hier_cost["linkage_ms_per_page"] * len(pids) / 1000
        cuts = sum(r["cpu_ms_per_page_cut_only"] for r in hp_rows) * len(pids) / 1000
        ward_grid = {"linkage_cpu_s": link, "cuts_cpu_s": cuts,
                     "linkage_per_gamma_cpu_s": len(hp_rows) * link + cuts,
                     "linkage_once_per_page_cpu_s": link + cuts,
                     "linkages_computed": hier_linkages}
        ward_grid["cpu_speedup"] = ward_grid["linkage_per_gamma_cpu_s"] / ward_grid["linkage_once_per_page_cpu_s"]
    log.info("hier_pool grid over %s: %s", GAMMAS, ward_grid)

    result = {
        "benchmark": "quality_demo",
        "variant": args.variant,
        "command": command_line(__file__, sys.argv[1:] if argv is None else argv),
        "stand_in": "all-MiniLM-L6-v2 over the PDF text layer (text encoder, NOT a vision model)",
        "backbone": {"name": backbone.name, "model_id": backbone.model_id, "revision": backbone.revision,
                     "num_layers": backbone.num_layers, "dim": backbone.dim},
        "dataset": {"path": os.path.relpath(os.path.normpath(ds.path), ROOT),
                    "manifest": ds.manifest, "pages": len(pids), "tokens_per_page_mean": float(np.mean(n_tokens)),
                    "tokens_per_page_max": int(np.max(n_tokens)), "queries_calibration": len(calib_q),
                    "queries_evaluation": len(eval_q), "gold_pairs_evaluation": len(pairs)},
        "calibration": {"gamma": args.sr_gamma, "rho": args.rho, "pairs": len(calib_pairs),
                        "excluded": int(curve.excluded),
                        "sr_by_layer": [float(x) for x in curve.mean], "sr_by_layer_std": [float(x) for x in curve.std],
                        "random_by_layer": [float(x) for x in curve.random_mean],
                        "window": window, "alpha": float(win.alpha), "beta": float(win.beta),
                        "median": float(win.median)},
        "settings": {"gammas": list(GAMMAS), "random_trials": args.trials, "bootstrap": args.bootstrap,
                     "seed": args.seed, "eos_layer": last,
                     "eos_kappa_pages": ("the calibration queries' pages (query-free)" if debian
                                         else "all corpus pages (query-free)"),
                     "calibration_pages_for_reference": len(calib_pages),
                     "methods": [m[0] for m in specs],
                     "ranking_depth": top or "all pages"},
        "sample": sample,
        "features_cache": cache_stats or None,
        "timing": {"encode_pages_s": encode_s, "evaluate_s": eval_s, "torch_threads": torch.get_num_threads(),
                   "prune_and_score_wall_s": prune_score_s, "feature_read_s_summed_over_workers": load_s,
                   "workers": args.workers if debian else 1,
                   "wait_for_pages_s": args.wait_for_pages if debian else None,
                   "machine": platform.platform(), "loadavg_end": list(os.getloadavg()),
                   "hier_pool_grid_prune": ward_grid,
                   "note": "2 CPU cores shared with other jobs: CPU times are noisy"},
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out_path)
    table = markdown_table(result) + "\n\n" + comparison_table(result)
    print(table)
    log.info("wrote %s", out_path)
    if not args.no_mlflow:
        log_mlflow(result, table)
    return 0


def _fmt_ci(d: dict | None) -> str:
    if not d:
        return ""
    lo, hi = d["ci95"]
    star = " *" if lo > 0 else (" −" if hi < 0 else "")
    return f"{d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]{star}"


def _sd_formatter(row: dict) -> Callable[[str], str]:
    def sd(key: str) -> str:
        return f" ± {row[key + '_sd']:.3f}" if key + "_sd" in row else ""
    return sd


def markdown_table(result: dict) -> str:
    lines = [
        "| γ | method | kept/page | nDCG@5 | recall@5 | SR (mean of ratios) | SR (ratio of means) "
        "| Δ nDCG@5 vs random [95% CI] | Δ SR vs random [95% CI] | CPU ms/page |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        g = "1" if r["gamma"] == 1.0 else f"{r['gamma']:g}"
        sd = _sd_formatter(r)
        cpu = f"{r['cpu_ms_per_page']:.2f}" if "cpu_ms_per_page" in r else ""
        kept = f"{r['vectors_per_page']:.1f}" + ("" if math.isclose(r["realised_gamma"], r["gamma"], abs_tol=0.01)
                                                   else f" (γ̂ {r['realised_gamma']:.3f})")
        lines.append(
            f"| {g} | {r['label']} | {kept} | {r['ndcg@5']:.3f}{sd('ndcg@5')} | {r['recall@5']:.3f}{sd('recall@5')} "
            f"| {r['sr_mean_of_ratios']:.3f}{sd('sr_mean_of_ratios')} | {r['sr_ratio_of_means']:.3f} "
            f"| {_fmt_ci(r.get('d_ndcg@5_vs_random'))} | {_fmt_ci(r.get('d_sr_vs_random'))} "
            f"| {cpu} |"
        )
    return "\n".join(lines)


def comparison_table(result: dict) -> str:
    """anchor_merge / anchor_kmeans rows against their references (paired bootstrap, CPU ratio)."""
    lines = ["| γ | method | vs | Δ nDCG@5 [95% CI] | Δ SR [95% CI] | CPU time ratio |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        for other, d in r.get("vs", {}).items():
            lines.append(f"| {r['gamma']:g} | {r['label']} | {other} | {_fmt_ci(d['d_ndcg@5'])} | {_fmt_ci(d['d_sr'])} "
                         f"| {d['cpu_ratio']:.3f} |")
    return "\n".join(lines)


def log_mlflow(result: dict, table: str) -> None:
    try:
        from anchorprune.config import load_settings
        from anchorprune.tracking.tracker import Tracker
    except ImportError as exc:  # tracking is optional for this benchmark
        log.warning("MLflow logging skipped: %s", exc)
        return
    settings = load_settings(ROOT / "params.yaml")
    tracker = Tracker.from_config(settings.tracking, ROOT)
    params = {"variant": result["variant"], "backbone": result["backbone"]["name"],
              "revision": result["backbone"]["revision"], "pages": result["dataset"]["pages"],
              "eval_queries": result["dataset"]["queries_evaluation"],
              "calib_queries": result["dataset"]["queries_calibration"],
              "sr_window": "-".join(map(str, result["calibration"]["window"]))}
    with tracker.run(f"quality-demo-{result['variant']}", params=params,
                     tags={"benchmark": "quality_demo", "stand_in": "true"}) as run_id:
        metrics = {}
        for r in result["rows"]:
            key = r["label"].replace("[", "_").replace("]", "").replace(" ", "_") + f"_g{r['gamma']:g}"
            metrics[f"{key}.ndcg5"] = r["ndcg@5"]
            metrics[f"{key}.recall5"] = r["recall@5"]
            metrics[f"{key}.sr_mor"] = r["sr_mean_of_ratios"]
            metrics[f"{key}.sr_rom"] = r["sr_ratio_of_means"]
        tracker.log_metrics(run_id, metrics)
        tracker.log_series(run_id, "sr_by_layer", result["calibration"]["sr_by_layer"])
        tracker.log_dict(run_id, result, "quality_demo.json")
        tracker.log_text(run_id, table, "quality_demo.md")
    log.info("MLflow run %s in %s", run_id, tracker.uri)


if __name__ == "__main__":
    raise SystemExit(main())
