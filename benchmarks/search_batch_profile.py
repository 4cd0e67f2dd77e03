"""Where one search batch's time goes in the search service: pin, query encoding, search (scoring, page
checks, top-k), catalog + JSON; in process, over a workspace's serving index (no HTTP).

Each round takes the next ``--batch`` dataset queries, clears the query cache (encoding is measured; the
load benchmark's queries are cached after its warm-up, so there encoding is ~0), and runs what the service's
worker and request threads run. Medians over ``--rounds`` (the first 2 dropped), torch with 1 thread as the
service. ``--label`` names the code measured (e.g. run once with PYTHONPATH at an older checkout)::

    python benchmarks/search_batch_profile.py --project <a copy of the demo> --batch 8 --label after
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorded import command_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_batch_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import anchorprune.evaluation.scoring as scoring
    import anchorprune.index.local as local
    import anchorprune.index.local.version as version
    from anchorprune.cli.options import load_workspace
    from anchorprune.serving.catalog import Catalog, snippet
    from anchorprune.serving.state import PinnedIndex, SearchState

    params = (args.project / "params.yaml").resolve()
    os.chdir(params.parent)
    ws = load_workspace(params)
    state = SearchState(ws, torch_threads=1)
    pinned = state.current()
    queries = sorted(set(ws.dataset.queries.values()))
    spent: dict[str, float] = {}

    def timed(owner, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        setattr(owner, name, wrapper)

    timed(version.Version, "score_search", "scoring (score_search)")
    timed(version.Version, "check_pages", "page digests of the hits (check_pages)")
    timed(local, "top_k", "top_k")
    timed(scoring, "_nonfinite_rows", "  of which NaN/inf scan")
    catalog = Catalog(ws)
    results = []
    for nq in args.batch:
        rows = []
        for r in range(args.rounds):
            qs = [queries[(r * nq + i) % len(queries)] for i in range(nq)]
            spent.clear()
            t0 = time.perf_counter()
            with state.pin() as p:
                state._qcache.clear()
                t1 = time.perf_counter()
                qv = state.encode(p, qs)
                t2 = time.perf_counter()
                hits, _ = PinnedIndex(state.index, p.serving).search_report(qv, 10)
                t3 = time.perf_counter()
            catalog.ensure([h.page_id for row in hits for h in row])
            body = [[{"page_id": h.page_id, "score": h.score,
                      "snippet": snippet(rec.text if (rec := catalog.get(h.page_id)) else "", q)} for h in row]
                    for q, row in zip(qs, hits, strict=True)]
            json.dumps(body)
            t4 = time.perf_counter()
            rows.append({"pin": t1 - t0, "encode queries (uncached)": t2 - t1, "search_report": t3 - t2, **spent,
                         "catalog + JSON": t4 - t3, "total": t4 - t0})
        keys = list(dict.fromkeys(k for row in rows for k in row))
        results.append({"label": args.label, "batch_queries": nq,
                        "median_ms": {k: round(1000 * statistics.median(row.get(k, 0.0) for row in rows[2:]), 2)
                                      for k in keys},
                        "load_average": os.getloadavg()})
    v = pinned.serving.handle
    info = {"pages": len(v.page_ids), "vectors": int(v.vecs.shape[0]), "dim": v.dim, "dtype": v.dtype,
            "prepared": getattr(v, "prepared", None) is not None}
    kept = []
    if args.out.is_file():
        kept = [r for r in json.loads(args.out.read_text()).get("results", []) if r.get("label") != args.label]
    out = {"command": command_line(__file__, sys.argv[1:] if argv is None else argv), "index": info,
           "cpu_cores": os.cpu_count(), "results": kept + results,
           "note": "MiniLM text stand-in; in process (no HTTP); 2 cores shared with other jobs"}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
