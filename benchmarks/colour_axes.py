"""How much of each weight direction lies along the data-free colour axes of its edit location, against random
unit vectors (``eigenedit/core/colour_axes.py``); no editing, seconds per model.

    python -m benchmarks.colour_axes [--model faces64] [--k 4]

Writes results/colour_axes.json: per decomposition and direction, |cos| with each colour axis (R, G, B; one axis
for grey models) and the norm of its projection on their span, beside random unit vectors' median and 95th
percentile of that norm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from eigenedit.core.colour_axes import colour_axes
from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, random_directions
from eigenedit.models import load_model

PLACES = {  # model -> (layer, location, steps, t_edit): the protocol's h-space group
    "faces64": ("mid_block.attentions.0", "mid_block", 10, 500),
    "shapes32": ("mid_block.attentions.0", "mid_block", 10, 500),
}


def measure(model_id: str, k: int) -> dict:
    layer, location, steps, t_edit = PLACES[model_id]
    model = load_model(model_id)
    axes = colour_axes(model, location, steps, t_edit).double()
    basis = torch.linalg.qr(axes.T)[0]
    rand = random_directions(4000, axes.shape[1], seed=5)
    rand_norm = (rand @ basis).norm(dim=1).numpy()
    rows = []
    for decomposition in DECOMPOSITIONS:
        dirs = compute_directions(model.unet, layer, decomposition, model_id=model_id, k=k)
        v = dirs.vectors.double()
        for i in range(len(v)):
            rows.append({
                "decomposition": decomposition, "index": i, "cos": (v[i] @ axes.T).abs().tolist(),
                "colour_norm": float((v[i] @ basis).norm()),
            })  # fmt: skip
    return {
        "layer": layer, "location": location, "steps": steps, "t_edit": t_edit,
        "axis_cos": (axes @ axes.T).tolist(), "random_colour_norm_p50": float(np.median(rand_norm)),
        "random_colour_norm_p95": float(np.percentile(rand_norm, 95)), "rows": rows,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=["faces64"], choices=sorted(PLACES))
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("results/colour_axes.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"command": "python -m benchmarks.colour_axes " + " ".join(sys.argv[1:])}
    result |= {m: measure(m, args.k) for m in args.model}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for m in args.model:
        r = result[m]
        above = [f"{x['decomposition']} #{x['index']} {x['colour_norm']:.2f}" for x in r["rows"]
                 if x["colour_norm"] > r["random_colour_norm_p95"]]  # fmt: skip
        print(
            f"{m}: random colour norm p50 {r['random_colour_norm_p50']:.2f}, p95 {r['random_colour_norm_p95']:.2f}; "
            f"above p95: {', '.join(above) or 'none'}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
