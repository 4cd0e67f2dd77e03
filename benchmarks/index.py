"""Index benchmark: bytes per page and query latency of the local backend, full vs SAP-pruned, exact vs two-stage.

Workload: P synthetic pages of 1,030 unit vectors, d = 128 (default P = 10,000: the
full float32 index alone is 5.3 GB, so pages are generated one at a time and streamed straight
into ``LocalIndex.build``). Each page has a centre near one of 64 topics, background tokens
around the centre, and 5% "anchor" tokens carrying page-specific content with high synthetic
centrality. SAP at gamma = 0.1 keeps the top 103 tokens by that centrality
(``anchorprune.pruning.sap.select``). Queries: 20 tokens, 12 near anchors of a target page and
8 near its centre. Synthetic data: the numbers measure storage and speed, not retrieval quality
on real documents.

Indexes built and measured:
- full:       every vector, float32 (the baseline)
- sap-f16:    SAP gamma = 0.1, float16
- sap-bits:   SAP gamma = 0.1, packed sign bits (float query x ±1/sqrt(d) pages)

For each: bytes per page (all files of the version / pages), median single-query latency of
exact search and of two-stage search (mean-vector candidates, then exact MaxSim), and recall@10
of two-stage against exact on the same index. float16 / bits indexes are searched with the
default resident float32 copy (``LocalIndex(resident_bytes=1 GiB)``) and, for comparison,
straight from the memory map (``resident_bytes=0``: decoded per query).

Run (one heavy job at a time machine-wide)::

    python benchmarks/index.py --pages 10000

Writes ``benchmarks/results/index.json`` (``--out``); index folders go to ``--workdir`` and are
deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anchorprune.index.local import LocalIndex  # noqa: E402
from anchorprune.pruning.base import PrunedPage  # noqa: E402
from recorded import command_line  # noqa: E402

log = logging.getLogger("bench.index")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Corpus:
    """Deterministic synthetic pages: page ``p`` is regenerated identically from ``(seed, p)``."""

    def __init__(self, pages: int, n_vectors: int, dim: int, seed: int, n_topics: int = 64, anchor_frac: float = 0.05):
        self.pages, self.n, self.d, self.seed = pages, n_vectors, dim, seed
        self.topics = unit(np.random.default_rng([seed, 10**9]).standard_normal((n_topics, dim)))
        self.n_anchor = max(1, round(anchor_frac * n_vectors))

    def page(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vectors [N, d] float32, centrality [N], anchor positions)``."""
        rng = np.random.default_rng([self.seed, p])
        d = self.d
        center = unit(self.topics[p % len(self.topics)] + unit(rng.standard_normal(d)))
        vecs = center + rng.standard_normal((self.n, d), dtype=np.float32) / math.sqrt(d)
        anchors = rng.choice(self.n, self.n_anchor, replace=False)
        vecs[anchors] = center + 0.8 * unit(rng.standard_normal((self.n_anchor, d)))
        cent = rng.normal(1.0, 0.5, self.n)
        cent[anchors] = rng.normal(3.0, 0.5, self.n_anchor)
        return unit(vecs).astype(np.float32), cent.astype(np.float32), anchors

    def query(self, target: int, qseed: int, m: int = 20, m_anchor: int = 12) -> torch.Tensor:
        vecs, _, anchors = self.page(target)
        rng = np.random.default_rng([self.seed, 7, qseed])
        d = self.d
        center = unit(vecs.mean(axis=0))
        a = vecs[rng.choice(anchors, m_anchor)] + 0.3 * rng.standard_normal((m_anchor, d)) / math.sqrt(d)
        g = center + rng.standard_normal((m - m_anchor, d)) / math.sqrt(d)
        return torch.from_numpy(unit(np.concatenate([a, g])).astype(np.float32))


def sap_keep(centrality: np.ndarray, gamma: float) -> tuple[np.ndarray, str]:
    try:
        from anchorprune.pruning.sap import select

        kept = select(torch.from_numpy(centrality)[None, :], [0], gamma).numpy()
        return kept, "anchorprune.pruning.sap.select"
    except ImportError:                        # pragma: no cover - SAP module not present
        k = max(1, min(len(centrality), math.floor(gamma * len(centrality) + 1e-9)))
        return np.sort(np.argsort(-centrality, kind="stable")[:k]), "top-k fallback"


def rss_gib() -> float:
    """Peak RSS (includes file-backed pages of memory-mapped indexes that were touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def mem_now() -> dict[str, float]:
    """Current RssAnon (heap, tensors) and RssFile (mapped index files, reclaimable) in GiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = round(int(val.split()[0]) / 2**20, 2)
    return out


def timed_searches(idx: LocalIndex, queries: list[torch.Tensor], k: int) -> tuple[list[list[str]], list[float]]:
    ids, secs = [], []
    idx.search(queries[0], k)                 # warm: opens the version and maps the file
    for q in queries:
        t0 = time.perf_counter()
        hits = idx.search(q, k)
        secs.append(time.perf_counter() - t0)
        ids.append([h.page_id for h in hits])
    return ids, secs


def recall(approx: list[list[str]], exact: list[list[str]], k: int) -> float:
    return statistics.fmean(len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--vectors", type=int, default=1030)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 500])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/anchorprune-bench-index"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index.json")
    ap.add_argument("--keep", action="store_true", help="keep the index folders")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    corpus = Corpus(args.pages, args.vectors, args.dim, args.seed)
    pruned: list[np.ndarray] = []             # SAP-kept vectors per page (float32), filled while the full index builds
    selector = [""]

    def full_pages() -> Iterator[PrunedPage]:
        for p in range(args.pages):
            vecs, cent, _ = corpus.page(p)
            kept, selector[0] = sap_keep(cent, args.gamma)
            pruned.append(vecs[kept])
            yield PrunedPage(f"p{p:05d}", f"h{p}", torch.from_numpy(vecs), None)

    def pruned_pages() -> Iterator[PrunedPage]:
        for p, v in enumerate(pruned):
            yield PrunedPage(f"p{p:05d}", f"h{p}", torch.from_numpy(v), None)

    results: dict[str, dict] = {}
    build_meta = {"benchmark": "index", "synthetic": True, "gamma": args.gamma}
    specs = [("full", "float32", full_pages), ("sap-f16", "float16", pruned_pages), ("sap-bits", "bits", pruned_pages)]
    rng = np.random.default_rng([args.seed, 99])
    targets = rng.choice(args.pages, args.queries, replace=False)
    queries = [corpus.query(int(t), i) for i, t in enumerate(targets)]
    target_ids = [f"p{int(t):05d}" for t in targets]
    for name, dtype, gen in specs:
        idx = LocalIndex(args.workdir, name, dtype=dtype)
        t0 = time.perf_counter()
        v = idx.build(gen(), {**build_meta, "index": name})
        build_s = time.perf_counter() - t0
        idx.swap(v)
        vec_bytes = v.manifest["files"]["vectors.bin"]["bytes"]
        exact_ids, exact_s = timed_searches(idx, queries, args.k)
        mapped_s = None
        if dtype != "float32":     # the same search streaming from the memory map (no resident float32 copy)
            mapped_ids, mapped_s = timed_searches(LocalIndex(args.workdir, name, dtype=dtype, resident_bytes=0),
                                                  queries, args.k)
            assert mapped_ids == exact_ids
        entry = {
            "dtype": dtype, "pages": v.pages, "vectors": v.vectors, "vectors_per_page": v.vectors / v.pages,
            "bytes": v.bytes, "bytes_per_page": v.bytes / v.pages, "vector_bytes_per_page": vec_bytes / v.pages,
            "build_s": round(build_s, 1),
            "exact": {"median_ms": 1e3 * statistics.median(exact_s), "p90_ms": 1e3 * sorted(exact_s)[int(0.9 * len(exact_s))],
                      "target_at_1": statistics.fmean(ids[0] == t for ids, t in zip(exact_ids, target_ids, strict=True))},
            "exact_from_memory_map": None if mapped_s is None else {"median_ms": 1e3 * statistics.median(mapped_s)},
            "two_stage": {},
        }
        idx.two_stage = True            # the same object: one memory map of the version (RSS counts each map)
        for c in args.candidates:
            idx.candidates = c
            ts_ids, ts_s = timed_searches(idx, queries, args.k)
            entry["two_stage"][str(c)] = {
                "median_ms": 1e3 * statistics.median(ts_s), "recall_at_10_vs_exact": recall(ts_ids, exact_ids, args.k),
                "target_at_1": statistics.fmean(ids[0] == t for ids, t in zip(ts_ids, target_ids, strict=True))}
        entry["memory_after_gib"] = mem_now()
        entry["peak_rss_so_far_gib"] = round(rss_gib(), 2)
        results[name] = entry
        log.info("%s: %.0f B/page, exact %.1f ms, two-stage %s, peak RSS %.2f GiB", name, entry["bytes_per_page"],
                 entry["exact"]["median_ms"], {c: round(e["median_ms"], 1) for c, e in entry["two_stage"].items()},
                 rss_gib())
        del idx
        if name == "full" and not args.keep:
            shutil.rmtree(args.workdir / name)  # 5 GB: not needed for the rest

    full = results["full"]
    summary = {
        "sap_f16_bytes_vs_full": results["sap-f16"]["bytes_per_page"] / full["bytes_per_page"],
        "sap_bits_bytes_vs_full": results["sap-bits"]["bytes_per_page"] / full["bytes_per_page"],
        "sap_f16_exact_speedup_vs_full_exact": full["exact"]["median_ms"] / results["sap-f16"]["exact"]["median_ms"],
        "sap_bits_exact_speedup_vs_full_exact": full["exact"]["median_ms"] / results["sap-bits"]["exact"]["median_ms"],
        "sap_f16_memory_map_speedup_vs_full_exact":
            full["exact"]["median_ms"] / results["sap-f16"]["exact_from_memory_map"]["median_ms"],
        "sap_bits_memory_map_speedup_vs_full_exact":
            full["exact"]["median_ms"] / results["sap-bits"]["exact_from_memory_map"]["median_ms"],
        "targets": {"sap_f16_bytes_vs_full": "<= 0.055", "sap_bits_bytes_vs_full": "<= 0.004",
                    "sap_exact_speedup": ">= 8", "two_stage_recall_at_10": ">= 0.99"},
    }
    summary["met"] = {
        "sap_f16_bytes": summary["sap_f16_bytes_vs_full"] <= 0.055,
        "sap_bits_bytes": summary["sap_bits_bytes_vs_full"] <= 0.004,
        "sap_f16_speedup": summary["sap_f16_exact_speedup_vs_full_exact"] >= 8,
        "two_stage_recall_at_10": {n: {c: e["recall_at_10_vs_exact"] >= 0.99 for c, e in r["two_stage"].items()}
                                   for n, r in results.items()},
    }
    out = {
        "command": command_line(__file__, sys.argv[1:]),
        "workload": {"pages": args.pages, "vectors_per_page": args.vectors, "dim": args.dim, "gamma": args.gamma,
                     "queries": args.queries, "query_tokens": 20, "k": args.k, "candidates": args.candidates,
                     "selector": selector[0], "data": "synthetic (topics + anchor tokens), see module docstring"},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "results": results, "summary": summary, "peak_rss_gib": round(rss_gib(), 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, json.dumps(summary))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
