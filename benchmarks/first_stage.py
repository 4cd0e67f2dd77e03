"""First-stage benchmark: recall@10 against exact MaxSim and per-query latency of exact, mean, MUVERA and token_ivf.

Real token vectors, stand-in encoder: no ColPali model and no features cache of the demo corpus
exist on this machine, so pages are text passages encoded by the MiniLM **text stand-in**
(``backbones/minilm_text.py``; 384-d token vectors, NOT a vision model) and pruned with SAP at
gamma = 0.1 (window: layers 3-4, the SR-selected window of the stand-in in README.md).

Passages: the docstrings of the public functions / classes / methods of ~100 standard-library
modules of the running Python, grouped in module order into pages of 1,500-3,000 characters.
Each docstring's first line (its summary) is taken out of the page text; the summaries are the
query texts, encoded with the stand-in's query encoder (real query vectors). With Python 3.12 there are
1,157 usable docstrings, all within the first 250 pages (so ``--real-pages 400`` makes 250 pages):
``--queries N`` draws N of those summaries (seeded), up to 1,157.

Corpora: the R real pruned pages, then synthetic pages up to ``--pages``: each synthetic page
takes a random third (rounded up) of the pruned vectors of each of 3 distinct random real
pages, so it has about as many vectors as a real page; a page whose multiset of source vectors
equals an earlier page's is redrawn (never an exact duplicate). Seeded.

For each corpus size: build one local index (float16, first_stage=muvera, which also writes the
mean vectors) from a generator (pages are streamed, never all held), record the build time and
peak RSS, then a second one with first_stage=token_ivf (the same pages, generated again; its own
build time and memory), then for every query: exact search (ground truth, first_stage=none), and
mean / MUVERA first stages at each ``--candidates``, token_ivf at each ``--nprobe`` x
``--candidates`` (always rescored exactly). Recall@10 = overlap of the top 10 with the exact top 10.

Run (one heavy job at a time machine-wide)::

    python benchmarks/first_stage.py --pages 10000 100000

Each size runs in its own subprocess (so its peak RSS is its own); results are merged into
``benchmarks/results/first_stage.json``.

Calibration sample (``--calibration-source``): ``pseudo`` (default) builds token_ivf as the product's pseudo
source does (``--calibration-queries`` pseudo-queries) and, in a full run, re-measures the grid with the real
queries (``calibration_transfer``). ``real`` splits the drawn real queries (seeded, ``--seed``) into two
disjoint halves: the calibration half is given to the token_ivf build (``calibration_queries``, source
``queries``, as the index stage gives the dataset's calibration split), the evaluation half alone is searched
for every recall / latency row, and ``calibration_transfer`` re-measures the grid on the evaluation half: does
a choice made on held-out real queries hold on other real queries? The JSON records both counts and the split.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anchorprune.index.calibration import QuerySample, tie_aware_recall_scores  # noqa: E402
from anchorprune.index.first_stage import MuveraFirstStage  # noqa: E402
from anchorprune.index.local import LocalIndex  # noqa: E402
from anchorprune.pruning.base import PrunedPage  # noqa: E402
from recorded import command_line  # noqa: E402

log = logging.getLogger("bench.first_stage")

MODULES = ["abc", "argparse", "ast", "asyncio.events", "asyncio.streams", "base64", "bdb", "binascii", "bisect", "bz2", "calendar", "cmd", "code", "codecs", "codeop", "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "copyreg", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest", "email.message", "email.utils", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "getpass", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress", "json", "json.decoder", "json.encoder", "keyword", "linecache", "locale", "logging", "logging.handlers", "lzma", "mailbox", "mimetypes", "modulefinder", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random", "re", "reprlib", "rlcompleter", "runpy", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "site", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit", "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing", "unittest.case", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport"]
STAGES = ("mean", "muvera", "token_ivf")
CANDIDATES = (50, 100, 200, 500, 1000, 2000)
WINDOW = (3, 4)
GAMMA = 0.1


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """Peak anonymous RSS (``RssAnon``: heap, tensors) sampled every 50 ms, apart from file-backed pages
    (``RssFile``: memory-mapped index files, which the kernel can drop) that ``ru_maxrss`` also counts."""

    def __init__(self) -> None:
        import threading

        self.peak_anon = self.peak_file = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def sample() -> tuple[float, float]:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        kib = lambda k: float(fields.get(k, "0 kB").split()[0])  # noqa: E731
        return kib("RssAnon") / 1024, kib("RssFile") / 1024

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            a, f = self.sample()
            self.peak_anon, self.peak_file = max(self.peak_anon, a), max(self.peak_file, f)

    def __enter__(self) -> AnonPeak:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


# ---------------------------------------------------------------- real passages
def docstrings() -> list[tuple[str, str, str]]:
    """``(qualified name, summary, body)`` of every documented public object, in module order."""
    out, seen = [], set()
    for mname in MODULES:
        try:
            mod = importlib.import_module(mname)
        except Exception:  # noqa: BLE001 - a module missing from this build is skipped
            continue
        objs = []
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            objs.append((f"{mname}.{name}", obj))
            if inspect.isclass(obj):
                objs += [(f"{mname}.{name}.{a}", m) for a, m in sorted(vars(obj).items())
                         if not a.startswith("_") and callable(m)]
        for qual, obj in objs:
            doc = inspect.getdoc(obj) or ""
            summary, _, body = doc.strip().partition("\n")
            if len(summary.split()) < 4 or len(body.strip()) < 80 or doc in seen:
                continue
            seen.add(doc)
            out.append((qual, summary.strip(), body.strip()))
    return out


def passages(max_pages: int) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """Pages ``(page_id, text)`` of about 1,500-3,000 characters and queries ``(summary, page index)``."""
    pages, queries = [], []
    text, summaries = "", []
    for qual, summary, body in docstrings():
        text += f"{qual}\n{body[:1500]}\n\n"
        summaries.append(summary)
        if len(text) >= 1500:
            pages.append((f"doc{len(pages):04d}", text))
            queries += [(s, len(pages) - 1) for s in summaries]
            text, summaries = "", []
            if len(pages) >= max_pages:
                break
    return pages, queries


def debian_vectors(args: argparse.Namespace) -> dict:
    """SAP-pruned vectors of every page of the Debian benchmark corpus, read from the features cache
    (``benchmarks/debian_bench.py`` encodes it), and the vectors of ``--queries`` of its weak-label
    queries, drawn with the seed (cached as .npz under --workdir)."""
    cache = Path(args.workdir) / f"debian{'-partial' if args.partial else ''}-{args.queries}-{args.seed}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"meta": json.loads(str(z["meta"]))}
    from anchorprune.backbones.base import LayerCapture
    from anchorprune.config import load_settings, project_root
    from anchorprune.features.cache import FeaturesCache, QueryCache
    from anchorprune.pruning.sap import SapPruner
    from anchorprune.stages.workspace import Workspace

    params = ROOT / "benchmarks" / "debian-bench.yaml"
    ws = Workspace(load_settings(params), project_root(params))
    backbone = ws.backbone(ws.settings.backbones[0])
    fc = FeaturesCache(ws.features_dir)
    capture = LayerCapture.window(WINDOW)
    pruner = SapPruner(WINDOW)
    pruned, missing, tokens = [], [], []
    for page in ws.dataset.pages(images=False):
        f = fc.get(backbone, page, capture)
        if f is None:
            missing.append(page.page_id)
            continue
        tokens.append(f.embeddings.shape[0])
        pruned.append(pruner.prune(f, GAMMA).vectors.float().numpy().astype(np.float16))
    if missing and args.partial and pruned:
        log.warning("--partial: %d of %d Debian pages are not in the features cache; using the %d that are",
                    len(missing), len(missing) + len(pruned), len(pruned))
    elif missing:
        raise SystemExit(f"{len(missing)} pages of the Debian corpus are not in the features cache "
                         f"(first: {missing[:3]}); run benchmarks/debian_bench.py first")
    queries = ws.dataset.queries
    qids = sorted(queries)
    rng = np.random.default_rng(args.seed)
    pick = sorted(rng.choice(len(qids), min(args.queries, len(qids)), replace=False))
    qtexts = [queries[qids[i]] for i in pick]
    qvecs = QueryCache(ws.features_dir).get_or_encode(backbone, qtexts, progress=False)
    meta = {"real_pages": len(pruned), "corpus_pages": len(pruned) + len(missing), "not_yet_encoded": len(missing),
            "corpus": "debian-bench (benchmarks/debian-bench.yaml)"
            + (f", PARTIAL: only the {len(pruned)} of {len(pruned) + len(missing)} pages in the features cache"
               if missing else ""),
            "tokens_per_page_mean": round(float(np.mean(tokens)), 1),
            "pruned_vectors_per_page_mean": round(float(np.mean([p.shape[0] for p in pruned])), 1),
            "queries_in_corpus": len(qids), "query_texts_sample": qtexts[:8],
            "query_tokens_mean": round(float(np.mean([q.shape[0] for q in qvecs])), 1)}
    out = {"vecs": np.concatenate(pruned), "lengths": np.array([p.shape[0] for p in pruned]),
           "qvecs": np.concatenate([q.numpy() for q in qvecs]), "qlengths": np.array([q.shape[0] for q in qvecs]),
           "qtexts": np.array(qtexts, dtype=str)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out, meta=json.dumps(meta))
    return out | {"meta": meta}


def real_vectors(args: argparse.Namespace) -> dict:
    """Pruned page vectors and query vectors from the stand-in (cached as .npz under --workdir)."""
    if args.corpus == "debian":
        return debian_vectors(args)
    cache = Path(args.workdir) / f"real-{args.real_pages}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        # a cache drawn with other --queries / --seed is encoded again (one from before they were recorded is
        # taken when it holds as many queries as asked for, and assumed drawn with seed 0, the default)
        if meta.get("queries_asked", len(z["qlengths"])) == args.queries and meta.get("seed", 0) == args.seed:
            return {k: z[k] for k in z.files} | {"meta": meta}
        log.info("%s was drawn with other --queries / --seed: encoding again", cache)
    from anchorprune.backbones.base import LayerCapture
    from anchorprune.backbones.minilm_text import MiniLMTextBackbone
    from anchorprune.pages import Page
    from anchorprune.pruning.sap import SapPruner

    pages, queries = passages(args.real_pages)
    backbone = MiniLMTextBackbone()
    t0 = time.perf_counter()
    feats = backbone.encode_pages([Page(pid, hashlib.sha256(t.encode()).hexdigest(), text=t) for pid, t in pages],
                                  LayerCapture.window(WINDOW))
    encode_s = time.perf_counter() - t0
    pruner = SapPruner(WINDOW)
    pruned = [pruner.prune(f, GAMMA).vectors.float().numpy() for f in feats]
    rng = np.random.default_rng(args.seed)
    if args.queries > len(queries):
        log.warning("--queries %d: the %d real pages hold %d docstring summaries; drawing all of them",
                    args.queries, len(pages), len(queries))
    pick = rng.choice(len(queries), min(args.queries, len(queries)), replace=False)
    qtexts = [queries[i][0] for i in pick]
    qvecs = backbone.encode_queries(qtexts)
    meta = {"real_pages": len(pages), "encode_s": round(encode_s, 1), "queries_available": len(queries),
            "queries_asked": args.queries, "seed": args.seed,
            "tokens_per_page_mean": round(float(np.mean([f.embeddings.shape[0] for f in feats])), 1),
            "pruned_vectors_per_page_mean": round(float(np.mean([p.shape[0] for p in pruned])), 1),
            "query_texts_sample": qtexts[:5], "query_tokens_mean": round(float(np.mean([q.shape[0] for q in qvecs])), 1)}
    out = {"vecs": np.concatenate(pruned), "lengths": np.array([p.shape[0] for p in pruned]),
           "qvecs": np.concatenate([q.numpy() for q in qvecs]), "qlengths": np.array([q.shape[0] for q in qvecs]),
           "qtexts": np.array(qtexts, dtype=str)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out, meta=json.dumps(meta))
    return out | {"meta": meta}


def corpus(real: dict, n_pages: int, seed: int) -> Iterator[PrunedPage]:
    """The real pruned pages, then synthetic pages drawn from 3 real pages each (see the module docstring)."""
    vecs, lengths = real["vecs"], real["lengths"]                          # [T, d], [R]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    r = len(lengths)
    seen: set[bytes] = set()
    for i in range(min(r, n_pages)):
        rows = np.arange(offsets[i], offsets[i + 1])
        seen.add(hashlib.blake2b(rows.tobytes(), digest_size=16).digest())
        yield PrunedPage(f"real{i:05d}", f"h{i}", torch.from_numpy(vecs[rows].astype(np.float32)), None)
    rng = np.random.default_rng(seed)
    made = r
    while made < n_pages:
        src = rng.choice(r, 3, replace=False)
        rows = np.sort(np.concatenate([
            offsets[s] + rng.choice(lengths[s], math.ceil(lengths[s] / 3), replace=False) for s in src]))
        key = hashlib.blake2b(rows.tobytes(), digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        yield PrunedPage(f"syn{made:06d}", f"h{made}", torch.from_numpy(vecs[rows].astype(np.float32)), None)
        made += 1


# ---------------------------------------------------------------- one corpus size
def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 2)


def run_size(args: argparse.Namespace) -> dict:
    real = real_vectors(args)
    n = args.size
    q_off = np.concatenate([[0], np.cumsum(real["qlengths"])])
    queries = [torch.from_numpy(real["qvecs"][q_off[i]:q_off[i + 1]])
               for i in range(min(args.queries, len(real["qlengths"])))]
    calibration_half, split = None, None
    if args.calibration_source == "real":
        queries, calibration_half, split = split_real_queries(queries, real.get("qtexts"), args)
    workdir = Path(args.workdir) / f"idx-{n}"
    shutil.rmtree(workdir, ignore_errors=True)
    params = {"k_sim": args.k_sim, "d_proj": args.d_proj, "reps": args.reps, "final_dim": args.final_dim, "seed": 0}
    idx = LocalIndex(workdir, "bench", dtype="float16", first_stage="muvera", first_stage_params=params)
    rss0 = rss_peak_mib()
    anon0 = AnonPeak.sample()[0]                      # the real vectors the synthetic pages are drawn from
    t0 = time.perf_counter()
    with AnonPeak() as peak:
        v = idx.build(corpus(real, n, args.seed), {"config_hash": "bench"})
    build_s = time.perf_counter() - t0
    build_rss = rss_peak_mib()
    build_mem = {"anon_before_build_mib": round(anon0, 1), "anon_peak_during_build_mib": round(peak.peak_anon, 1),
                 "anon_growth_during_build_mib": round(peak.peak_anon - anon0, 1),
                 "file_backed_peak_mib": round(peak.peak_file, 1),
                 "note": "ru_maxrss counts file-backed pages of the memory-mapped index files too; the anonymous "
                         "growth is the memory the build itself holds"}
    idx.swap(v)
    ivf_build = None
    if "token_ivf" in args.stages:
        # built as the product builds it: calibration to --target-recall, on --calibration-queries pseudo-queries
        # (source pseudo) or on the calibration half of the real queries (source queries, as the index stage gives
        # the dataset's calibration split); the nprobe recorded here is only the version's fallback default
        ivf_params = {"centroids": args.centroids, "nprobe": args.nprobe[0], "seed": 0}
        if calibration_half is None:
            calibration = {"source": "pseudo", "queries": args.calibration_queries, "recall": args.calibration_recall}
            given = None
        else:
            calibration = {"source": "queries", "recall": args.calibration_recall}
            given = QuerySample(calibration_half, {"from": "benchmark: the calibration half of the drawn real "
                                                           "queries (seeded split, disjoint from the evaluation half)"})
        ivf_idx = LocalIndex(workdir, "bench-ivf", dtype="float16", first_stage="token_ivf",
                             first_stage_params=ivf_params, target_recall=args.target_recall,
                             calibration=calibration, calibration_queries=given)
        anon1 = AnonPeak.sample()[0]
        t1 = time.perf_counter()
        with AnonPeak() as peak1:
            v_ivf = ivf_idx.build(corpus(real, n, args.seed), {"config_hash": "bench"})
        ivf_idx.swap(v_ivf)
        ivf_files = {f.name: f.stat().st_size for f in (workdir / "bench-ivf" / f"v{v_ivf.number}").iterdir()}
        cal = v_ivf.manifest["first_stage"].get("calibration") or {}
        ivf_build = {"build_s": round(time.perf_counter() - t1, 1), "params": v_ivf.manifest["first_stage"]["params"],
                     "calibration_s": cal.get("seconds"),
                     "calibration": {k: v for k, v in cal.items() if k != "settings"},
                     "anon_growth_during_build_mib": round(peak1.peak_anon - anon1, 1),
                     "file_backed_peak_mib": round(peak1.peak_file, 1),
                     "ivf_bytes_per_page": round(sum(b for f, b in ivf_files.items() if f.startswith("ivf_")) / n, 1),
                     "ivf_files_bytes": {f: b for f, b in ivf_files.items() if f.startswith("ivf_")}}
        log.info("token_ivf build: %s", ivf_build)
    files = {f.name: f.stat().st_size for f in (workdir / "bench" / f"v{v.number}").iterdir()}
    m = v.manifest
    dims = m["first_stage"]["dims"]
    resident = {"means_float32": n * m["dim"] * 4, "fde_float32": n * dims * 4, "offsets": (n + 1) * 8}
    log.info("built %d pages (%d vectors) in %.1f s, peak RSS %.0f MiB", n, m["vectors"], build_s, build_rss)

    def timed(first_stage: str, cand: int | None, nprobe: int | None = None,
              ) -> tuple[list[list[str]], list[list[float]], list[float], str]:
        """``cand`` / ``nprobe`` None: what the version's calibration chose (nothing pinned)."""
        ix = LocalIndex(workdir, "bench-ivf" if first_stage == "token_ivf" else "bench", candidates=cand,
                        first_stage=first_stage, resident_bytes=args.resident_bytes,
                        first_stage_params={"nprobe": nprobe} if nprobe else None)
        ix.search_report([queries[0]], k=10)                               # warm-up: open, resident copy
        hits, scores, times, used = [], [], [], ""
        for q in queries:
            t = time.perf_counter()
            res, rep = ix.search_report([q], k=10)
            times.append((time.perf_counter() - t) * 1000)
            hits.append([h.page_id for h in res[0]])
            scores.append([h.score for h in res[0]])
            used = rep.first_stage
        return hits, scores, times, used

    if args.build_only:
        out = {"pages": n, "vectors": m["vectors"], "build_s": round(build_s, 1), "token_ivf_build": ivf_build,
               "build_peak_rss_mib": round(build_rss, 1), "build_memory": build_mem, "rss_before_build_mib": round(rss0, 1),
               "index_resident_mib": round(sum(resident.values()) / 2**20, 1), "load_end": loadavg()}
        shutil.rmtree(workdir, ignore_errors=True)
        return out
    exact_hits, exact_scores, exact_ms, _ = timed("none", 1)
    kth = [s[-1] for s in exact_scores]                                     # the exact 10th score per query
    rows = [{"first_stage": "exact", "candidates": n, "recall@10": 1.0, "recall@10_tie_aware": 1.0,
             "p50_ms": pct(exact_ms, 50), "p95_ms": pct(exact_ms, 95), "load": loadavg()}]

    def row(label: dict, c: int | None, nprobe: int | None, stage: str) -> dict:
        hits, scores, ms, used = timed(stage, c, nprobe)
        rec = [len(set(h) & set(e)) / len(e) for h, e in zip(hits, exact_hits, strict=True)]
        tied = [tie_aware_recall_scores(sc, kt, len(e)) for sc, kt, e in zip(scores, kth, exact_hits, strict=True)]
        out = {"first_stage": used, **label, "recall@10": round(float(np.mean(rec)), 4),
               "recall@10_tie_aware": round(float(np.mean(tied)), 4),
               "queries_with_full_top10": round(float(np.mean([r == 1.0 for r in rec])), 4),
               "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
               "speedup_p50_vs_exact": round(pct(exact_ms, 50) / pct(ms, 50), 1), "load": loadavg()}
        log.info("%s", out)
        return out

    for stage in args.stages:
        for nprobe in (args.nprobe if stage == "token_ivf" else [None]):
            for c in args.candidates:
                rows.append(row({**({"nprobe": nprobe} if nprobe else {}), "candidates": c}, c, nprobe, stage))
    transfer = None
    if "token_ivf" in args.stages and ivf_build and ivf_build["calibration"]:
        cal = ivf_build["calibration"]
        rows.append(row({"settings": "calibrated (chosen by the index at build, nothing pinned)",
                         "nprobe": cal["nprobe"], "candidates": cal["candidates"]}, None, None, "token_ivf"))
        transfer = calibration_transfer(workdir, queries, args)
    out = {
        "pages": n, "vectors": m["vectors"], "dim": m["dim"], "queries": len(queries),
        "calibration_source": args.calibration_source, "query_split": split,
        "build_s": round(build_s, 1), "build_peak_rss_mib": round(build_rss, 1), "build_memory": build_mem,
        "token_ivf_build": ivf_build, "rss_before_build_mib": round(rss0, 1), "index_resident_mib": round(sum(resident.values()) / 2**20, 1),
        "first_stage": m["first_stage"], "files_bytes": files,
        "bytes_per_page": {
            "vectors_float16": round(files["vectors.bin"] / n, 1), "mean_float16_disk": round(files["means.npy"] / n, 1),
            "fde_float16_disk": round(files["first_stage.bin"] / n, 1), "mean_float32_ram": m["dim"] * 4,
            "fde_float32_ram": dims * 4, "all_files": round(sum(files.values()) / n, 1)},
        "exact_searched_from": ("float32 copy in RAM" if m["vectors"] * m["dim"] * 4 <= args.resident_bytes
                                else "float16 memory map, decoded per query"),
        "results": rows, "calibration_transfer": transfer, "load_end": loadavg(),
    }
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


#: the split of the drawn real queries uses its own random stream (the draw itself uses --seed alone)
SPLIT_STREAM = 31


def split_real_queries(queries: list[torch.Tensor], texts: np.ndarray | None,
                       args: argparse.Namespace) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
    """``(evaluation half, calibration half, record)``: a seeded permutation of the drawn queries, its first
    ``n // 2`` the calibration half; disjoint by index (the record counts texts that occur in both halves)."""
    n = len(queries)
    order = np.random.default_rng([args.seed, SPLIT_STREAM]).permutation(n)
    cal, ev = sorted(order[:n // 2].tolist()), sorted(order[n // 2:].tolist())
    assert not set(cal) & set(ev)
    if len(cal) < 30:
        log.warning("--calibration-source real: %d calibration queries, below index.calibration.min_queries' "
                    "default 30 (anchorprune.index_config.CALIBRATION_MIN_QUERIES); raise --queries", len(cal))
    shared = None if texts is None else len({str(texts[i]) for i in cal} & {str(texts[i]) for i in ev})
    record = {"drawn": n, "calibration": len(cal), "evaluation": len(ev),
              "how": f"np.random.default_rng([seed {args.seed}, {SPLIT_STREAM}]).permutation of the drawn queries: "
                     "the first n // 2 calibrate the token_ivf build (calibration_queries), the rest are the only "
                     "queries searched for every row (exact ground truth included); disjoint",
              "texts_in_both_halves": shared,
              "calibration_indices": cal, "evaluation_indices": ev}
    log.info("real queries split: %d calibrate the build, %d evaluate", len(cal), len(ev))
    return [queries[i] for i in ev], [queries[i] for i in cal], record


def calibration_transfer(workdir: Path, queries: list[torch.Tensor], args: argparse.Namespace) -> dict:
    """Does the build's calibration transfer to the queries searched? The calibration grid measured again on the
    same version with ``queries`` as the sample: their recall at the build's choice, the choice they would have
    made, and recall on both samples at every setting. Pseudo source: real vs pseudo-queries (the keys name them
    so); real source: the evaluation half vs the calibration half of the real queries (held_out vs calibration)."""
    from anchorprune.index.calibration import CalibrationParams, calibrate

    ix = LocalIndex(workdir, "bench-ivf", first_stage="token_ivf", resident_bytes=args.resident_bytes)
    v = ix._serving().handle
    built = v.manifest["first_stage"]["calibration"]
    params = CalibrationParams(target_recall=args.target_recall, recall=args.calibration_recall)
    other = calibrate(v.ivf, v.token_rows, v.offsets, params, [q.numpy() for q in queries])
    at = {(s["nprobe"], s["candidates"]): s for s in other["settings"]}
    chosen = at.get((built["nprobe"], built["candidates"]), {})
    pairs = [(s, at[(s["nprobe"], s["candidates"])]) for s in built["settings"] if (s["nprobe"], s["candidates"]) in at]
    gap = [r["recall_tie_aware"] - p["recall_tie_aware"] for p, r in pairs]
    cal, ev = ("pseudo", "real") if args.calibration_source == "pseudo" else ("calibration", "held_out")
    return {
        "calibrated_on": built["sample"]["kind"], "calibration_queries": built["sample"]["queries"],
        f"{cal}_choice": {k: built.get(k) for k in ("nprobe", "candidates", "recall", "recall_tie_aware",
                                                   "recall_lower_bound", "cost", "met")},
        f"{ev}_recall_at_{cal}_choice": {k: chosen.get(k) for k in ("recall", "recall_tie_aware")},
        f"{ev}_choice": {k: other.get(k) for k in ("nprobe", "candidates", "recall", "recall_tie_aware",
                                                  "recall_lower_bound", "cost", "met")},
        f"{ev}_queries": len(queries),
        f"{ev}_minus_{cal}_tie_aware_recall": {"mean": round(float(np.mean(gap)), 4),
                                               "min": round(float(np.min(gap)), 4),
                                               "max": round(float(np.max(gap)), 4), "settings": len(gap)},
        "settings": [{"nprobe": p["nprobe"], "candidates": p["candidates"], "cost": p["cost"],
                      f"{cal}_recall": p["recall"], f"{cal}_tie_aware": p["recall_tie_aware"],
                      f"{ev}_recall": r["recall"], f"{ev}_tie_aware": r["recall_tie_aware"]} for p, r in pairs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)              # one size, in a subprocess
    ap.add_argument("--corpus", choices=["docstrings", "debian"], default="debian",
                    help="real vectors: the Debian benchmark corpus (features cache) or stdlib docstrings")
    ap.add_argument("--candidates", type=int, nargs="+", default=list(CANDIDATES))
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8], help="token_ivf lists probed per query token")
    ap.add_argument("--centroids", type=int, default=None, help="token_ivf k-means lists (default: auto)")
    ap.add_argument("--target-recall", type=float, default=0.99, help="index.target_recall of the token_ivf build")
    ap.add_argument("--calibration-source", choices=["pseudo", "real"], default="pseudo",
                    help="token_ivf calibration sample: pseudo-queries, or the calibration half of the drawn real "
                         "queries (the other half evaluates; see the module docstring)")
    ap.add_argument("--calibration-queries", type=int, default=200, help="index.calibration.queries (pseudo)")
    ap.add_argument("--calibration-recall", choices=["tie_aware", "plain"], default="tie_aware",
                    help="index.calibration.recall: the recall the target is met on")
    ap.add_argument("--real-pages", type=int, default=400)
    ap.add_argument("--partial", action="store_true",
                    help="debian: use the pages the features cache holds when the corpus is not fully encoded")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--k-sim", type=int, default=4)
    ap.add_argument("--d-proj", type=int, default=16)
    ap.add_argument("--reps", type=int, default=16)
    ap.add_argument("--final-dim", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resident-bytes", type=int, default=1 << 30)
    ap.add_argument("--workdir", default="/tmp/anchorprune-first-stage")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "first_stage.json"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--build-only", action="store_true", help="measure the build (time, peak RSS) only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    if args.size:
        print("RESULT " + json.dumps(run_size(args)))
        return
    real = real_vectors(args)                                              # encode once, before the sizes
    sizes = []
    for n in args.pages:
        cmd = [sys.executable, *sys.argv, "--size", str(n)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        sys.stderr.write(res.stderr[-4000:])
        sizes.append(json.loads(next(line[7:] for line in res.stdout.splitlines() if line.startswith("RESULT "))))
    fs = MuveraFirstStage.create(int(real["vecs"].shape[1]), k_sim=args.k_sim, d_proj=args.d_proj, reps=args.reps,
                                 final_dim=args.final_dim)
    report = {
        "benchmark": "first_stage", "command": command_line(__file__, sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "load_at_start": loadavg(),
            "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
            "note": "2 CPU cores shared with other jobs: latencies are noisy; see load per row"},
        "vectors": {
            "encoder": "MiniLM text stand-in (all-MiniLM-L6-v2, 384-d token vectors), NOT ColPali",
            **({"pages": "every page of the Debian benchmark corpus (r-doc-pdf, gnuplot-doc, octave-doc, "
                         "texlive-latex-recommended-doc; benchmarks/debian_bench.py), text layer",
                "queries": "weak-label outline titles of the corpus (blanked on their target page), a seeded "
                           "sample, encoded with the stand-in's query encoder"}
               if args.corpus == "debian" else
               {"pages": "stdlib docstrings grouped into 1,500-3,000-character pages, summaries removed",
                "queries": "docstring summaries (removed from the pages) encoded with the stand-in's query encoder"}),
            "pruning": f"SAP gamma={GAMMA}, window layers {list(WINDOW)}",
            "synthetic_pages": "each takes a random ceil(1/3) of the pruned vectors of 3 distinct random real "
                               "pages; an exact duplicate (same source vectors) is redrawn; the real pages are "
                               "included as they are",
            **real["meta"]},
        "muvera": fs.params(), "candidates": list(args.candidates),
        "token_ivf": {"nprobe": args.nprobe, "centroids": args.centroids or "auto (index/token_ivf.auto_centroids)",
                      "definition": "src/anchorprune/index/token_ivf.py: each query token probes its nprobe nearest "
                                    "k-means lists; pages ranked by MaxSim over the probed tokens"},
        "stages": list(args.stages), "calibration_source": args.calibration_source, "corpora": sizes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
