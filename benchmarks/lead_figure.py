"""The README's lead picture: the clearest measured edit (terrain128, ov-left at network.input_blocks.16.1, the
layer and decomposition chosen on selection seeds by `eigenedit evaluate`) on the first test seeds (not picked),
beside random directions at the same strengths; one panel per seed.

    python -m benchmarks.lead_figure --seeds 1000 1001 1002 --out results/lead_terrain.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from eigenedit.core.directions import compute_directions
from eigenedit.core.sampling import Edit, edit_images, noise_from_seeds, sweep_alphas
from eigenedit.imaging import image_grid, save_png
from eigenedit.models import load_model

LAYER = "network.input_blocks.16.1"
DECOMPOSITIONS = ("ov-left", "random")
ALPHAS = [-0.62, -0.31, 0.0, 0.31, 0.62]  # the strength at which a random direction changes heights by 0.04


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    p.add_argument("--out", type=Path, default=Path("results/lead_terrain.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model("terrain128")
    directions = {d: compute_directions(model.unet, LAYER, d, model_id="terrain128").top(2) for d in DECOMPOSITIONS}
    panels = []
    for seed in args.seeds:
        x = noise_from_seeds(model, [seed]).repeat(2 * len(ALPHAS), 1, 1, 1)
        rows = [edit_images(model, x, Edit(dirs, sweep_alphas(2, ALPHAS), t_edit=0, location=LAYER), 1, 5)
                for dirs in directions.values()]  # fmt: skip
        labels = [f"{name} {i}" for name in directions for i in range(2)]
        cols = [f"seed {seed}: a={a:g}" if a == ALPHAS[0] else f"a={a:g}" for a in ALPHAS]
        panels.append(image_grid(torch.cat(rows), len(labels), len(ALPHAS), labels, cols, scale=1))
    width = sum(panel.width for panel in panels)
    figure = Image.new("RGB", (width, max(panel.height for panel in panels)), "white")
    for i, panel in enumerate(panels):
        figure.paste(panel, (sum(p.width for p in panels[:i]), 0))
    save_png(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
