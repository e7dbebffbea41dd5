"""The README's lead picture, by the protocol's rule: the best weight rows of ``results/protocol_MODEL.json`` (chosen
on selection seeds) on the first test seeds (not picked), each at its own calibrated strengths, above random
directions of the same group calibrated to the same image change; row titles give each row's measured verdict.

    python -m benchmarks.lead_figure --model terrain128 --seeds 1000 1001 1002 --out results/lead_terrain.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from eigenedit.core.sampling import Edit, edit_images, noise_from_seeds
from eigenedit.evaluation import protocol, reading
from eigenedit.evaluation.probes import probe_for_model
from eigenedit.evaluation.protocol_run import Lab, _stored_row, plan_for, random_set, weight_directions
from eigenedit.imaging import image_grid, save_png
from eigenedit.models import load_model

RANDOM_SEED = 1000  # the protocol's random distribution: its first rows are the same directions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="terrain128")
    p.add_argument("--rows", type=int, default=2, help="best weight rows shown (each with one random row)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    p.add_argument("--out", type=Path, default=Path("results/lead_terrain.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    result = json.loads(Path(f"results/protocol_{args.model}.json").read_text())
    rows = sorted(result["rows"], key=lambda r: (r["precise"], min(b["score"] for b in r["blocks"])), reverse=True)
    rows = rows[: args.rows]
    model = load_model(args.model)
    plan = plan_for(args.model)
    lab = Lab(model, probe_for_model(args.model), plan, progress=False)
    strengths = protocol.STRENGTHS
    tiles, titles = [], []
    for n, row in enumerate(rows):
        row = {"t_edit": plan.t_edit, "target_change": plan.target_change} | row  # runs before windows existed
        view = lab.at(row["t_edit"], row["target_change"])
        dirs = weight_directions(view, row["layer"], row["source"], plan.candidates, row["location"])
        dirs = dirs.select([row["index"]])
        rand = random_set(model, row["operator"], row["layer"], row["location"], n + 1, RANDOM_SEED).select([n])
        rand_alpha = view.calibrate(row["operator"], row["location"], rand)[0]
        for d, alpha, title in (
            (dirs, row["alpha"], f"{row['source']} #{row['index']}: {reading.verdict_text(_stored_row(row))}"),
            (rand, rand_alpha, f"random #{n} of the same group, same image change"),
        ):
            for seed in args.seeds:
                x = noise_from_seeds(model, [seed]).repeat(len(strengths), *([1] * len(model.sample_shape)))
                alphas = torch.tensor([[s * alpha] for s in strengths])
                edit = Edit(d, alphas, t_edit=row["t_edit"], location=row["location"], operator=row["operator"])
                tiles.append(model.decode(edit_images(model, x, edit, plan.steps, len(strengths))))
            titles.append(f"{row['operator']}, {title}")
    per_seed = [torch.cat(tiles[i :: len(args.seeds)]) for i in range(len(args.seeds))]
    panels = [
        image_grid(images, len(titles), len(strengths), titles if i == 0 else (),
                   [f"seed {seed}: {s:+g}" if s == strengths[0] else f"{s:+g}" for s in strengths], scale=1)
        for i, (seed, images) in enumerate(zip(args.seeds, per_seed, strict=True))
    ]  # fmt: skip
    figure = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    for i, panel in enumerate(panels):
        figure.paste(panel, (sum(p.width for p in panels[:i]), 0))
    save_png(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
