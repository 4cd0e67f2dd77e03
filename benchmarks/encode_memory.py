"""Peak memory of ``anchorprune encode`` with the default runner (Dask, local cluster), at two corpus sizes.

What runs is the command a user runs: ``anchorprune encode`` in a child process, on a throwaway
project (its own params.yaml, a fresh features cache so every page is encoded) with
``encode.runner: dask`` and ``encode.workers`` (default 2). While it runs, every process of its tree
(the client, the Dask nannies and workers, a Prefect server if one is started) is sampled from
``/proc/<pid>/status`` twice a second; the figure is the peak of the *sum* over the tree, with
anonymous (``RssAnon``: heaps, tensors) and file-backed (``RssFile``: mapped libraries, torch's .so
files, shared between processes but counted once per process here) memory apart.

Corpora:

- ``large``: the 677-page demo variant (R manuals, ``anchorprune.data.demo``);
- ``debian``: a slice of the Debian documentation corpus (``anchorprune.data.debian_bench``:
  ``r-doc-pdf``, then ``gnuplot-doc`` and ``octave-doc``, downloaded with ``apt-get download`` as
  needed), whole PDFs in package order, at most ``--per-doc`` pages each, until ``--pages`` pages;
- ``debian-bench``: the whole 10,749-page benchmark corpus of ``benchmarks/debian-bench.yaml`` (build it
  first with ``benchmarks/debian_bench.py``), encoded into the project's own features cache
  (``cache/features``) instead of a throwaway one, so the later benchmarks read its pages back. Pages
  already cached are skipped (the run records how many it encoded);
- ``debian-bench-subset``: ``--pages`` pages of that corpus, drawn exactly as
  ``quality_demo.py --variant debian --pages N`` draws them (every relevant page of its 500 evaluation
  and 300 calibration queries, then seeded fill), written as a dataset of its own with the same page
  contents, so the pages it encodes into ``cache/features`` are the ones that benchmark reads.

Every run also records a timeline: the peak so far each time the pages written to the cache pass
677, 2,000, 5,000 and 10,000, so one long run shows whether the peak grows with the corpus.

The target: the peak is flat from 677 to >= 2,000 pages (shards are page references; workers read
their own pages; nothing per page stays in memory) and at most 3 GB at 2 workers.

Run (it takes a while; the machine is shared)::

    nice -n 10 .venv/bin/python benchmarks/encode_memory.py --corpus large debian --pages 2048

Writes ``benchmarks/results/encode_memory.json`` (``--out``).
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
import threading
import time
from pathlib import Path

import yaml

from recorded import command_line

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "cache" / "bench-memory"


def cpu_flags() -> dict:
    info = {"cpus": os.cpu_count(), "machine": platform.machine(), "load_avg_start": os.getloadavg()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and "model" not in info:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                info["flags"] = [f for f in flags if f.startswith(("avx", "sse4", "fma", "amx", "f16c"))]
                break
    except OSError:
        pass
    return info


def build_large(data_root: Path) -> Path:
    from anchorprune.data.demo import build_demo

    if not (data_root / "large").exists():
        build_demo(data_root, name="large", variant="large", dpi=100, cache_dir=ROOT / "cache" / "debs")
    return data_root / "large"


def build_debian_slice(data_root: Path, pages: int, per_doc: int, dpi: int = 60) -> Path:
    """Whole PDFs of r-doc-pdf, gnuplot-doc, octave-doc (in that order, ``per_doc`` pages at most) to ``pages``."""
    import warnings

    from anchorprune.data.debian_bench import PACKAGES, SKIP, bench_doc_id
    from anchorprune.data.demo import download_deb, extract_deb
    from anchorprune.data.pdfs import NoOutlineWarning, add_pdf
    from anchorprune.data.schema import DatasetWriter
    from anchorprune.data.versioning import build_staged

    name = f"debian-{pages}-{per_doc}"
    if (data_root / name).exists():
        return data_root / name

    def build(staging: Path):
        writer = DatasetWriter(staging, grayscale=True)
        docs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoOutlineWarning)
            for package in ("r-doc-pdf", "gnuplot-doc", "octave-doc"):
                root = extract_deb(download_deb(ROOT / "cache" / "debs", package), ROOT / "cache" / "debs",
                                   PACKAGES[package])
                for pdf in sorted(root.rglob("*.pdf")):
                    rel = pdf.relative_to(root)
                    if writer.num_pages >= pages:
                        break
                    if (package, str(rel)) in SKIP or pdf.is_symlink() or pdf.stat().st_size == 0:
                        continue
                    doc = bench_doc_id(package, rel)
                    st = add_pdf(writer, pdf, dpi=dpi, blank_titles=True, blank_scope="target",
                                 max_pages=min(per_doc, pages - writer.num_pages), doc_id=doc)
                    docs[doc] = st.pages
        return writer.finish(name=name, source="debian-slice", revision="local",
                             extra={"documents_pages": docs, "dpi": dpi})

    build_staged(data_root, name, build)
    return data_root / name


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (from /proc/*/stat's ppid)."""
    parent: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parent.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parent.get(p, [])
    return out


def rss(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) in KiB: the library's own reading of /proc (``features.encoding.proc_rss_kb``)."""
    from anchorprune.features.encoding import proc_rss_kb

    return proc_rss_kb(pid)


def cmd_role(pid: int, root_pid: int) -> str:
    if pid == root_pid:
        return "client"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "uvicorn" in cmd or "prefect" in cmd and "server" in cmd:
        return "prefect-server"
    return "worker" if "multiprocessing" in cmd or "spawn" in cmd or "forkserver" in cmd else "other"


MILESTONES = (677, 2000, 5000, 10000)


class Sampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.5, features: Path | None = None, already: int = 0):
        super().__init__(daemon=True)
        self.pid, self.period, self.stop = pid, period, threading.Event()
        self.features, self.already, self.t0 = features, already, time.perf_counter()
        self.timeline: list[dict] = []          # the peak so far as the encoded pages pass each milestone
        self._next_count = 0.0
        self.peak = {"total_kb": 0, "anon_kb": 0, "file_kb": 0, "processes": 0}
        self.peak_by_role: dict[str, dict[str, int]] = {}
        self.samples = 0
        self.last_pids: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            anon = file = 0
            by_role: dict[str, list[int]] = {}
            pids = tree(self.pid)
            if len(pids) > 1:
                self.last_pids = pids
            for p in pids:
                a, f = rss(p)
                anon, file = anon + a, file + f
                r = by_role.setdefault(cmd_role(p, self.pid), [0, 0, 0])
                r[0], r[1], r[2] = r[0] + a, r[1] + f, r[2] + 1
            self.samples += 1
            if anon + file > self.peak["total_kb"]:
                self.peak = {"total_kb": anon + file, "anon_kb": anon, "file_kb": file, "processes": len(pids)}
            for role, (a, f, n) in by_role.items():
                cur = self.peak_by_role.setdefault(role, {"anon_kb": 0, "file_kb": 0, "processes": 0})
                cur["anon_kb"], cur["file_kb"] = max(cur["anon_kb"], a), max(cur["file_kb"], f)
                cur["processes"] = max(cur["processes"], n)
            self._milestones()
            self.stop.wait(self.period)

    def _milestones(self) -> None:
        """Every 10 s: count the pages written so far; note the peak when a milestone is passed."""
        now = time.perf_counter()
        if self.features is None or now < self._next_count:
            return
        self._next_count = now + 10.0
        done = count_entries(self.features) - self.already
        passed = {m["pages_at_least"] for m in self.timeline}
        for m in MILESTONES:
            if done >= m and m not in passed:
                self.timeline.append({"pages_at_least": m, "pages_encoded": done,
                                      "elapsed_s": round(now - self.t0, 1),
                                      "peak_total_mb_so_far": round(self.peak["total_kb"] / 1024)})


def count_entries(features: Path) -> int:
    """Page entries written to the features cache (query entries excluded)."""
    return sum(1 for f in features.rglob("*.pt") if "queries" not in f.parts) if features.exists() else 0


BENCH_PARAMS = ROOT / "benchmarks" / "debian-bench.yaml"


def debian_bench_dataset() -> Path:
    """The whole benchmark corpus, as ``benchmarks/debian_bench.py`` built it."""
    paths = yaml.safe_load(BENCH_PARAMS.read_text())["paths"]
    ds = (BENCH_PARAMS.parent / paths["data_dir"]).resolve() / "debian-bench"
    if not (ds / "corpus.parquet").exists():
        raise SystemExit(f"{ds} is not built: run benchmarks/debian_bench.py first (it builds, then encodes)")
    return ds


def debian_bench_subset(data_root: Path, pages: int, queries: int = 500, calibration_queries: int = 300,
                        calibration_fraction: float = 0.3, seed: int = 0) -> Path:
    """The pages ``quality_demo.py --variant debian --pages N`` reads (same seeded draw, see its
    ``debian_source``), plus the calibration queries' relevant pages, as a dataset folder of their own."""
    import numpy as np

    from anchorprune.data.schema import DatasetWriter, load_dataset_dir, split_queries
    from anchorprune.data.versioning import build_staged

    name = f"debian-bench-subset-{pages}"
    if (data_root / name / "corpus.parquet").exists():
        return data_root / name
    src = load_dataset_dir(debian_bench_dataset())
    calib_all, eval_all = split_queries(src, calibration_fraction, seed=seed)
    rng = np.random.default_rng(seed)
    eval_q = sorted(rng.choice(eval_all, min(queries, len(eval_all)), replace=False).tolist())
    calib_q = sorted(rng.choice(calib_all, min(calibration_queries, len(calib_all)), replace=False).tolist())
    all_ids = list(src.page_ids)
    known = set(all_ids)
    gold = {p for q in eval_q for p, r in src.qrels[q].items() if r > 0 and p in known}
    rest = sorted(known - gold)
    extra = set(rng.choice(rest, max(0, pages - len(gold)), replace=False).tolist())
    calib_gold = {p for q in calib_q for p, r in src.qrels[q].items() if r > 0 and p in known}
    keep = gold | extra | calib_gold

    def build(staging: Path):
        writer = DatasetWriter(staging, grayscale=True)
        for row in src.corpus[src.corpus["page_id"].isin(keep)].itertuples(index=False):
            data = (src.path / row.image_path).read_bytes() if isinstance(row.image_path, str) else None
            text = row.text if isinstance(row.text, str) else None
            writer.add_page(row.page_id, data, text=text, source_doc=row.source_doc, page_number=row.page_number)
        for q in eval_q + calib_q:
            writer.add_query(q, src.queries[q])
            for pid, rel in src.qrels[q].items():
                if pid in keep:
                    writer.add_qrel(q, pid, rel)
        return writer.finish(name=name, source=src.manifest["source"], revision=src.manifest["revision"],
                             extra={**src.manifest["extra"], "subset_of": "debian-bench", "subset_pages": len(keep),
                                    "subset_draw": f"quality_demo --variant debian --pages {pages} --queries "
                                                   f"{queries} --calibration-queries {calibration_queries}"})

    build_staged(data_root, name, build)
    return data_root / name


def run_encode(dataset: Path, workers: int, shard_pages: int, max_seconds: float | None = None,
               bench: bool = False) -> dict:
    proj = Path(tempfile.mkdtemp(prefix="encmem-", dir=WORK))
    params = yaml.safe_load(((BENCH_PARAMS if bench else ROOT / "params.yaml")).read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    features = (ROOT / "cache" / "features") if bench else proj / "features"
    params["paths"] = {"data_dir": str(dataset.parent), "features_dir": str(features),
                       "index_dir": str(proj / "indexes"), "reports_dir": str(proj / "reports"),
                       "validation_dir": str(WORK / "validation")}
    for section in ("encode", "tracking"):
        params.setdefault(section, base[section])
    params["data"]["dataset"] = dataset.name
    if dataset.name == "large":        # what the dataset was built from (a source change is refused)
        params["data"]["demo_variant"] = "large"
    params["encode"] = {**params["encode"], "runner": "dask", "workers": workers, "shard_pages": shard_pages}
    params["tracking"] = {**params["tracking"], "uri": f"sqlite:///{proj}/mlflow.db",
                          "artifact_root": str(proj / "artifacts")}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    (proj / "flows").symlink_to(ROOT / "flows")      # the CLI runs the flows next to the params file
    env = {**os.environ, "PREFECT_HOME": str(proj / ".prefect"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from anchorprune.cli import app; app()", "encode", "--params",
           str(proj / "params.yaml")]
    t0 = time.perf_counter()
    log = proj / "encode.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=proj, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        already = count_entries(features)
        sampler = Sampler(proc.pid, features=features, already=already)
        sampler.start()
        interrupted = False
        try:
            proc.wait(timeout=max_seconds)
        except subprocess.TimeoutExpired:      # a partial run: stop it as a user would (Ctrl-C), then count
            interrupted = True
            stop_t = time.perf_counter()
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    left = [p for p in sampler.last_pids if p != proc.pid and Path(f"/proc/{p}").exists()]
    out = log.read_text(errors="replace")
    shutil.copy(log, WORK / f"{dataset.name}.log")     # the console output, kept outside the repository
    pages = count_entries(features) - already
    encode_wall = (stop_t - t0) if interrupted else wall
    shutil.rmtree(proj, ignore_errors=True)
    mb = 1024
    return {
        "returncode": proc.returncode, "interrupted_after_s": max_seconds if interrupted else None,
        "corpus_pages": len(__import__("pandas").read_parquet(dataset / "corpus.parquet", columns=["page_id"])),
        "pages_encoded": pages, "pages_cached_before": already, "wall_s": round(wall, 1),
        "features_cache": "the project's cache/features (kept)" if bench else "throwaway (removed)",
        "timeline": sampler.timeline,
        "pages_per_s": round(pages / encode_wall, 3) if encode_wall else None,
        "processes_left_after_exit": len(left),
        "peak_total_mb": round(sampler.peak["total_kb"] / mb), "peak_anon_mb": round(sampler.peak["anon_kb"] / mb),
        "peak_file_mb": round(sampler.peak["file_kb"] / mb), "processes_at_peak": sampler.peak["processes"],
        "peak_by_role_mb": {r: {"anon": round(v["anon_kb"] / mb), "file": round(v["file_kb"] / mb),
                                "processes": v["processes"]} for r, v in sampler.peak_by_role.items()},
        "samples": sampler.samples, "log": f"cache/bench-memory/{dataset.name}.log",
        "tracebacks_in_output": out.count("Traceback"), "comm_closed_in_output": out.count("CommClosedError"),
        "distributed_info_lines": sum(1 for ln in out.splitlines() if "INFO" in ln and "distributed." in ln),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", nargs="+", default=["large", "debian"], choices=["large", "debian", "debian-bench", "debian-bench-subset"])
    ap.add_argument("--pages", type=int, default=2048, help="pages of the debian slice")
    ap.add_argument("--per-doc", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-pages", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop each encode (SIGINT) after this long and count what it wrote (a shared, slow machine)")
    ap.add_argument("--merge", action="store_true", help="keep the other corpora's runs already in --out")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encode_memory.json")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    data_root = WORK / "data"
    result = {"command": command_line(__file__, sys.argv[1:], prefix="nice -n 10"), "cpu": cpu_flags(),
              "date": time.strftime("%Y-%m-%d"), "workers": args.workers, "shard_pages": args.shard_pages,
              "runs": {}}
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        result["runs"] = {k: {f: v for f, v in r.items() if f != "output_tail"}
                          for k, r in previous.get("runs", {}).items()}
        result["commands"] = {**{c: previous["command"] for c in previous.get("runs", {}) if "command" in previous},
                              **previous.get("commands", {})}     # a run's own recorded command wins
    for corpus in args.corpus:
        ds = (build_large(data_root) if corpus == "large" else debian_bench_dataset() if corpus == "debian-bench"
              else debian_bench_subset(data_root, args.pages) if corpus == "debian-bench-subset"
              else build_debian_slice(data_root, args.pages, args.per_doc))
        print(f"{corpus}: encoding {ds}", flush=True)
        result["runs"][corpus] = run_encode(ds, args.workers, args.shard_pages, args.max_seconds,
                                            bench=corpus.startswith("debian-bench"))
        result.setdefault("commands", {})[corpus] = result["command"]
        print(json.dumps(result["runs"][corpus]), flush=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    result["load_avg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
