"""Capture overhead: plain forward vs one-pass SAP capture vs eager output_attentions.

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

Real size, ``--size real``: ColPali v1.3 dimensions (Gemma decoder 18 x 2048, 8 heads / 1 KV
head, head_dim 256, MLP 16384, S = 1,030 with the page prefix bidirectional; SigLIP 27 x 1152, MLP 4304,
1,024 patches) and ColQwen2 v1.0 dimensions (Qwen2-VL decoder 28 x 1536, 12 / 2 heads, head_dim 128,
MLP 8960, S = 773 for a Letter page at max_pixels 768 * 28^2 = 744 image tokens; ViT 32 x 1280 on 2,976
patches), random init, on this CPU. A full real-size forward costs ~5 TFLOP per page, minutes on two
shared cores, so the real-size figures are measured **per layer** at the real dimensions, with the
transformers classes themselves (a 1-layer text model with the real config, so the capture is installed
exactly as on the full model, and a 1-block vision tower), modes interleaved per round, and composed to the
full model: ``vision_blocks x t_vision + layers x t_plain + captured x (t_capture - t_plain)``. The capture
changes nothing but the captured layers' attention call, so this composition is exact up to timing noise.
Peak memory per layer is measured the same way; the model's weights (exact parameter count) are added for
the full-model figure. bf16 is used only where the CPU has native bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``).

    .venv/bin/python benchmarks/capture_overhead.py --size real --repeats 3   # adds "real_size" to the JSON

The per-layer figures are noisy on a loaded machine; ``--size real-attention`` times the capture's extra
work alone (one real-size attention call, stock SDPA vs the capture function) and recomposes the ratios:

    .venv/bin/python benchmarks/capture_overhead.py --size real-attention --repeats 3   # "real_size_attention"
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

from recorded import command_line

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


# ----------------------------------------------------------------------------------------------- real size
#: real dimensions (docs/checkpoints.md §1); windows are docs/method.md §1's v2
REAL = {
    "colpali-v1.3": dict(family="gemma", layers=18, hidden=2048, heads=8, kv_heads=1, head_dim=256,
                         intermediate=16384, seq=1030, vision_blocks=27, vision_hidden=1152, vision_heads=16,
                         vision_mlp=4304, patches=1024, v2=(11, 14), params=2_924_613_488),
    "colqwen2-v1.0": dict(family="qwen2vl", layers=28, hidden=1536, heads=12, kv_heads=2, head_dim=128,
                          intermediate=8960, seq=773, vision_blocks=32, vision_hidden=1280, vision_heads=16,
                          vision_mlp=5120, patches=2976, v2=(18, 23), params=2_209_182_336),
}
REAL_MODES = ["plain", "capture", "eager"]


def _randomise(model, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return model.eval()


def build_real(name: str, dtype):
    """``(text model with 1 decoder layer, its inputs, vision model with 1 block, its inputs)`` at real size."""
    import torch
    from transformers.initialization import no_init_weights

    d = REAL[name]
    g = torch.Generator().manual_seed(1)
    if d["family"] == "gemma":
        from transformers import GemmaConfig, GemmaModel, SiglipVisionConfig, SiglipVisionModel

        tcfg = GemmaConfig(hidden_size=d["hidden"], intermediate_size=d["intermediate"], num_hidden_layers=1,
                           num_attention_heads=d["heads"], num_key_value_heads=d["kv_heads"], head_dim=d["head_dim"],
                           vocab_size=1024, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
                           use_bidirectional_attention=True)          # PaliGemma: the page is the bidirectional prefix
        vcfg = SiglipVisionConfig(hidden_size=d["vision_hidden"], intermediate_size=d["vision_mlp"], num_hidden_layers=1,
                                  num_attention_heads=d["vision_heads"], image_size=448, patch_size=14,
                                  vision_use_head=False)
        with no_init_weights():
            text, vision = GemmaModel(tcfg), SiglipVisionModel(vcfg)
        vision_in = {"pixel_values": torch.randn(1, 3, 448, 448, generator=g).to(dtype)}
    else:
        from transformers import Qwen2VLConfig
        from transformers.models.qwen2_vl.modeling_qwen2_vl import (
            Qwen2VisionTransformerPretrainedModel,
            Qwen2VLTextModel,
        )

        cfg = Qwen2VLConfig(
            text_config=dict(hidden_size=d["hidden"], intermediate_size=d["intermediate"], num_hidden_layers=1,
                             num_attention_heads=d["heads"], num_key_value_heads=d["kv_heads"], vocab_size=1024,
                             max_position_embeddings=32768,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
            vision_config=dict(depth=1, embed_dim=d["vision_hidden"], hidden_size=d["hidden"], num_heads=d["vision_heads"],
                               mlp_ratio=4, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3))
        with no_init_weights():
            text, vision = Qwen2VLTextModel(cfg.text_config), Qwen2VisionTransformerPretrainedModel(cfg.vision_config)
        grid = torch.tensor([[1, 62, 48]])                               # Letter page at max_pixels: 744 * 4 patches
        assert int(grid.prod()) == d["patches"]
        vision_in = {"hidden_states": torch.randn(d["patches"], 3 * 2 * 14 * 14, generator=g).to(dtype),
                     "grid_thw": grid}
    text, vision = _randomise(text).to(dtype), _randomise(vision).to(dtype)
    seq = d["seq"]
    text_in = {"inputs_embeds": torch.randn(1, seq, d["hidden"], generator=g).to(dtype),
               "attention_mask": torch.ones(1, seq, dtype=torch.long)}
    visual = torch.zeros(1, seq, dtype=torch.bool)
    visual[0, :d["patches"] // (1 if d["family"] == "gemma" else 4)] = True    # image block (position only matters)
    if d["family"] != "gemma":
        visual = visual.roll(5, dims=1)                                          # after <|im_start|>user\n<|vision_start|>
    return text, text_in, vision, vision_in, visual


def real_forward_fn(mode: str, text, text_in, visual):
    import torch

    from anchorprune.backbones.capture import CaptureState, capturing, last_valid

    def forward():
        with torch.no_grad():
            if mode == "eager":
                return text(**text_in, output_attentions=True, use_cache=False).attentions
            if mode == "capture":
                state = CaptureState(visual=visual, last=last_valid(text_in["attention_mask"]))
                with capturing(text, [0], state):
                    text(**text_in, use_cache=False)
                assert 0 in state.centrality
                return state
            return text(**text_in, use_cache=False).last_hidden_state

    return forward


def run_real(name: str, repeats: int, threads: int) -> dict:
    """Per-layer times and peak RSS growth at real size, modes interleaved per round, composed to the model."""
    import copy

    import torch

    torch.set_num_threads(threads)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float32
    d = REAL[name]
    text, text_in, vision, vision_in, visual = build_real(name, dtype)
    eager = copy.deepcopy(text)
    eager.set_attn_implementation("eager")
    fns = {m: real_forward_fn(m, eager if m == "eager" else text, text_in, visual) for m in REAL_MODES}

    def vision_fn():
        with torch.no_grad():
            return vision(**vision_in)

    fns["vision_block"] = vision_fn
    for fn in fns.values():
        fn()                                                                     # warm-up
    times: dict[str, list[float]] = {m: [] for m in fns}
    peaks: dict[str, list[float]] = {m: [] for m in fns}
    for _ in range(repeats):
        for m, fn in fns.items():
            with PeakSampler() as s:
                t0 = time.perf_counter()
                out = fn()
                times[m].append(time.perf_counter() - t0)
            del out
            peaks[m].append((s.peak - s.base) / 2**20)
    med = {m: statistics.median(t) for m, t in times.items()}
    peak = {m: max(p) for m, p in peaks.items()}
    window = d["v2"][1] - d["v2"][0] + 1
    base = d["vision_blocks"] * med["vision_block"] + d["layers"] * med["plain"]
    cap_extra = med["capture"] - med["plain"]
    composed = {
        "plain_s": base,
        f"capture_v2_{window}_layers_s": base + window * cap_extra,
        f"capture_all_{d['layers']}_layers_s": base + d["layers"] * cap_extra,
        "eager_all_s": base + d["layers"] * (med["eager"] - med["plain"]),
    }
    weights_mib = d["params"] * torch.finfo(dtype).bits / 8 / 2**20
    act_plain = max(peak["plain"], peak["vision_block"])
    # eager keeps every layer's [H, S, S] map until the forward returns
    att_map_mib = d["heads"] * d["seq"] ** 2 * torch.finfo(dtype).bits / 8 / 2**20
    mem = {
        "weights_mib": weights_mib,
        "plain_mib": weights_mib + act_plain,
        "capture_mib": weights_mib + max(peak["capture"], peak["vision_block"]),
        "eager_all_mib": weights_mib + max(peak["eager"], peak["vision_block"]) + (d["layers"] - 1) * att_map_mib,
    }
    return {
        "dims": d, "dtype": str(dtype).replace("torch.", ""), "native_bf16": bf16, "threads": threads,
        "per_layer": {m: {"median_s": med[m], "times_s": times[m], "peak_extra_mib": peak[m]} for m in fns},
        "capture_extra_per_layer_s": cap_extra,
        "capture_extra_per_layer_ratio": med["capture"] / med["plain"],
        "composed_full_model": composed,
        "composed_time_ratio": {k: v / composed["plain_s"] for k, v in composed.items()},
        "composed_peak_memory_mib": mem,
        "composed_memory_ratio": {k: v / mem["plain_mib"] for k, v in mem.items() if k != "weights_mib"},
    }


def run_real_attention(name: str, repeats: int, threads: int) -> dict:
    """The capture's extra work alone at real size: one layer's attention call, stock SDPA vs the capture
    function (SDPA + the chunked reduction), on real-size q / k / v, interleaved, ``4 * repeats`` rounds."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from anchorprune.backbones.capture import _STATE_ATTR, CaptureState, capture_attention_forward

    torch.set_num_threads(threads)
    d = REAL[name]
    g = torch.Generator().manual_seed(2)
    seq, h, kv, hd = d["seq"], d["heads"], d["kv_heads"], d["head_dim"]
    q = torch.randn(1, h, seq, hd, generator=g)
    k, v = torch.randn(1, kv, seq, hd, generator=g), torch.randn(1, kv, seq, hd, generator=g)
    gemma = d["family"] == "gemma"
    mask = torch.ones(1, 1, seq, seq, dtype=torch.bool) if gemma else None     # bidirectional page / causal
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = not gemma, h // kv
    visual = torch.zeros(1, seq, dtype=torch.bool)
    n_vis = d["patches"] // (1 if gemma else 4)
    visual[0, (0 if gemma else 5):(0 if gemma else 5) + n_vis] = True
    state = CaptureState(visual=visual, last=torch.tensor([seq - 1]))
    fns = {"sdpa": lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=hd ** -0.5),
           "capture": lambda: capture_attention_forward(module, q, k, v, mask, scaling=hd ** -0.5)}
    setattr(module, _STATE_ATTR, (state, 0))
    times: dict[str, list[float]] = {m: [] for m in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(4 * repeats):
            for m, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(t) for m, t in times.items()}
    return {"seq": seq, "visual_rows": n_vis, "heads": h, "kv_heads": kv, "head_dim": hd,
            "median_s": med, "times_s": times, "capture_extra_per_layer_s": med["capture"] - med["sdpa"]}


def main_real_attention(args) -> None:
    results = {}
    for name in args.models.split(","):
        out = subprocess.run([sys.executable, __file__, "--mode", f"real-attention:{name}", "--repeats",
                              str(args.repeats), "--threads", str(args.threads)], capture_output=True, text=True,
                             check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]["median_s"]), flush=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    real = data.get("real_size", {}).get("models", {})
    for name, r in results.items():
        if name in real:      # recompose with the directly measured extra work per captured layer
            m = real[name]
            d = REAL[name]
            base = m["composed_full_model"]["plain_s"]
            window = d["v2"][1] - d["v2"][0] + 1
            r["composed_time_ratio_from_attention_extra"] = {
                f"capture_v2_{window}_layers": 1 + window * r["capture_extra_per_layer_s"] / base,
                f"capture_all_{d['layers']}_layers": 1 + d["layers"] * r["capture_extra_per_layer_s"] / base,
            }
    data["real_size_attention"] = {
        "command": command_line(__file__, sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": args.load_at_start, "loadavg_at_end": os.getloadavg()},
        "method": "one decoder layer's attention call at real size (random q/k/v, fp32): stock SDPA vs the capture "
                  "function; the difference is the capture's whole extra work per captured layer, measured without "
                  "the MLP and projections whose run-to-run noise dominates the per-layer figures",
        "models": results,
    }
    RESULTS.write_text(json.dumps(data, indent=2))


def main_real(args) -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")  # freed blocks leave RSS
    results = {}
    for name in args.models.split(","):
        out = subprocess.run([sys.executable, __file__, "--mode", f"real:{name}", "--repeats", str(args.repeats),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True, env=env)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[name]
        print(name, json.dumps({"per_layer_median_s": {m: v["median_s"] for m, v in r["per_layer"].items()},
                                "composed_time_ratio": r["composed_time_ratio"],
                                "composed_memory_ratio": r["composed_memory_ratio"]}, indent=1), flush=True)
    summary = {}
    for name, r in results.items():
        for k, v in r["composed_time_ratio"].items():
            summary[f"{name}:{k.removesuffix('_s')}_time_ratio"] = v
        for k, v in r["composed_memory_ratio"].items():
            summary[f"{name}:{k.removesuffix('_mib')}_memory_ratio"] = v
        win = next(k for k in r["composed_time_ratio"] if k.startswith("capture_v2"))
        summary[f"{name}:capture_v2_within_5pct_time"] = r["composed_time_ratio"][win] <= 1.05
        summary[f"{name}:capture_within_10pct_memory"] = r["composed_memory_ratio"]["capture_mib"] <= 1.10
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["real_size"] = {
        "command": command_line(__file__, sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": args.load_at_start, "loadavg_at_end": os.getloadavg(),
                    "note": "shared 2-core machine; six other engineers' test runs were active"},
        "method": "random init at the real dimensions; per layer (1-layer text model with the real config, "
                  "1-block vision tower), modes interleaved per round, --repeats rounds, median; composed to "
                  "the full model (vision_blocks x vision + layers x plain + captured x capture extra); "
                  "memory = exact weight bytes + measured per-layer peak RSS growth (+ the [H, S, S] maps eager "
                  "keeps for every other layer). Not a full real-size forward (minutes per page on this CPU).",
        "target": "capture of the v2 window within 5% of plain SDPA time; peak memory within 10% of plain",
        "models": results, "summary": summary,
    }
    if "model" in data and "small_model" not in data:
        data["small_model_note"] = ("the top-level figures (command, model, interleaved, alone, summary) are the "
                                    "SMALL random-init model (hidden 512, 8 layers), from the small-size run")
    RESULTS.write_text(json.dumps(data, indent=2))
    print(json.dumps(summary, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", choices=["small", "real", "real-attention"], default="small",
                    help="small: the hidden-512 8-layer model (whole forward); real: real-size per-layer figures; "
                         "real-attention: the capture's extra work alone, one real-size attention call")
    ap.add_argument("--models", default=",".join(REAL), help="real size: which of " + ", ".join(REAL))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode and args.mode.startswith("real-attention:"):
        print(json.dumps(run_real_attention(args.mode.split(":", 1)[1], args.repeats, args.threads)))
        return
    if args.size == "real-attention":
        args.load_at_start = os.getloadavg()
        main_real_attention(args)
        return
    if args.mode and args.mode.startswith("real:"):
        print(json.dumps(run_real(args.mode.split(":", 1)[1], args.repeats, args.threads)))
        return
    if args.size == "real":
        args.load_at_start = os.getloadavg()
        main_real(args)
        return
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
    keep = {k: v for k, v in (json.loads(RESULTS.read_text()) if RESULTS.exists() else {}).items()
            if k == "real_size"}
    RESULTS.write_text(json.dumps({
        "command": command_line(__file__, sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "model": "random-init ColPaliForRetrieval: text hidden 512, 8 layers, 8 q-heads / 1 kv-head, fp32, CPU",
        "time_ratios_from": "one process, modes interleaved per round (--repeats rounds); peak memory from one "
                            "subprocess per mode",
        "interleaved": inter, "alone": results, "summary": summary, **keep,
    }, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
