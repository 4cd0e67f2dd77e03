"""Build and encode the ~10.7k-page Debian benchmark corpus, recording how long each step took.

The corpus (:mod:`anchorprune.data.debian_bench`) is every page of Debian's ``r-doc-pdf``,
``gnuplot-doc``, ``octave-doc`` and ``texlive-latex-recommended-doc``; the backbone is the demo's
MiniLM **text stand-in** (NOT a vision model). Settings come from ``benchmarks/debian-bench.yaml``:
the dataset is built outside the DVC-tracked ``data/`` and validated with the project's GX suites;
page features go to the project's content-addressed features cache (all layers captured), so later
benchmarks (``first_stage.py --corpus debian``, ``quality_demo.py --params ...``) read them back.

Pages are encoded in chunks of ``--chunk`` pages and dropped after each chunk is cached, so memory
stays flat (the whole corpus's all-layer features are ~10 GB). A killed run resumes: cached pages
are hits.

Run::

    .venv/bin/python benchmarks/debian_bench.py            # build (once) + encode; ~1 h on 2 CPU cores

Writes ``benchmarks/results/debian_bench_encode.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from anchorprune.backbones.base import LayerCapture  # noqa: E402
from anchorprune.config import load_settings, project_root  # noqa: E402
from anchorprune.data.build import build_dataset  # noqa: E402
from anchorprune.features.cache import FeaturesCache, QueryCache  # noqa: E402
from anchorprune.features.encoding import missing_pages  # noqa: E402
from anchorprune.stages.workspace import Workspace  # noqa: E402
from recorded import command_line  # noqa: E402

log = logging.getLogger("debian_bench")
PARAMS = ROOT / "benchmarks" / "debian-bench.yaml"
OUT = ROOT / "benchmarks" / "results" / "debian_bench_encode.json"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=PARAMS)
    ap.add_argument("--chunk", type=int, default=256, help="pages encoded and cached per chunk")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    settings = load_settings(args.params)
    ws = Workspace(settings, project_root(args.params))
    result: dict = json.loads(args.out.read_text()) if args.out.exists() else {}

    t0 = time.perf_counter()
    existed = ws.dataset_dir.exists()
    _, manifest = build_dataset(settings, ws.root, cache_dir=ROOT / "cache" / "debs")
    build_s = time.perf_counter() - t0
    if not existed:
        result["build"] = {"seconds": round(build_s, 1), "dpi": settings.data.dpi}
    t0 = time.perf_counter()
    ws.check_dataset()
    validate_s = time.perf_counter() - t0
    dataset = ws.dataset
    pages = list(dataset.pages())
    bcfg = settings.backbones[0]
    backbone = ws.backbone(bcfg)
    cache = FeaturesCache(ws.features_dir)
    capture = LayerCapture.all()
    todo = missing_pages(ws.features_dir, backbone, pages, capture)   # existence only: nothing decoded
    log.info("%d pages, %d to encode (one per content)", len(pages), len(todo))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    tokens = 0
    for start in range(0, len(todo), args.chunk):
        chunk = todo[start:start + args.chunk]
        feats = cache.get_or_encode(backbone, chunk, capture, batch_size=bcfg.batch_size, progress=False)
        tokens += sum(f.num_tokens for f in feats)
        del feats
        done = start + len(chunk)
        el = time.perf_counter() - t0
        log.info("encoded %d/%d pages, %.2f s/page, eta %.0f min", done, len(todo), el / done,
                 el / done * (len(todo) - done) / 60)
    encode_s = time.perf_counter() - t0
    queries = dataset.queries
    t1 = time.perf_counter()
    QueryCache(ws.features_dir).get_or_encode(backbone, list(queries.values()))
    query_s = time.perf_counter() - t1
    docs = manifest.get("extra", {}).get("documents") or manifest.get("documents", {})
    result.update({
        "what": "Debian benchmark corpus: build and encode with the MiniLM text STAND-IN (not a vision model)",
        "command": command_line(__file__, argv if argv is not None else sys.argv[1:]),
        "dataset": settings.data.dataset, "pages": len(pages), "queries": len(queries),
        "documents": len(docs), "packages": manifest.get("revision"),
        "validate_seconds": round(validate_s, 1),
    })
    if todo:
        result["encode"] = {"pages_encoded": len(todo), "seconds": round(encode_s, 1),
                            "seconds_per_page": round(encode_s / len(todo), 3),
                            "cpu_seconds": round(time.process_time() - cpu0, 1),
                            "tokens_per_page": round(tokens / len(todo), 1), "torch_threads": args.threads,
                            "capture": "all layers", "query_seconds": round(query_s, 1)}
    result["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                         "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                         "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
