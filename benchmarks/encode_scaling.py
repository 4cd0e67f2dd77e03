"""Sharded encoding: pages/s of the demo backbone with 1 and 2 Dask workers, and the cost of resuming a killed run.

What runs is what ``anchorprune encode`` runs: the Prefect flow ``encode-shards`` mapping
``encode-shard`` tasks over a local Dask cluster (``flows.encode.dask_task_runner``: one worker
process per worker, one torch thread each), writing a fresh temporary features cache. The pages
are the first ``--pages`` pages of the demo corpus (read only; the shared cache is not touched).

Each measurement is a child process (a fresh cluster, a warm Prefect API):

- ``rate``: pages / encode window, where the window runs from the first shard's start (after
  its worker loaded the model) to the last shard's end: the steady-state throughput.
- ``wall_s``: the whole flow call, cluster start and model loading included (what a user waits).
- ``resume``: a 2-worker run is killed (SIGKILL to its whole process group, workers included)
  once about half the pages are in the cache; a second run then encodes what is missing. Its
  model calls count only the missing pages, and the entries of both runs together are every
  page exactly once.

The figure is the scaling efficiency, ``rate(2 workers) / (2 * rate(1 worker))``: the absolute
rate depends on the machine and its load (the CPU here is shared; the load average is recorded).

Run::

    nice -n 10 .venv/bin/python benchmarks/encode_scaling.py --pages 48

Writes ``benchmarks/results/encode_scaling.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recorded import command_line

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "rdocs-demo"   # the demo dataset of this checkout (`make demo` builds it)


def demo_backbone_config():
    from anchorprune.config import load_settings

    return load_settings(ROOT / "params.yaml").backbones[0]


def load_pages(data: Path, n: int):
    from anchorprune.data.schema import load_dataset_dir

    pages = []
    for p in load_dataset_dir(data).pages():
        pages.append(p)
        if len(pages) == n:
            break
    return pages


def child(args) -> None:
    """One encode of ``--pages`` pages with ``--workers`` workers into ``--cache``; prints a JSON line."""
    from flows.encode import dask_task_runner, encode_shards_flow
    from prefect import flow

    from anchorprune.config import EncodeConfig
    from anchorprune.features.encoding import plan_shards

    @flow(name="warm-up")
    def warm_up() -> int:   # starts the ephemeral Prefect API outside the timed call
        return 1

    warm_up()
    bcfg = demo_backbone_config()
    pages = load_pages(args.data, args.pages)
    cfg = EncodeConfig(workers=args.workers, shard_pages=args.shard_pages)
    shards = plan_shards([p.page_id for p in pages], cfg.shard_pages)
    runner = dask_task_runner(cfg, len(shards))
    t0 = time.perf_counter()
    out = encode_shards_flow.with_options(task_runner=runner)(bcfg, str(args.data), shards, str(args.cache),
                                                              cfg.claim_ttl_s)
    wall = time.perf_counter() - t0
    reps = out["shards"]
    work = [r for r in reps if r["encoded"]]
    window = (max(r["finished"] for r in work) - min(r["started"] for r in work)) if work else 0.0
    per_worker = {}   # worker -> (pages, its own window: first shard start after its model load, last finish)
    for r in work:
        n, lo, hi = per_worker.get(r["worker"], (0, r["started"], r["finished"]))
        per_worker[r["worker"]] = (n + r["encoded"], min(lo, r["started"]), max(hi, r["finished"]))
    print("RESULT " + json.dumps({
        "workers": args.workers, "pages": len(pages), "shards": len(shards), "encoded": out["encoded"],
        "cached": out["cached"], "deferred": out["deferred"], "wall_s": wall, "encode_window_s": window,
        "rate_pages_per_s": out["encoded"] / window if window else None,
        "sum_of_worker_rates": sum(n / (hi - lo) for n, lo, hi in per_worker.values() if hi > lo),
        "pages_per_worker": sorted(n for n, _, _ in per_worker.values()),
        "model_load_s": sorted(r["load_s"] for r in reps if r["load_s"] > 0.01),
        "worker_processes": len({r["worker"] for r in reps}),
    }), flush=True)


def run_child(args, workers: int, cache: Path, kill_at: int | None = None, env=None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--pages", str(args.pages),
           "--shard-pages", str(args.shard_pages), "--cache", str(cache), "--data", str(args.data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, env=env)
    if kill_at is not None:
        while proc.poll() is None and entries(cache) < kill_at:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)   # the run and its worker processes, mid-shard
        proc.wait()
        return None
    stdout, _ = proc.communicate()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {cmd} failed (exit {proc.returncode}): {stdout[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def entries(cache: Path) -> int:
    return sum(1 for p in cache.rglob("*.pt") if not p.name.startswith(".tmp-")) if cache.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=48)
    ap.add_argument("--shard-pages", type=int, default=8)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encode_scaling.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    if args.child:
        child(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="encode-scaling-"))
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    load = {"start": list(os.getloadavg())}
    try:
        runs = {}
        for w in (1, 2):
            runs[w] = run_child(args, w, tmp / f"cache-{w}", env=env)
            load[f"after_{w}_worker"] = list(os.getloadavg())
            print(f"{w} worker(s): {runs[w]['rate_pages_per_s']:.2f} pages/s, wall {runs[w]['wall_s']:.1f} s",
                  flush=True)
        cache = tmp / "cache-resume"
        run_child(args, 2, cache, kill_at=args.pages // 2, env=env)
        after_kill = entries(cache)
        claims_left = sum(1 for _ in cache.rglob("*.claim.*"))
        resumed = run_child(args, 2, cache, env=env)
        load["end"] = list(os.getloadavg())
        assert after_kill + resumed["encoded"] == args.pages == entries(cache), (after_kill, resumed)
        efficiency = runs[2]["rate_pages_per_s"] / (2 * runs[1]["rate_pages_per_s"])
        efficiency_workers = runs[2]["sum_of_worker_rates"] / (2 * runs[1]["sum_of_worker_rates"])
        result = {
            "command": command_line(__file__, sys.argv[1:], prefix=f"nice -n {os.nice(0)}" if os.nice(0) else ""),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg": load,
                        "note": "CPU shared with other jobs during the run: the figures are noisy; "
                                "read the load averages next to them"},
            "backbone": "minilm-text (all-MiniLM-L6-v2 over page text, the demo stand-in), float32, CPU, "
                        "one torch thread per worker process",
            "pages": args.pages, "shard_pages": args.shard_pages,
            "runs": {f"{w}_workers": runs[w] for w in (1, 2)},
            "speedup_2_over_1": runs[2]["rate_pages_per_s"] / runs[1]["rate_pages_per_s"],
            "scaling_efficiency": efficiency,
            "scaling_efficiency_worker_windows": efficiency_workers,
            "figure": "scaling_efficiency = rate(2 workers) / (2 x rate(1 worker)); rate = pages / encode window "
                      "(first shard start after its worker loaded the model, to the last shard end; a worker "
                      "that loads later counts as idle). scaling_efficiency_worker_windows sums each worker's "
                      "pages / its own window instead. The absolute rate is not the figure",
            "resume": {"killed_at_entries": after_kill, "claims_left_by_killed_run": claims_left,
                       "resumed_encoded": resumed["encoded"], "resumed_cached": resumed["cached"],
                       "resumed_wall_s": resumed["wall_s"], "every_page_once": True,
                       "note": "SIGKILL to the run's process group once half the pages were cached; the claims "
                               "its dead workers left are taken over at once (same host, pid gone)"},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("speedup_2_over_1", "scaling_efficiency",
                                                 "scaling_efficiency_worker_windows", "resume")}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
