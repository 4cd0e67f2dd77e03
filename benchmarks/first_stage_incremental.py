"""Incremental token_ivf rebuilds: time and recall@10 (vs exact MaxSim) of a rebuild that carries the serving
version's centroids, against one that retrains k-means, after a 1% change and after 10 successive ones.

Vectors: the SAP-pruned **MiniLM text stand-in** vectors of the Debian benchmark corpus (NOT ColPali),
read from the features cache as ``benchmarks/first_stage.py`` reads them; the corpus of ``--pages``
pages is the real pages then synthetic pages, each a random third of 3 real pages' vectors (the
construction of ``first_stage.py``). ``--allow-partial`` uses the pages already encoded when the
encode is still running (the result records how many).

Steps (one process; every build streams its pages from a generator):

1. **full build**: ``v1`` of the ``--pages`` corpus from scratch (vectors written, k-means trained).
2. **change 1%**: replace ``--replace`` pages (new vectors drawn the same way), delete ``--delete``,
   add ``--add``; the rest are reused.
3. **incremental rebuild**: the change with the default thresholds -- centroids carried; recall@10
   against exact MaxSim of the changed corpus (all queries in one exact pass).
4. **retrain rebuild** (what every rebuild did before): the same change applied to a copy of ``v1`` (hard
   links), with ``retrain_changed: 0`` -- vectors reused, k-means retrained; its recall@10.
5. (each step's result is kept in ``<out>.partial.json`` as it finishes; ``--resume`` restarts after step 1)
6. ``--rounds - 1`` more changes of the same size, each rebuilt incrementally (the decision of each is
   recorded: reuse or retrain), then recall@10 after the last one.

``--sweep`` instead measures where carrying stops being as good as retraining (the thresholds of
``index.token_ivf``): from one base build it applies in-domain changes of growing size (``changed``)
and out-of-domain additions (pages drawn from the last quarter of the real pages, which the base corpus
does not contain: another part of the Debian corpus), and records drift, changed share and recall@10
of carried vs retrained lists.

Run (one heavy job at a time machine-wide)::

    nice -n 10 python benchmarks/first_stage_incremental.py --pages 100000
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from anchorprune.index.local import LocalIndex  # noqa: E402
from anchorprune.index.local.build import LocalBuild  # noqa: E402
from anchorprune.pruning.base import PrunedPage  # noqa: E402
from recorded import command_line  # noqa: E402

log = logging.getLogger("bench.first_stage_incremental")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_flags() -> list[str]:
    out = subprocess.run(["grep", "-o", r"avx512_bf16\|amx_bf16", "/proc/cpuinfo"], capture_output=True, text=True)
    return sorted(set(out.stdout.split()))


def debian_vectors(args: argparse.Namespace) -> dict:
    """SAP-pruned vectors of the Debian corpus pages in the features cache (and ``--queries`` query vectors),
    read by ``first_stage.debian_vectors`` (cached as .npz under ``--workdir``, so the real pages cannot change
    between runs); with ``--allow-partial`` pages not yet encoded are skipped."""
    from first_stage import debian_vectors as read_debian

    real = read_debian(argparse.Namespace(workdir=args.workdir, partial=args.allow_partial, queries=args.queries,
                                          seed=args.seed))
    qoff = np.concatenate([[0], np.cumsum(real["qlengths"])])                      # [Q + 1]
    queries = [torch.from_numpy(real["qvecs"][a:b]).float() for a, b in zip(qoff[:-1], qoff[1:], strict=True)]
    return {"vecs": real["vecs"], "lengths": real["lengths"], "queries": queries,
            "meta": {**real["meta"], "queries": len(queries)}}


class Corpus:
    """Pages as row lists into the real vectors: ``real*`` pages as they are, ``syn*`` a third of 3 real pages."""

    def __init__(self, real: dict, seed: int, sources: slice = slice(None)):
        self.vecs = real["vecs"]                                                    # [R_T, d] float16
        self.lengths = real["lengths"]                                              # [R]
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.rng = np.random.default_rng(seed)
        self.sources = np.arange(len(self.lengths))[sources]                       # real pages drawn from
        self.pages: dict[str, np.ndarray] = {}                                      # page id -> rows
        self.hashes: dict[str, str] = {}
        self.made = 0

    def real(self, i: int) -> str:
        pid = f"real{i:05d}"
        self.pages[pid] = np.arange(self.offsets[i], self.offsets[i + 1])
        self.hashes[pid] = f"r{i}"
        return pid

    def draw(self, pid: str | None = None, sources: np.ndarray | None = None) -> str:
        """A synthetic page (a new id, or new content for ``pid``) from 3 of ``sources`` (default: all)."""
        src = self.rng.choice(self.sources if sources is None else sources, 3, replace=False)
        rows = np.sort(np.concatenate([self.offsets[s] + self.rng.choice(self.lengths[s], math.ceil(self.lengths[s] / 3),
                                                                        replace=False) for s in src]))
        pid = pid or f"syn{self.made:06d}"
        self.made += 1
        self.pages[pid] = rows
        self.hashes[pid] = f"h{self.made}"
        return pid

    def stream(self, ids: list[str]) -> Iterator[PrunedPage]:
        for pid in ids:
            yield PrunedPage(pid, self.hashes[pid], torch.from_numpy(self.vecs[self.pages[pid]].astype(np.float32)),
                             None)


def base_ids(c: Corpus, n: int) -> list[str]:
    ids = [c.real(int(i)) for i in c.sources[:n]]
    while len(ids) < n:
        ids.append(c.draw())
    return ids


def change(c: Corpus, ids: list[str], rng: np.random.Generator, replace: int, delete: int, add: int,
           add_from: np.ndarray | None = None) -> tuple[list[str], list[str], list[str]]:
    """``(fresh ids, reused ids, new order)``: replace / delete random pages of ``ids``, add new ones."""
    pick = rng.choice(len(ids), replace + delete, replace=False)
    replaced = [ids[i] for i in pick[:replace]]
    deleted = {ids[i] for i in pick[replace:]}
    for pid in replaced:
        c.draw(pid)
    added = [c.draw(sources=add_from) for _ in range(add)]
    fresh = replaced + added
    fresh_set = set(fresh)
    reused = [p for p in ids if p not in fresh_set and p not in deleted]
    for pid in deleted:
        c.pages.pop(pid, None)
    return fresh, reused, fresh + reused                         # the build writes fresh pages first


class Timer:
    """Wall time of the build's first-stage step (``LocalBuild._train_ivf``), per build."""

    def __init__(self) -> None:
        self.last = 0.0
        real = LocalBuild._train_ivf

        def timed(this, *a, **kw):
            t = time.perf_counter()
            try:
                return real(this, *a, **kw)
            finally:
                self.last = time.perf_counter() - t
        LocalBuild._train_ivf = timed             # type: ignore[method-assign]


def index(root: Path, name: str, **ivf) -> LocalIndex:
    """The benchmark's index: token_ivf at nprobe 8, **no first-stage calibration** (the product's default,
    ``index.calibration.source: none``). A LocalIndex built without a calibration config calibrates on
    pseudo-queries, which at 100k pages costs more than the k-means itself (nprobe 1..128 x 200 queries),
    on every build: it would hide what the incremental path saves."""
    return LocalIndex(root, name, dtype="float16", first_stage="token_ivf",
                      first_stage_params={"nprobe": 8, "seed": 0, **ivf}, resident_bytes=0,
                      calibration={"source": "none"})


def build(idx: LocalIndex, c: Corpus, fresh: list[str], reuse: list[str], timer: Timer) -> dict:
    t = time.perf_counter()
    v = idx.build(c.stream(fresh), {"config_hash": "bench"}, reuse=reuse)
    took = time.perf_counter() - t
    idx.swap(v)
    idx.prune_versions(2)
    p = v.manifest["first_stage"]["params"]
    upd = p.get("update", {})
    return {"version": v.number, "pages": v.pages, "vectors": v.vectors, "build_s": round(took, 1),
            "first_stage_s": round(timer.last, 1), "decision": upd.get("mode"), "reason": upd.get("reason"),
            "drift": upd.get("drift"), "changed_share": upd.get("changed_share"),
            "changed_since_train": p.get("changed_since_train"), "list_tokens_max": p.get("list_tokens_max"),
            "load": loadavg()}


def exact_top(root: Path, name: str, queries: list[torch.Tensor]) -> list[list[str]]:
    ix = LocalIndex(root, name, first_stage="none", resident_bytes=0, verify_on_open=False)
    t = time.perf_counter()
    hits, _ = ix.search_report(queries, k=10)                   # one pass over the vectors for every query
    log.info("exact top 10 of %d queries in %.0f s", len(queries), time.perf_counter() - t)
    return [[h.page_id for h in q] for q in hits]


def recall(root: Path, name: str, queries: list[torch.Tensor], exact: list[list[str]], candidates: list[int]) -> dict:
    out = {}
    for cand in candidates:
        ix = LocalIndex(root, name, first_stage="token_ivf", candidates=cand, resident_bytes=0, verify_on_open=False)
        rec = []
        for q, want in zip(queries, exact, strict=True):
            got = [h.page_id for h in ix.search(q, k=10)]
            rec.append(len(set(got) & set(want)) / max(len(want), 1))
        out[f"candidates_{cand}"] = round(float(np.mean(rec)), 4)
    return out


def hardlink_copy(root: Path, src: str, dst: str) -> None:
    """``dst`` serving a hard-linked copy of ``src``'s serving version (the files are never modified)."""
    n = int((root / src / "CURRENT").read_text().strip().lstrip("v"))
    shutil.rmtree(root / dst, ignore_errors=True)
    (root / dst).mkdir(parents=True)
    shutil.copytree(root / src / f"v{n}", root / dst / f"v{n}", copy_function=os.link)
    LocalIndex(root, dst).swap(n)


def checkpoint(args: argparse.Namespace, what: str, value) -> None:
    """Log a step's result and keep every result so far in ``<out>.partial.json`` (a run cut short keeps them)."""
    log.info("%s: %s", what, value)
    path = Path(f"{args.out or ROOT / 'benchmarks' / 'results' / 'first_stage_incremental.json'}.partial.json")
    done = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**done, what: value}, indent=2) + "\n")


def run_main(args: argparse.Namespace, real: dict, root: Path) -> dict:
    timer = Timer()
    queries = real["queries"]
    c = Corpus(real, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    ids = base_ids(c, args.pages)
    inc = index(root, "inc")
    if args.resume:       # v1 of an earlier run cut short: its pages are reused as they are, new ones drawn now
        full = json.loads(Path(f"{args.out}.partial.json").read_text())["full_build"]
        cur = inc.current()
        assert cur is not None and cur.pages == args.pages, "nothing to resume"
        ids = json.loads((root / "inc" / f"v{cur.number}" / "pages.json").read_text())["page_ids"]
        c.made = 10 * args.pages                  # new synthetic ids past every id of v1
    else:
        log.info("full build of %d pages", len(ids))
        full = build(inc, c, ids, [], timer)
        checkpoint(args, "full_build", full)
    hardlink_copy(root, "inc", "retrain")
    fresh, reuse, ids = change(c, ids, rng, args.replace, args.delete, args.add)
    first = build(inc, c, fresh, reuse, timer)
    checkpoint(args, "incremental_rebuild_1", first)
    exact = exact_top(root, "inc", queries)
    res_first = recall(root, "inc", queries, exact, args.candidates)
    checkpoint(args, "incremental_first_recall@10", res_first)
    retrained = build(index(root, "retrain", retrain_changed=0.0), c, fresh, reuse, timer)
    checkpoint(args, "retrain_rebuild", retrained)
    res_retrain = recall(root, "retrain", queries, exact, args.candidates)
    checkpoint(args, "retrain_recall@10", res_retrain)
    shutil.rmtree(root / "retrain", ignore_errors=True)
    rounds = [first]
    for r in range(1, args.rounds):
        fresh, reuse, ids = change(c, ids, rng, args.replace, args.delete, args.add)
        rounds.append(build(inc, c, fresh, reuse, timer))
        checkpoint(args, f"incremental_rebuild_{r + 1}", rounds[-1])
    out = {"full_build": full, "retrain_rebuild": {**retrained, "recall@10": res_retrain},
           "incremental_rebuilds": rounds, "incremental_first_recall@10": res_first}
    if args.rounds > 1:
        exact = exact_top(root, "inc", queries)
        out["incremental_last_recall@10"] = recall(root, "inc", queries, exact, args.candidates)
        checkpoint(args, "incremental_last_recall@10", out["incremental_last_recall@10"])
        if args.retrain_last:
            hardlink_copy(root, "inc", "retrain")
            # the same corpus, its lists retrained: a rebuild reusing every page with retrain_changed 0
            out["retrain_last"] = build(index(root, "retrain", retrain_changed=0.0), c, [], ids, timer)
            out["retrain_last"]["recall@10"] = recall(root, "retrain", queries, exact, args.candidates)
    inc_s = [r["build_s"] for r in rounds if r["decision"] == "reuse"]
    out["summary"] = {"full_build_s": full["build_s"], "retrain_rebuild_s": retrained["build_s"],
                      "incremental_rebuild_s_median": float(np.median(inc_s)) if inc_s else None,
                      "incremental_vs_full": round(float(np.median(inc_s)) / full["build_s"], 4) if inc_s else None,
                      "decisions": [r["decision"] for r in rounds]}
    return out


def run_sweep(args: argparse.Namespace, real: dict, root: Path) -> dict:
    """Carried vs retrained lists as the change grows (in-domain) and as new content leaves the domain."""
    timer = Timer()
    queries = real["queries"]
    n_real = len(real["lengths"])
    cut = int(n_real * 0.75)
    held = np.arange(cut, n_real)                           # the last quarter of the real pages: out of domain
    rows = []
    for kind, share in [("in_domain", s) for s in args.sweep_changed] + [("out_of_domain", s) for s in args.sweep_ood]:
        c = Corpus(real, args.seed, sources=slice(0, cut))
        rng = np.random.default_rng(args.seed + 1)
        ids = base_ids(c, args.pages)
        base = index(root, "base")
        build(base, c, ids, [], timer)
        n = int(round(share * args.pages))
        if kind == "in_domain":
            fresh, reuse, ids = change(c, ids, rng, n // 2, n // 4, n // 4)
        else:
            fresh, reuse, ids = change(c, ids, rng, 0, n, n, add_from=held)
        hardlink_copy(root, "base", "retrain")
        r_ret = build(index(root, "retrain", retrain_changed=0.0), c, fresh, reuse, timer)
        r_inc = build(index(root, "base", retrain_changed=1e9, retrain_drift=1e9), c, fresh, reuse, timer)
        exact = exact_top(root, "base", queries)
        row = {"kind": kind, "share_of_pages": share, "drift": r_inc["drift"], "changed_share": r_inc["changed_share"],
               "recall@10_carried": recall(root, "base", queries, exact, args.candidates),
               "recall@10_retrained": recall(root, "retrain", queries, exact, args.candidates),
               "build_s_carried": r_inc["build_s"], "build_s_retrained": r_ret["build_s"], "load": loadavg()}
        log.info("sweep: %s", row)
        rows.append(row)
        shutil.rmtree(root / "base", ignore_errors=True)
        shutil.rmtree(root / "retrain", ignore_errors=True)
    return {"sweep": rows, "out_of_domain_pages": f"drawn from real pages {cut}..{n_real - 1} (the base corpus is "
                                                   f"drawn from pages 0..{cut - 1})"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--replace", type=int, default=500)
    ap.add_argument("--delete", type=int, default=250)
    ap.add_argument("--add", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--retrain-last", action="store_true", help="also retrain the lists after the last round")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, nargs="+", default=[200, 500])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-partial", action="store_true")
    ap.add_argument("--resume", action="store_true", help="reuse v1 of a run cut short (same --out and --workdir)")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-changed", type=float, nargs="+", default=[0.01, 0.1, 0.25, 0.5])
    ap.add_argument("--sweep-ood", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--workdir", default=str(ROOT / "cache" / "bench" / "first_stage_incremental"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("anchorprune").setLevel(logging.INFO)
    torch.manual_seed(args.seed)
    root = Path(args.workdir) / ("sweep" if args.sweep else f"p{args.pages}")
    if not args.resume:
        shutil.rmtree(root, ignore_errors=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = loadavg()
    real = debian_vectors(args)
    body = run_sweep(args, real, root) if args.sweep else run_main(args, real, root)
    shutil.rmtree(root, ignore_errors=True)
    report = {
        "benchmark": "first_stage_incremental" + ("_sweep" if args.sweep else ""),
        "command": command_line(__file__, sys.argv[1:]), "date": started,
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__, "load_at_start": load0,
                    "note": "2 CPU cores shared with an encode job and other engineers: times are noisy, "
                            "see the load per row"},
        "vectors": {"encoder": "MiniLM text stand-in (all-MiniLM-L6-v2, 384-d token vectors), NOT ColPali",
                    "pages": "Debian benchmark corpus (benchmarks/debian-bench.yaml), text layer, SAP gamma=0.1, "
                             "window [3, 4]; synthetic pages: a random third of 3 real pages' vectors",
                    **real["meta"]},
        "index": {"dtype": "float16", "first_stage": "token_ivf", "centroids": "auto", "nprobe": 8,
                  "recall": "recall@10 = overlap of the top 10 with exact MaxSim's top 10 over the same version"},
        "change": {"replace": args.replace, "delete": args.delete, "add": args.add, "rounds": args.rounds},
        **body,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               ("first_stage_incremental_sweep.json" if args.sweep else "first_stage_incremental.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
