"""Load on the search service: concurrent clients for a fixed time while the index is rebuilt and swapped.

For each index (the demo index; a synthetic larger one), ``anchorprune serve-search`` runs as its own
process on 127.0.0.1; ``--clients`` threads send ``GET /search`` (the dataset's queries, round robin) for
``--seconds``; meanwhile ``--swaps`` rebuilds each publish a new version (the serving pages minus a
different 5 %, reused through ``build(reuse=...)``: different answers, so a mixed-up version shows) and
swap it in. Afterwards every answer is checked against the answer of the version it reports, computed
here by a separate ``LocalIndex`` opened on that version alone (same query encoder): ``wrong`` counts
answers whose pages or scores differ (beyond 1e-4, near-ties may swap places).

The demo index: the workspace's serving version, or, when it has none, one built here from the features
cache with the demo champion's config (``--method/--gamma/--window``; meta.spec recorded as an index build
does). The synthetic index: ``--synthetic-pages`` pages, each a random third of the stored vectors of 3
distinct demo pages (not real pages: their ids are not in the dataset).

    python benchmarks/search_service.py --project ../svc-demo --seconds 60 --clients 8 --swaps 2 \
        --synthetic-pages 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorded import command_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workspace(params: Path):
    from anchorprune.config import load_settings
    from anchorprune.stages.workspace import Workspace

    return Workspace(load_settings(params), params.parent)


def ensure_demo_index(ws, method: str, gamma: float, window: list[int]) -> None:
    """Build the demo index from the features cache with the champion's config when nothing serves yet."""
    from anchorprune.backbones.base import LayerCapture
    from anchorprune.promotion.registry import ChampionSpec
    from anchorprune.stages.encode import load_corpus
    from anchorprune.stages.index import index_backbone, open_serving_index

    idx = open_serving_index(ws)
    if idx.life.serving() is not None:
        return
    bcfg = index_backbone(ws)
    spec = ChampionSpec(backbone=bcfg.model_dump(mode="json"), method=method, gamma=gamma, window=window,
                        version="bench")
    corpus = load_corpus(ws, bcfg, capture=LayerCapture.all())
    pruner = spec.pruner()
    pages = [pruner.prune(corpus.features[pid], gamma) for pid in sorted(corpus.features)]
    meta = {"model": f"anchorprune-{bcfg.name}", "model_version": "bench", "method": method, "gamma": gamma,
            "spec": json.loads(spec.to_json()), "data_version": ws.data_version()}
    v = idx.build(pages, meta)
    idx.swap(v)


def synthetic_index(ws, name: str, pages: int, seed: int = 0, first_stage: str = "none"):
    """``pages`` pages from thirds of 3 distinct demo pages' stored vectors, under index ``name``."""
    from anchorprune.index import open_index
    from anchorprune.index.local import index_root
    from anchorprune.pruning.base import PrunedPage
    from anchorprune.stages.index import open_serving_index

    demo = open_serving_index(ws)
    n = demo.life.serving()
    v = demo.store.open(n)
    vecs, offsets = v.rows(np.arange(len(v.page_ids)))
    offsets = offsets.tolist()
    real = [vecs[offsets[i]:offsets[i + 1]] for i in range(len(v.page_ids))]
    meta = dict(demo.current().manifest.get("meta") or {})
    root = index_root(ws.settings.paths.resolve(ws.settings.paths.index_dir, ws.root))
    idx = open_index(ws.settings.index.model_copy(update={"name": name, "first_stage": first_stage,
                                                          "dtype": demo.dtype}), root)
    if idx.life.serving() is not None:
        return idx
    g = torch.Generator().manual_seed(seed)

    def gen():
        for j in range(pages):
            parts = []
            for i in torch.randperm(len(real), generator=g)[:3].tolist():
                r = real[i]
                take = torch.randperm(r.shape[0], generator=g)[: max(1, r.shape[0] // 3)]
                parts.append(r[take.sort().values])
            yield PrunedPage(f"syn{j:05d}", f"syn-{seed}-{j}", torch.cat(parts), None)

    ver = idx.build(gen(), meta)
    idx.swap(ver)
    return idx


def rebuild_without(idx, k: int, frac: float = 0.05) -> int:
    """A new version: the serving pages minus every page whose position is ``k`` mod 1/frac; swapped in."""
    with idx.rebuild(wait=True) as started:
        cur = idx.current()
        ids = sorted(idx.existing_hashes())
        step = round(1 / frac)
        keep = [p for i, p in enumerate(ids) if i % step != k % step]
        v = idx.build([], dict(cur.manifest.get("meta") or {}), reuse=keep)
        idx.swap(v, expected=started)
    return v.number


def reference(ws, idx_root: Path, name: str, version: int, qvecs, k: int, like) -> list[list[tuple[str, float]]]:
    """The answers of ``version`` alone: a LocalIndex over a folder whose only version (linked) is it, searched
    with the first-stage settings of the served index ``like`` (exact, or the same candidates)."""
    from anchorprune.index import LocalIndex

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / name
        d.mkdir()
        os.symlink(idx_root / name / f"v{version}", d / f"v{version}")
        (d / "CURRENT").write_text(f"v{version}\n")
        ref = LocalIndex(tmp, name, first_stage=like.first_stage, first_stage_params=like.first_stage_params,
                         candidates=like.candidates, first_stage_threshold=like.first_stage_threshold,
                         first_stage_auto=like.first_stage_auto)
        hits, report = ref.search_report(qvecs, k)
        assert report.version == version
        return [[(h.page_id, h.score) for h in row] for row in hits]


def run_load(base: str, queries: list[str], clients: int, seconds: float, k: int, swap_at: list[float], swap):
    import httpx

    records, lock, stop = [], threading.Lock(), threading.Event()
    t0 = time.monotonic()

    def client(c: int):
        with httpx.Client(base_url=base, timeout=60) as http:
            i = c
            while not stop.is_set() and time.monotonic() - t0 < seconds:
                q = queries[i % len(queries)]
                i += clients
                s = time.perf_counter()
                try:
                    r = http.get("/search", params={"q": q, "k": k})
                    ok, body = r.status_code == 200, (r.json() if r.status_code == 200 else r.text[:200])
                except Exception as exc:  # noqa: BLE001 - a failed request is what we count
                    ok, body = False, repr(exc)[:200]
                lat = time.perf_counter() - s
                with lock:
                    records.append((time.monotonic() - t0, lat, ok, q, body))

    swaps = []

    def swapper():
        for at in swap_at:
            while time.monotonic() - t0 < at:
                time.sleep(0.05)
            a = time.monotonic() - t0
            n = swap(len(swaps) + 1)
            swaps.append({"version": n, "started_s": round(a, 2), "done_s": round(time.monotonic() - t0, 2)})

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    sw = threading.Thread(target=swapper)
    for t in [*threads, sw]:
        t.start()
    for t in [*threads, sw]:
        t.join(seconds + 600)
    stop.set()
    return records, swaps, time.monotonic() - t0


def scenario(label: str, params: Path, index_name: str, idx, args) -> dict:
    ws = workspace(params)
    queries = sorted(set(ws.dataset.queries.values()))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    server = subprocess.Popen([sys.executable, "-c", "from anchorprune.cli import app; app()", "serve-search",
                               "--params", str(params), "--port", str(port), *args.server_args.split()], env=env, cwd=params.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=60) as http:     # warm-up: every query once
            for q in queries:
                http.get("/search", params={"q": q, "k": args.k})
        single = None
        if args.single_seconds:                                   # one client, no swaps: the per-request cost
            recs, _, _ = run_load(base, queries, 1, args.single_seconds, args.k, [], None)
            sl = sorted(r[1] * 1000 for r in recs if r[2])
            single = {"seconds": args.single_seconds, "requests": len(recs),
                      "p50_ms": round(sl[len(sl) // 2], 2) if sl else None,
                      "p90_ms": round(sl[int(0.9 * len(sl))], 2) if sl else None,
                      "load_average": os.getloadavg()}
        swap_at = [args.seconds * (i + 1) / (args.swaps + 1) for i in range(args.swaps)]
        load_before = os.getloadavg()
        samples: list[float] = []
        sampling = threading.Event()

        def sample():
            while not sampling.wait(5):
                samples.append(os.getloadavg()[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        records, swaps, wall = run_load(base, queries, args.clients, args.seconds, args.k, swap_at,
                                        lambda i: rebuild_without(idx, i))
        sampling.set()
        load_after = os.getloadavg()
        server_compute = httpx.get(base + "/health", timeout=30).json().get("compute")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    # every answer against the answer of the version it reports
    from anchorprune.index.local import index_root
    from anchorprune.stages.index import open_serving_index
    from anchorprune.stages.search import serving_spec

    spec = serving_spec(ws, idx)
    enc = ws.backbone(spec.backbone_config())
    qvecs = dict(zip(queries, enc.encode_queries(queries), strict=True))
    root = index_root(ws.settings.paths.resolve(ws.settings.paths.index_dir, ws.root))
    ok = [r for r in records if r[2]]
    versions = sorted({r[4]["version"] for r in ok})
    refs = {v: dict(zip(queries, reference(ws, root, index_name, v, [qvecs[q] for q in queries], args.k,
                                                         open_serving_index(ws)),
                        strict=True)) for v in versions}
    wrong = 0
    for _, _, _, q, body in ok:
        want = refs[body["version"]][q]
        got = [(h["page_id"], h["score"]) for h in body["hits"]]
        same = len(got) == len(want) and all(abs(a[1] - b[1]) <= 1e-4 for a, b in zip(got, want, strict=True)) \
            and {p for p, _ in got} <= {p for p, _ in want} | {p for p, s in got if abs(s - got[-1][1]) <= 1e-4}
        wrong += not same
    lat = sorted(r[1] * 1000 for r in ok)
    pct = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)) if lat else (lambda p: None)
    failed = [r for r in records if not r[2]]
    pages = idx.current().manifest.get("pages") if idx.current() else None
    if args.server_args:
        label = f"{label} (serve-search {args.server_args})"
    return {"index": label, "index_name": index_name, "pages": pages, "clients": args.clients,
            "seconds": round(wall, 2), "requests": len(records), "failed": len(failed), "wrong": wrong,
            "failed_examples": [r[4] for r in failed[:3]], "qps": round(len(ok) / wall, 2),
            "qps_clients": round(len(ok) / max(r[0] for r in records), 2) if records else None,
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None, "versions_answered": versions,
            "answers_per_version": {str(v): sum(1 for r in ok if r[4]["version"] == v) for v in versions},
            "swaps": swaps, "queries": len(queries), "k": args.k, "single_client": single,
            "load_average_before": load_before, "load_average_after": load_after,
            "load_1min_during": {"min": min(samples, default=None), "max": max(samples, default=None),
                                 "mean": round(statistics.fmean(samples), 2) if samples else None},
            "server_compute": server_compute, "server_args": args.server_args}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True, help="a demo checkout (params.yaml, data/, cache/)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--swaps", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--synthetic-pages", type=int, default=0, help="also load a synthetic index of this many pages")
    ap.add_argument("--synthetic-first-stage", default="none", choices=["none", "mean", "muvera", "token_ivf"],
                    help="the synthetic index's first stage (none: exact MaxSim over every page)")
    ap.add_argument("--skip-demo", action="store_true", help="only the synthetic index")
    ap.add_argument("--single-seconds", type=float, default=10.0,
                    help="first, one client for this long (no swaps): the per-request latency; 0: skip")
    ap.add_argument("--server-args", default="", help="extra serve-search options, e.g. '--torch-threads 2'")
    ap.add_argument("--method", default="anchor_merge")
    ap.add_argument("--gamma", type=float, default=0.2)
    ap.add_argument("--window", default="3-4")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_service.json")
    args = ap.parse_args(argv)
    import yaml

    from anchorprune.stages.index import open_serving_index

    params = (args.project / "params.yaml").resolve()
    ws = workspace(params)
    a, b = (int(x) for x in args.window.split("-"))
    ensure_demo_index(ws, args.method, args.gamma, list(range(a, b + 1)))
    results = [] if args.skip_demo else [scenario("demo", params, ws.settings.index.name, open_serving_index(ws), args)]
    if args.synthetic_pages:
        stage = args.synthetic_first_stage
        name = f"synthetic{args.synthetic_pages}" + ("" if stage == "none" else f"-{stage.replace('_', '-')}")
        t = time.monotonic()
        idx = synthetic_index(ws, name, args.synthetic_pages, first_stage=stage)
        built = round(time.monotonic() - t, 1)
        cfg = yaml.safe_load(params.read_text())
        cfg["index"] = {**cfg.get("index", {}), "name": name, "first_stage": stage}
        p2 = params.parent / f"params-{name}.yaml"
        p2.write_text(yaml.safe_dump(cfg))
        label = f"synthetic {args.synthetic_pages} pages" + ("" if stage == "none" else f", first stage {stage}")
        res = scenario(label, p2, name, idx, args)
        res["build_s"] = built
        results.append(res)
    cmd = command_line(__file__, sys.argv[1:] if argv is None else argv)
    for r in results:
        r["command"] = cmd
    kept = []                               # results of other indexes from earlier runs stay in the file
    if args.out.is_file():
        try:
            kept = [r for r in json.loads(args.out.read_text()).get("results", [])
                    if r.get("index") not in {x["index"] for x in results}]
        except (ValueError, AttributeError):
            kept = []
    out = {"command": cmd, "cpu_cores": os.cpu_count(), "load_average_after": os.getloadavg(),
           "results": kept + results,
           "note": "loopback only; server and clients on the same machine; the synthetic index's pages are "
                   "thirds of 3 real pages' stored vectors (not real pages)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    shutil.rmtree(params.parent / ".bench-tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
