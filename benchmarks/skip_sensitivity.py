"""Why h-space matters little: how much a UNet's images depend on its mid-block vs on its skip connections.

    python -m benchmarks.skip_sensitivity [--models faces64 shapes32 FOLDER ...] [--seeds 8] [--steps 20]

For each model, the mean absolute pixel change (images in [0, 1]) when, at every DDIM step, (a) the mid-block
output (h-space) is replaced by zeros (``evaluation.evaluate.zeroing_sensitivity``), (b) the skip features that
one up block receives from the encoder are replaced by zeros, for each up block, and (c) all skips are zeroed
while the mid-block is kept. Seeds 10000.. as in the model cards. Writes results/skip_sensitivity.json.
results/ holds a run with faces64 at step 2250 as a folder made from commit 5bc1680
(``git show 5bc1680:eigenedit/pretrained/faces64/{model_index.json,scheduler/...,unet/...}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from eigenedit.core import sampling
from eigenedit.evaluation.evaluate import zeroing_sensitivity
from eigenedit.models import DiffusionModel, load_model


def zero_skips(model: DiffusionModel, x: torch.Tensor, steps: int, blocks: list[int], plain: torch.Tensor) -> float:
    """Pixel change when the encoder features passed to ``up_blocks[i]`` (i in blocks) are zeros at every step."""

    def hook(module, args, kwargs):
        if len(args) >= 2:
            return (args[0], tuple(torch.zeros_like(r) for r in args[1]), *args[2:]), kwargs
        kwargs = dict(
            kwargs, res_hidden_states_tuple=tuple(torch.zeros_like(r) for r in kwargs["res_hidden_states_tuple"])
        )
        return args, kwargs

    handles = [model.unet.up_blocks[i].register_forward_pre_hook(hook, with_kwargs=True) for i in blocks]
    try:
        zeroed = sampling.sample(model, x, steps)
    finally:
        for h in handles:
            h.remove()
    return float((zeroed - plain).abs().mean() / 2)


def measure(model_id: str, seeds: list[int], steps: int) -> dict:
    model = load_model(model_id)
    x = sampling.noise_from_seeds(model, seeds)
    plain = sampling.sample(model, x, steps)
    up = list(range(len(model.unet.up_blocks)))
    resolution = model.sample_shape[-1]
    sizes = {i: resolution // 2 ** (len(up) - 1 - i) for i in up}  # the resolution each up block works at
    return {
        "model": model_id,
        "mid_block": zeroing_sensitivity(model, x, steps, "mid_block"),
        "skips_into_up_block": {f"up_blocks.{i} ({sizes[i]} px)": zero_skips(model, x, steps, [i], plain) for i in up},
        "all_skips": zero_skips(model, x, steps, up, plain),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["faces64", "shapes32"])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--output", type=Path, default=Path("results/skip_sensitivity.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(10_000, 10_000 + args.seeds))
    rows = []
    for model_id in args.models:
        row = measure(model_id, seeds, args.steps)
        rows.append(row)
        skips = ", ".join(f"{k} {v:.2%}" for k, v in row["skips_into_up_block"].items())
        mid, every = row["mid_block"], row["all_skips"]
        print(f"{model_id}: zero mid_block {mid:.2%}; zero skips into {skips}; all skips {every:.2%}")
    data = {"date": time.strftime("%Y-%m-%d"), "seeds": seeds, "steps": args.steps, "models": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
