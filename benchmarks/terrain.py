"""Terrain edits along attention-weight directions of the pretrained terrain model (adaptive-terrain-diffusion).

    python benchmarks/terrain.py [--seeds 16] [--screen-seeds 3] [--layers NAME ...] [--output-dir results]

Every edit is one forward pass: the model is a one-step consistency model (one DDIM step from t = 999), and the
direction is added at the output of one attention block (alpha * ||h|| * u, see eigenedit.editing).

Statistics of a heightmap h in metres (lowest point at 0; pixels 0.1 m apart, the package's default scale):
- elevation: mean height (m).
- roughness: standard deviation of the high-pass residual h - G_4 * h (m); G_s is a Gaussian blur of s pixels.
- slope: mean gradient magnitude |grad h| (central differences; m per m).
- ridges: ridge density, the fraction of pixels where the convex curvature k = -laplacian(G_1 * h) is positive
  and the largest in its 3x3 neighbourhood (crest lines and peaks).

Steps:
1. parity: the PyTorch port against onnxruntime (if installed) on the same inputs, and one DDIM step against the
   package's one-step sample D(sigma_max z, sigma_max).
2. plain samples for all seeds; a statistic's unit is its standard deviation across them.
3. alpha per layer: the strength at which the layer's first random direction changes the heightmap by 0.04 (mean
   |delta| in model space [-1, 1]), measured at alpha = 1 on the screen seeds and scaled linearly. Weight and
   random directions of a layer are compared at the same alpha.
4. screen: top direction of qk, ov-left and a random direction at each candidate layer, alpha = +-A, screen seeds.
5. main: at the layer with the most monotonic weight-direction effects (then the largest effect over random),
   the top 2 directions of every decomposition and 2 random directions, alpha = +-A, all seeds.
An effect is the mean over seeds of (statistic(edited) - statistic(plain)) in units of the statistic's std.
A direction is monotonic in a statistic when its effects at -A and +A have opposite signs and both are at least
0.25 std. Writes terrain.json, terrain.md and terrain.png to the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eigenedit.core import sampling
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS
from eigenedit.core.io import image_grid, save_png
from eigenedit.models import DiffusionModel, load_model
from eigenedit.models.terrain import PIXEL_SIZE, bundled_onnx_path, to_heights

sys.path.insert(0, str(Path(__file__).parent))
from readme_section import replace_section  # noqa: E402

STATISTICS = ("elevation", "roughness", "slope", "ridges")
UNITS = {"elevation": "m", "roughness": "m", "slope": "m/m", "ridges": "fraction"}
CANDIDATE_LAYERS = (
    "network.input_blocks.11.1",  # 32x32, encoder
    "network.input_blocks.16.1",  # 16x16
    "network.middle_block.1",  # 8x8
    "network.output_blocks.7.1",  # 16x16
    "network.output_blocks.13.1",  # 32x32
)
TARGET_CHANGE = 0.04  # mean |delta| in model space that sets each layer's alpha
MONOTONIC_MIN = 0.25  # std units at both ends
BATCH = 4  # fastest per sample on CPU (larger batches are slower per sample here)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) with reflected borders."""
    radius = math.ceil(3 * sigma)
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return F.conv2d(y, kernel.view(1, 1, -1, 1))[:, 0]


def terrain_statistics(heights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four statistics (see the module docstring), each (B,), of heightmaps (B, H, W) in metres."""
    h = heights.double()
    roughness = (h - gaussian_blur(h, 4.0)).flatten(1).std(dim=1)
    gy, gx = torch.gradient(h, spacing=PIXEL_SIZE, dim=(1, 2))
    slope = (gx**2 + gy**2).sqrt().flatten(1).mean(dim=1)
    smooth = F.pad(gaussian_blur(h, 1.0)[:, None], (1, 1, 1, 1), mode="replicate")
    laplacian = F.conv2d(smooth, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=h.dtype))
    curvature = -laplacian
    is_max = curvature == F.max_pool2d(curvature, 3, stride=1, padding=1)
    ridges = (is_max & (curvature > 0)).flatten(1).double().mean(dim=1)
    return {"elevation": h.flatten(1).mean(dim=1), "roughness": roughness, "slope": slope, "ridges": ridges}


def edit_rows(model: DiffusionModel, x_t: torch.Tensor, dirs: Directions, alphas: list[float], layer: str):
    """Edit every seed with every (direction, alpha) alone: images (seeds, k, len(alphas), 1, H, W)."""
    rows = sampling.sweep_alphas(len(dirs), alphas)  # (k * a, k)
    n = len(x_t)
    images = sampling.edit_images(
        model,
        x_t.repeat_interleave(len(rows), dim=0),
        dirs,
        rows.repeat(n, 1),
        num_steps=1,
        t_edit=0,
        location=layer,
        batch_size=BATCH,
    )
    return images.view(n, len(dirs), len(alphas), *images.shape[1:])


def effects(images: torch.Tensor, plain: torch.Tensor, plain_stats: dict, unit: dict) -> dict:
    """Per direction and alpha: mean effect (std units) of each statistic, and mean |delta| in model space."""
    n, k, a = images.shape[:3]
    stats = terrain_statistics(to_heights(images.flatten(0, 2)))
    out = {}
    for name in STATISTICS:
        delta = stats[name].view(n, k, a) - plain_stats[name][:n, None, None]
        out[name] = (delta.mean(dim=0) / unit[name]).tolist()  # (k, a)
    out["change"] = (images - plain[:, None, None]).abs().flatten(3).mean(dim=(0, 3)).tolist()
    return out


def summarise_direction(eff: dict, i: int) -> dict:
    """Effects at -A and +A of direction i, the statistics it moves monotonically, and its main statistic."""
    per_stat = {name: (eff[name][i][0], eff[name][i][1]) for name in STATISTICS}
    monotonic = [name for name, (lo, hi) in per_stat.items() if lo * hi < 0 and min(abs(lo), abs(hi)) >= MONOTONIC_MIN]
    size = {name: (abs(lo) + abs(hi)) / 2 for name, (lo, hi) in per_stat.items()}
    main = max(size, key=size.get)
    return {
        "effects": per_stat,
        "monotonic": monotonic,
        "main": main,
        "main_effect": size[main],
        "change": eff["change"][i],
    }


def parity(model: DiffusionModel) -> dict:
    """Max |PyTorch - onnxruntime| of D on 4 inputs, and of one DDIM step vs the package's one-step sample."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundled_onnx_path()), options, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1234)
    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.05])
    difficulties = [1, 34, 67, 100]
    labels = torch.tensor([(d - 1) / 99 for d in difficulties], dtype=torch.float32)
    clean = torch.rand(4, 1, 128, 128, generator=g) * 2 - 1
    noisy = clean + sigmas.view(-1, 1, 1, 1) * torch.randn(4, 1, 128, 128, generator=g)
    ref = session.run(["denoised"], {"noisy": noisy.numpy(), "sigma": sigmas.numpy(), "difficulty": labels.numpy()})
    with torch.no_grad():
        ours = model.unet.denoise(noisy, sigmas, labels)
    diff = (ours - torch.from_numpy(ref[0])).abs().flatten(1).amax(dim=1)
    z = sampling.noise_from_seeds(model, [0, 1])
    one_step = sampling.sample(model, z, 1)
    sigma_max = model.unet.preconditioning.sigma_max
    feeds = {
        "noisy": (sigma_max * z).numpy(),
        "sigma": np.full(2, sigma_max, np.float32),
        "difficulty": model.unet.difficulty_label(2).numpy(),
    }
    package = torch.from_numpy(session.run(["denoised"], feeds)[0])
    return {
        "sigmas": sigmas.tolist(),
        "difficulties": difficulties,
        "max_abs_diff_per_input": diff.tolist(),
        "max_abs_diff": float(diff.max()),
        "one_ddim_step_vs_package_one_step_max_abs_diff": float((one_step - package).abs().max()),
    }


def timing(model: DiffusionModel, x_t: torch.Tensor, dirs: Directions, layer: str, alpha: float, repeats: int):
    """Median over interleaved repeats of (one edit) / (one plain sample), batch of BATCH, and ms per sample."""
    x = x_t[:BATCH]
    alphas = torch.full((len(x), 1), alpha)
    plain_s, edit_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sampling.sample(model, x, 1)
        plain_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        sampling.edit_images(model, x, dirs.top(1), alphas, 1, 0, layer, batch_size=BATCH)
        edit_s.append(time.perf_counter() - start)
    ratios = [e / p for e, p in zip(edit_s, plain_s, strict=True)]
    return {
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
        "plain_ms_per_sample": 1e3 * statistics.median(plain_s) / len(x),
        "edit_ms_per_sample": 1e3 * statistics.median(edit_s) / len(x),
        "batch": len(x),
    }


def method_directions(model: DiffusionModel, layer: str, method: str, k: int) -> Directions:
    return compute_directions(model.unet, layer, method, model_id=model.model_id).top(k)


def layer_score(rows: list[dict]) -> tuple[int, float]:
    """(monotonic statistics over the weight directions, their mean main effect minus random's)."""
    weight = [r for r in rows if r["method"] != "random"]
    rand = [r for r in rows if r["method"] == "random"]
    monotonic = sum(len(r["monotonic"]) for r in weight)
    excess = statistics.mean(r["main_effect"] for r in weight) - statistics.mean(r["main_effect"] for r in rand)
    return monotonic, excess


def run(args) -> dict:
    torch.manual_seed(0)
    start_all = time.perf_counter()
    model = load_model("terrain128")
    seeds = list(range(args.seeds))
    x_t = sampling.noise_from_seeds(model, seeds)
    result: dict = {"model": model.model_id, "difficulty": model.unet.difficulty, "seeds": len(seeds)}
    result["screen_seeds"] = args.screen_seeds
    print("parity ...", flush=True)
    result["parity"] = parity(model)
    print(json.dumps(result["parity"]), flush=True)

    plain = torch.cat([sampling.sample(model, x_t[sl], 1) for sl in sampling.batched(len(x_t), BATCH)])
    plain_stats = terrain_statistics(to_heights(plain))
    unit = {name: float(v.std()) for name, v in plain_stats.items()}
    result["plain"] = {
        name: {"mean": float(v.mean()), "std": unit[name], "unit": UNITS[name]} for name, v in plain_stats.items()
    }

    screen = list(range(args.screen_seeds))
    result["screen"] = {}
    for layer in args.layers:
        rand = method_directions(model, layer, "random", 1)
        probe = edit_rows(model, x_t[screen], rand, [1.0], layer)
        change = float((probe[:, 0, 0] - plain[screen]).abs().mean())
        alpha = float(f"{TARGET_CHANGE / max(change, 1e-6):.2g}")
        rows = []
        for method in ("qk", "ov-left", "random"):
            dirs = method_directions(model, layer, method, 1)
            eff = effects(edit_rows(model, x_t[screen], dirs, [-alpha, alpha], layer), plain[screen], plain_stats, unit)
            rows.append({"method": method, "index": 0, **summarise_direction(eff, 0)})
        monotonic, excess = layer_score(rows)
        result["screen"][layer] = {"alpha": alpha, "random_change_at_1": change, "rows": rows,
                                   "monotonic": monotonic, "excess_over_random": excess}  # fmt: skip
        print(f"screen {layer}: alpha {alpha:g}, monotonic {monotonic}, excess {excess:.2f}", flush=True)

    screened = result["screen"]
    layer = max(args.layers, key=lambda n: (screened[n]["monotonic"], screened[n]["excess_over_random"]))
    alpha = result["screen"][layer]["alpha"]
    result["main"] = {"layer": layer, "alpha": alpha, "k": args.k, "rows": []}
    print(f"main: {layer} alpha {alpha:g}", flush=True)
    for method in (*DECOMPOSITIONS, "random"):
        dirs = method_directions(model, layer, method, args.k)
        eff = effects(edit_rows(model, x_t, dirs, [-alpha, alpha], layer), plain, plain_stats, unit)
        for i in range(len(dirs)):
            row = {"method": method, "index": i, "value": float(dirs.values[i]), **summarise_direction(eff, i)}
            result["main"]["rows"].append(row)
            print(f"  {method} {i}: monotonic {row['monotonic']}, main {row['main']} {row['main_effect']:.2f}")
    result["summary"] = summarise_methods(result["main"]["rows"])
    best = max(
        (m for m in result["summary"] if m != "random"),
        key=lambda m: (result["summary"][m]["monotonic_directions"], result["summary"][m]["mean_main_effect"]),
    )
    result["recommended_defaults"] = {
        "layer": layer,
        "location": layer,
        "decomposition": best,
        "t_edit": 0,
        "alphas": [-alpha, -alpha / 2, 0.0, alpha / 2, alpha],
        "steps": 1,
    }
    result["timing"] = timing(model, x_t, method_directions(model, layer, best, 1), layer, alpha, args.timing_repeats)
    result["grid"] = write_grid(model, x_t[:1], layer, alpha, args.output_dir / "terrain.png")
    result["seconds"] = time.perf_counter() - start_all
    return result


def summarise_methods(rows: list[dict]) -> dict:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {
            "directions": len(mine),
            "monotonic_directions": sum(bool(r["monotonic"]) for r in mine),
            "monotonic_statistics": sorted({s for r in mine for s in r["monotonic"]}),
            "mean_main_effect": statistics.mean(r["main_effect"] for r in mine),
            "mean_change": statistics.mean(statistics.mean(r["change"]) for r in mine),
        }
    rand = out.get("random")
    for method, s in out.items():
        if method != "random" and rand is not None:
            s["beats_random"] = (
                s["monotonic_directions"] > rand["monotonic_directions"]
                and s["mean_main_effect"] > rand["mean_main_effect"]
            )
    return out


def write_grid(model: DiffusionModel, x_t: torch.Tensor, layer: str, alpha: float, path: Path) -> dict:
    """Seed 0: the top direction of every decomposition and a random one (rows) at 5 alphas (columns)."""
    alphas = [-alpha, -alpha / 2, 0.0, alpha / 2, alpha]
    methods = (*DECOMPOSITIONS, "random")
    tiles = []
    for method in methods:
        tiles.append(edit_rows(model, x_t, method_directions(model, layer, method, 1), alphas, layer)[0, 0])
    images = torch.cat(tiles)  # model space: asinh of the height, which shows low relief better than metres
    lo, hi = (float(q) for q in torch.quantile(images.flatten(), torch.tensor([0.005, 0.995])))
    shown = ((images - lo) / (hi - lo)).clamp(0, 1) * 2 - 1  # greyscale stretched to the grid's 0.5..99.5%
    grid = image_grid(shown, len(methods), len(alphas), [f"{m} 0" for m in methods], [f"a={a:.3g}" for a in alphas], 1)
    save_png(grid, path)
    black, white = (float(h) for h in to_heights(torch.tensor([lo, hi]).view(1, 1, 1, 2), zero_floor=False)[0, 0])
    return {"seed": 0, "rows": list(methods), "alphas": alphas, "black_metres": black, "white_metres": white}


def markdown(result: dict) -> str:
    main, par, tim = result["main"], result["parity"], result["timing"]
    lines = [
        f"# Terrain edits (`{result['model']}`, difficulty {result['difficulty']})",
        "",
        f"{result['seeds']} seeds, one forward per edit; edits at `{main['layer']}` with alpha = +/-{main['alpha']:g} "
        f"(the strength at which a random direction changes the heightmap by {TARGET_CHANGE} in model space). "
        "Cells: effect at -alpha / +alpha in standard deviations of the statistic across unedited samples; "
        f"**bold**: monotonic (opposite signs, both >= {MONOTONIC_MIN}).",
        "",
        "| direction | value | elevation | roughness | slope | ridges | monotonic in | mean abs change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in main["rows"]:
        cells = []
        for name in STATISTICS:
            lo, hi = r["effects"][name]
            cell = f"{lo:+.2f} / {hi:+.2f}"
            cells.append(f"**{cell}**" if name in r["monotonic"] else cell)
        mono = ", ".join(r["monotonic"]) or "-"
        change = statistics.mean(r["change"])
        lines.append(f"| {r['method']} {r['index']} | {r['value']:.3g} | {' | '.join(cells)} | {mono} | {change:.3f} |")
    lines += [
        "",
        "| method | monotonic directions | statistics | mean main effect (std) | beats random |",
        "|---|---|---|---|---|",
    ]
    for method, s in result["summary"].items():
        beats = "control" if method == "random" else ("yes" if s["beats_random"] else "no")
        stats = ", ".join(s["monotonic_statistics"]) or "-"
        count = f"{s['monotonic_directions']}/{s['directions']}"
        lines.append(f"| {method} | {count} | {stats} | {s['mean_main_effect']:.2f} | {beats} |")
    lines += [
        "",
        "Layer screen: the top qk and ov-left direction and one random direction per layer, on the first "
        f"{result.get('screen_seeds', 2)} seeds (the layer with the most monotonic statistics wins):",
        "",
        "| layer | alpha | monotonic statistics (weight dirs) | main effect over random (std) |",
        "|---|---|---|---|",
    ]
    for layer, s in result["screen"].items():
        lines.append(f"| {layer} | {s['alpha']:g} | {s['monotonic']} | {s['excess_over_random']:+.2f} |")
    plain = ", ".join(f"{n} {v['mean']:.3g} +/- {v['std']:.2g} {v['unit']}" for n, v in result["plain"].items())
    lines += ["", f"Unedited samples (mean +/- std over seeds): {plain}.", ""]
    if "max_abs_diff" in par:
        lines.append(
            f"ONNX parity: max |PyTorch - onnxruntime| = {par['max_abs_diff']:.2g} over sigma "
            f"{', '.join(f'{s:g}' for s in par['sigmas'])} and difficulty {', '.join(map(str, par['difficulties']))}; "
            "one DDIM step vs the package's one-step sample D(80 z, 80): "
            f"{par['one_ddim_step_vs_package_one_step_max_abs_diff']:.2g}."
        )
    else:
        lines.append(f"ONNX parity: {par['skipped']}.")
    lines += [
        "",
        f"Speed (same run, batch {tim['batch']}, CPU, 1 thread): one edit / one plain sample, median of "
        f"{len(tim['ratios'])} interleaved pairs = {tim['median_ratio']:.3f} (pairs: "
        f"{', '.join(f'{r:.3f}' for r in tim['ratios'])}); medians {tim['plain_ms_per_sample']:.0f} ms per plain "
        f"sample, {tim['edit_ms_per_sample']:.0f} ms per edit.",
        "",
        f"Recommended defaults: `{json.dumps(result['recommended_defaults'])}`. Run time {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--screen-seeds", type=int, default=2)
    p.add_argument("--k", type=int, default=2, help="directions per decomposition in the main run")
    p.add_argument("--layers", nargs="+", default=list(CANDIDATE_LAYERS))
    p.add_argument("--timing-repeats", type=int, default=7)
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument("--report-only", action="store_true", help="re-render terrain.md from terrain.json")
    p.add_argument("--no-readme", dest="readme", action="store_false", help="do not update README.md's table")
    args = p.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        result = json.loads((args.output_dir / "terrain.json").read_text())
    else:
        result = run(args)
        (args.output_dir / "terrain.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.output_dir / "terrain.md").write_text(markdown(result))
    print(markdown(result))
    if args.readme:
        replace_section("terrain", markdown(result).split("\n", 1)[1])  # without the title line


if __name__ == "__main__":
    main()
