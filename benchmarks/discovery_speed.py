"""Discovery of a whole model: the top-k directions of every self-attention layer, timed and checked against the
full decomposition, on random-initialised copies of two architectures (no download):

- the Stable Diffusion 1.5 UNet (UNet2DConditionModel, 860M parameters, its 16 self-attention ``attn1`` layers of
  320, 640 and 1280 channels);
- a Flux-shaped transformer scaled in width (FluxTransformer2DModel with Flux.1's 19 double-stream and 38
  single-stream blocks and 24 heads, head dimension 32 instead of 128: 768 channels instead of 3072).

    python -m benchmarks.discovery_speed [--repeats 5] [-k 5 10] [--threads N] [--skip-full]

Each timing is one call of ``compute_directions`` per layer with k, cold (the in-memory cache cleared, no disk
cache), including reading and hashing the weights; the median of ``--repeats`` runs in this one process is
reported against the 1 s target, with the process's CPU seconds (on one thread, ``--threads 1``, the wall time a
machine with a free core would give; on shared cores the wall time is longer). "cached" is a second call (reading
and hashing the weights, then the in-memory cache). "full" is the float64 eigh/SVD of the whole matrices that
discovery used before (one run). Accuracy, per decomposition and k, over all layers: the largest relative error
of the top-k values and the smallest |cos| between a fast vector and the full decomposition's vector of the same
rank. Random initialisation gives flat spectra with tiny gaps between neighbouring eigenvalues: the hardest case
for a top-k solver. Writes results/discovery_speed.json (with the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from eigenedit.core import cache
from eigenedit.core.attention import self_attention_modules
from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS

OUTPUT = Path(__file__).resolve().parent.parent / "results" / "discovery_speed.json"
TARGET_S = 1.0


def sd15_unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(cross_attention_dim=768).eval()  # the defaults are SD 1.5's other settings


def flux_scaled() -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        num_layers=19,
        num_single_layers=38,
        num_attention_heads=24,
        attention_head_dim=32,
        joint_attention_dim=768,
        pooled_projection_dim=768,
        axes_dims_rope=(4, 14, 14),
        guidance_embeds=True,
    ).eval()


def discover(net: torch.nn.Module, layers: list[str], decomposition: str, k: int | None, solver: str) -> list:
    return [compute_directions(net, name, decomposition, k=k, solver=solver, cache=True) for name in layers]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed_cpu(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    cpu = time.process_time()
    wall, out = timed(fn)
    return wall, time.process_time() - cpu, out


def accuracy(fast: list, full: list, k: int) -> dict:
    """Worst value error and |cos| over layers, each fast pair matched to the full pair of nearest value among the
    top 2k (qk's spectrum holds +lambda / -lambda pairs of nearly equal |value| that may swap rank); and the worst
    error of the k-th largest |value| (did the fast solver find the right top k?)."""
    worst_value, worst_cos, worst_kth = 0.0, 1.0, 0.0
    for f, g in zip(fast, full, strict=True):
        n = min(len(f), k)
        ref_values, ref_vectors = g.values[: 2 * k].double(), g.vectors[: 2 * k].double()
        for value, vector in zip(f.values[:n].double(), f.vectors[:n].double(), strict=True):
            j = int((ref_values - value).abs().argmin())
            worst_value = max(worst_value, ((value - ref_values[j]).abs() / ref_values[j].abs()).item())
            worst_cos = min(worst_cos, (vector @ ref_vectors[j]).abs().item())
        kth = (f.values[n - 1].abs().double() - g.values[n - 1].abs().double()).abs() / g.values[n - 1].abs()
        worst_kth = max(worst_kth, kth.item())
    return {"max_rel_value_error": worst_value, "min_abs_cos": worst_cos, "max_rel_kth_abs_value_error": worst_kth}


def run_model(name: str, net: torch.nn.Module, ks: list[int], repeats: int, skip_full: bool) -> dict:
    layers = list(self_attention_modules(net))
    channels = sorted({m.to_q.in_features for m in self_attention_modules(net).values()})
    params = sum(p.numel() for p in net.parameters())
    print(f"\n{name}: {len(layers)} self-attention layers, channels {channels}, {params / 1e6:.0f}M parameters")
    print(
        f"{'decomposition':14s} {'k':>4s} {'fast median s':>14s} {'/ target':>9s} {'cpu s':>7s} {'cached s':>9s} "
        f"{'full s':>8s} {'max rel value err':>18s} {'min |cos|':>10s}"
    )
    out = {"layers": len(layers), "channels": channels, "parameters": params, "results": []}
    for decomposition in DECOMPOSITIONS:
        full_s, full = None, None
        if not skip_full:
            cache.clear_memory()
            full_s, full = timed(lambda d=decomposition: discover(net, layers, d, None, "full"))
        for k in ks:
            times, cpu_times = [], []
            for _ in range(repeats):
                cache.clear_memory()
                elapsed, cpu, fast = timed_cpu(lambda d=decomposition, k=k: discover(net, layers, d, k, "fast"))
                times.append(elapsed)
                cpu_times.append(cpu)
            cached_s, _ = timed(lambda d=decomposition, k=k: discover(net, layers, d, k, "fast"))
            median = statistics.median(times)
            row = {
                "decomposition": decomposition,
                "k": k,
                "fast_median_s": median,
                "fast_times_s": times,
                "fast_cpu_median_s": statistics.median(cpu_times),
                "cached_s": cached_s,
                "full_s": full_s,
            }
            if full is not None:
                row.update(accuracy(fast, full, k))
            out["results"].append(row)
            acc = f"{row['max_rel_value_error']:18.1e} {row['min_abs_cos']:10.5f}" if full is not None else ""
            full_txt = f"{full_s:8.2f}" if full_s is not None else f"{'-':>8s}"
            print(
                f"{decomposition:14s} {k:4d} {median:14.3f} {median / TARGET_S:9.2f} "
                f"{row['fast_cpu_median_s']:7.3f} {cached_s:9.3f} {full_txt} {acc}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-k", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-full", action="store_true", help="skip the slow full decompositions (no accuracy)")
    parser.add_argument("--models", nargs="+", default=["sd15", "flux-scaled"], choices=["sd15", "flux-scaled"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache.set_cache_dir(None)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "loadavg_start": os.getloadavg(),
        },
        "target_s": TARGET_S,
        "repeats": args.repeats,
        "models": {},
    }
    builders = {"sd15": ("SD-1.5-shaped UNet", sd15_unet), "flux-scaled": ("Flux-shaped transformer", flux_scaled)}
    for key in args.models:
        label, build = builders[key]
        report["models"][label] = run_model(label, build(), args.k, args.repeats, args.skip_full)
    report["machine"]["loadavg_end"] = os.getloadavg()
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
