"""Terrain edits along attention-weight directions of the pretrained terrain model (adaptive-terrain-diffusion).

    python -m benchmarks.terrain [--selection-seeds 0-3] [--test-seeds 1000-1015] [--layers NAME ...] [--k 3]

A thin wrapper over the shared evaluation (``eigenedit.evaluation.evaluate``) with the terrain probe
(``eigenedit.evaluation.probes.terrain_probe``: elevation, roughness, slope and ridge density of the heightmap in
metres). Every edit is one forward pass (a one-step consistency model, edited at the output of one attention
block). Steps:

1. parity: the PyTorch port against onnxruntime (if installed) on the same inputs, and one DDIM step against the
   package's one-step sample D(sigma_max z, sigma_max).
2. per candidate layer, alpha calibrated on the **selection seeds** (a random direction changes the heightmap by
   0.04 in model space, i.e. 0.02 on the 0..1 scale), then every decomposition, random directions (and, with
   ``--pullback``, Park et al.'s pullback) at +-alpha and +-alpha/2 on the **test seeds**; the best layer and
   decomposition are chosen on the selection seeds and reported with their test-seed numbers.
3. a grid of the first test seed and the recommended defaults.

Writes terrain.json, terrain.md and terrain.png to the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from eigenedit.apps.arguments import parse_seeds
from eigenedit.core import sampling
from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS
from eigenedit.core.io import atomic_write
from eigenedit.evaluation.evaluate import EvalConfig, evaluate_locations
from eigenedit.evaluation.probes import terrain_probe
from eigenedit.evaluation.report import best_attention_method
from eigenedit.evaluation.report import markdown as eval_markdown
from eigenedit.imaging import image_grid, save_png
from eigenedit.models import DiffusionModel, load_model
from eigenedit.models.terrain import bundled_onnx_path, to_heights

CANDIDATE_LAYERS = (
    "network.input_blocks.11.1",  # 32x32, encoder
    "network.input_blocks.16.1",  # 16x16
    "network.middle_block.1",  # 8x8
    "network.output_blocks.7.1",  # 16x16
    "network.output_blocks.13.1",  # 32x32
)
BATCH = 4  # fastest per sample on CPU (larger batches are slower per sample here)


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


def write_grid(model: DiffusionModel, seed: int, layer: str, alpha: float, path: Path) -> dict:
    """One seed: the top direction of every decomposition and a random one (rows) at 5 alphas (columns)."""
    alphas = [-alpha, -alpha / 2, 0.0, alpha / 2, alpha]
    methods = (*DECOMPOSITIONS, "random")
    x = sampling.noise_from_seeds(model, [seed])
    tiles = []
    for method in methods:
        dirs = compute_directions(model.unet, layer, method, model_id=model.model_id).top(1)
        rows = sampling.sweep_alphas(1, alphas)
        edit = sampling.Edit(dirs, rows, t_edit=0, location=layer)
        tiles.append(sampling.edit_images(model, x.expand(len(rows), -1, -1, -1), edit, 1, BATCH))
    images = torch.cat(tiles)  # model space: asinh of the height, which shows low relief better than metres
    lo, hi = (float(q) for q in torch.quantile(images.flatten(), torch.tensor([0.005, 0.995])))
    shown = ((images - lo) / (hi - lo)).clamp(0, 1) * 2 - 1  # greyscale stretched to the grid's 0.5..99.5%
    grid = image_grid(shown, len(methods), len(alphas), [f"{m} 0" for m in methods], [f"a={a:.3g}" for a in alphas], 1)
    save_png(grid, path)
    black, white = (float(h) for h in to_heights(torch.tensor([lo, hi]).view(1, 1, 1, 2), zero_floor=False)[0, 0])
    return {"seed": seed, "rows": list(methods), "alphas": alphas, "black_metres": black, "white_metres": white}


def run(args) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = load_model("terrain128")
    result: dict = {"model": model.model_id, "difficulty": model.unet.difficulty}
    print("parity ...", flush=True)
    result["parity"] = parity(model)
    print(json.dumps(result["parity"]), flush=True)
    baselines = ("pullback",) if args.pullback else ()
    cfg = EvalConfig(seeds=args.test_seeds, selection_seeds=args.selection_seeds, k=args.k, alpha=None, num_steps=1,
                     t_edit=0, per_head=False, baselines=baselines, pullback_seeds=2, timing_repeats=3,
                     batch_size=BATCH)  # fmt: skip
    result["runs"] = runs = evaluate_locations(model, cfg, list(args.layers), probe=terrain_probe())
    plain = sampling.sample(model, sampling.noise_from_seeds(model, args.test_seeds), 1)
    stats = terrain_probe()(plain)
    result["plain"] = {n: {"mean": float(v.mean()), "std": float(v.std())} for n, v in stats.items() if n != "valid"}
    best = best_attention_method(runs)
    alpha = next(r["alpha"] for r in runs if r["config"]["location"] == best["location"])
    result["recommended_defaults"] = {
        "layer": best["location"],
        "location": best["location"],
        "decomposition": best["name"].split()[0],
        "t_edit": 0,
        "alphas": [-alpha, -alpha / 2, 0.0, alpha / 2, alpha],
        "steps": 1,
    }
    result["grid"] = write_grid(model, args.test_seeds[0], best["location"], alpha, args.output_dir / "terrain.png")
    result["seconds"] = time.perf_counter() - start
    return result


def markdown(result: dict) -> str:
    par = result["parity"]
    units = result["runs"][0]["probe"]["units"]
    lines = [
        f"# Terrain edits (`{result['model']}`, difficulty {result['difficulty']})",
        "",
        eval_markdown(result["runs"]),
    ]
    plain = ", ".join(f"{n} {v['mean']:.3g} +/- {v['std']:.2g} {units[n]}" for n, v in result["plain"].items())
    lines += [f"Unedited samples (test seeds, mean +/- std): {plain}.", ""]
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
        f"Recommended defaults (chosen on the selection seeds): `{json.dumps(result['recommended_defaults'])}`. "
        f"Run time {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--selection-seeds", type=parse_seeds, default=list(range(4)), help="seeds that choose (0-3)")
    p.add_argument("--test-seeds", type=parse_seeds, default=list(range(1000, 1016)), help="reported (1000-1015)")
    p.add_argument("--k", type=int, default=3, help="directions per decomposition")
    p.add_argument("--layers", nargs="+", default=list(CANDIDATE_LAYERS))
    p.add_argument("--pullback", action="store_true", help="also Park et al.'s pullback (2 test seeds; slow)")
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument("--report-only", action="store_true", help="re-render terrain.md from terrain.json")
    args = p.parse_args()
    if set(args.selection_seeds) & set(args.test_seeds):
        p.error("selection and test seeds overlap; they must be disjoint")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        result = json.loads((args.output_dir / "terrain.json").read_text())
    else:
        result = run(args)
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(args.output_dir / "terrain.json", lambda tmp: Path(tmp).write_text(text))
    table = markdown(result)
    atomic_write(args.output_dir / "terrain.md", lambda tmp: Path(tmp).write_text(table))
    print(table)


if __name__ == "__main__":
    main()
