"""Capture overhead: plain forward vs one-pass SAP capture vs eager output_attentions (issue #4).

A randomly initialised ColPali-shaped model (ColPaliForRetrieval from a config: 1,024 image tokens
+ prompt ~ 1,030 tokens, 8 text layers, hidden 512, 8 query heads / 1 KV head) on CPU, fp32.
Each mode runs in its own subprocess so peak memory is its own:

  (a) plain SDPA forward
  (b) window-only capture of 2 or 4 layers (anchorprune.backbones.capture)
  (c) eager attention with output_attentions=True on every layer

Time ratios come from one process that runs the modes interleaved, round after round (so load on
a shared machine drifts over all modes alike); peak RSS growth above the resident size before the
forward (sampled every 1 ms from /proc/self/statm) comes from one subprocess per mode.

    .venv/bin/python benchmarks/capture_overhead.py            # writes benchmarks/results/capture_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "capture_overhead.json"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakSampler:
    def __init__(self) -> None:
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())


MODES = ["plain", "capture_2", "capture_4", "eager_all"]


def build(threads: int):
    import PIL.Image
    import torch

    from anchorprune.backbones.tiny import tiny_colpali

    torch.set_num_threads(threads)
    model, proc = tiny_colpali(hidden=512, layers=8, heads=8, kv_heads=1, image_size=448, patch=14,
                               embedding_dim=128)
    batch = dict(proc(images=[PIL.Image.new("RGB", (448, 448), (120, 60, 200))], return_tensors="pt"))
    visual = batch["input_ids"] == model.config.vlm_config.image_token_index
    return model, batch, visual


def forward_fn(mode: str, model, batch, visual):
    """A no-grad forward in ``mode``; ``model`` must already use eager attention for eager_all."""
    import torch

    from anchorprune.backbones.capture import CaptureState, capturing, last_valid

    layers = {"capture_2": [3, 4], "capture_4": [2, 3, 4, 5]}.get(mode, [])

    def forward():
        with torch.no_grad():
            if mode == "eager_all":
                out = model(**batch, output_attentions=True)
                return out.embeddings, out.attentions
            if layers:
                state = CaptureState(visual=visual, last=last_valid(batch["attention_mask"]))
                with capturing(model, layers, state):
                    emb = model(**batch).embeddings
                return emb, state
            return model(**batch).embeddings

    return forward


def run_mode(mode: str, repeats: int, threads: int) -> dict:
    """Peak RSS growth (and times) of one mode alone in this process."""
    model, batch, visual = build(threads)
    if mode == "eager_all":
        model.set_attn_implementation("eager")
    forward = forward_fn(mode, model, batch, visual)
    forward()  # warm-up
    times, peaks = [], []
    for _ in range(repeats):
        with PeakSampler() as s:
            t0 = time.perf_counter()
            result = forward()
            times.append(time.perf_counter() - t0)
        del result
        peaks.append(s.peak - s.base)
    return {"mode": mode, "seq_len": int(batch["input_ids"].shape[1]), "visual_tokens": int(visual.sum()),
            "median_s": statistics.median(times), "times_s": times, "peak_extra_mib": max(peaks) / 2**20}


def run_interleaved(repeats: int, threads: int) -> dict:
    """Times of every mode in one process, modes interleaved per round (machine-load drift hits all alike)."""
    import copy

    model, batch, visual = build(threads)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    fns = {m: forward_fn(m, eager if m == "eager_all" else model, batch, visual) for m in MODES}
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(repeats):
        for m in MODES:
            t0 = time.perf_counter()
            fns[m]()
            times[m].append(time.perf_counter() - t0)
    return {m: {"median_s": statistics.median(t), "min_s": min(t), "times_s": t} for m, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "interleaved":
        print(json.dumps(run_interleaved(args.repeats, args.threads)))
        return
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.repeats, args.threads)))
        return

    def sub(mode: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--repeats", str(args.repeats),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    results = {}
    for mode in MODES:
        results[mode] = sub(mode)
        print(f"{mode:10s} alone: median {results[mode]['median_s']:.3f} s   "
              f"peak +{results[mode]['peak_extra_mib']:.0f} MiB", flush=True)
    inter = sub("interleaved")
    for mode in MODES:
        print(f"{mode:10s} interleaved: median {inter[mode]['median_s']:.3f} s  min {inter[mode]['min_s']:.3f} s",
              flush=True)
    plain, plain_min = inter["plain"]["median_s"], inter["plain"]["min_s"]
    summary = {f"{m}_time_ratio": inter[m]["median_s"] / plain for m in MODES[1:]}
    summary.update({f"{m}_time_ratio_min": inter[m]["min_s"] / plain_min for m in MODES[1:]})
    summary.update({f"{m}_peak_extra_mib": results[m]["peak_extra_mib"] for m in MODES})
    summary["target"] = "capture of 2-4 layers within 1.15x of plain; peak memory far below eager_all"
    summary["capture_2_within_15pct"] = summary["capture_2_time_ratio"] <= 1.15
    summary["capture_4_within_15pct"] = summary["capture_4_time_ratio"] <= 1.15
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/capture_overhead.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "model": "random-init ColPaliForRetrieval: text hidden 512, 8 layers, 8 q-heads / 1 kv-head, fp32, CPU",
        "time_ratios_from": "one process, modes interleaved per round (--repeats rounds); peak memory from one "
                            "subprocess per mode",
        "interleaved": inter, "alone": results, "summary": summary,
    }, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
