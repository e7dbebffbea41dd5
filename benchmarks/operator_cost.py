"""Wall-time cost of each edit operator against plain sampling, on the same batch of one model.

    python -m benchmarks.operator_cost [--model faces64] [--repeats 5] [--batch 16] [--out results/operator_cost.json]

The edit is the model's default (``defaults.resolve``: layer, decomposition, location, t_edit, steps), its top
direction at the largest of each operator's default strengths. One warm-up round, then ``repeats`` interleaved
rounds (plain sampling, then each operator in ``OPERATORS``), so load from other jobs spreads over all of them.
Reports the median seconds and the same-run ratio to plain sampling; the file keeps one entry per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from eigenedit.core import sampling
from eigenedit.core.defaults import default_alphas, resolve
from eigenedit.core.directions import compute_directions
from eigenedit.core.io import atomic_write
from eigenedit.core.operators import OPERATORS
from eigenedit.models import load_model


def measure(model_id: str, repeats: int, batch: int) -> dict:
    """Median seconds of plain sampling and of each operator over interleaved rounds, and ratios to plain."""
    model = load_model(model_id)
    s = resolve(model)
    x = sampling.noise_from_seeds(model, list(range(batch)))
    dirs = compute_directions(model.unet, s.layer, s.decomposition, model_id=model.model_id).top(1)
    alphas = {op: max(abs(a) for a in default_alphas(model.edit_defaults, op)) for op in OPERATORS}

    def run(name: str) -> None:
        if name == "plain":
            sampling.sample(model, x, s.steps)
            return
        edit = sampling.Edit(directions=dirs, alphas=torch.full((batch, 1), alphas[name]), t_edit=s.t_edit,
                             location=s.location, operator=name)  # fmt: skip
        sampling.edit_images(model, x, edit, s.steps, batch)

    names = ["plain", *OPERATORS]
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats + 1):  # round 0 warms up (caches, first-call overheads) and is not counted
        for name in names:
            start = time.perf_counter()
            run(name)
            if round_:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch_threads": torch.get_num_threads(),
        "batch": batch,
        "repeats": repeats,
        "steps": s.steps,
        "t_edit": s.t_edit,
        "layer": s.layer,
        "decomposition": s.decomposition,
        "location": s.location,
        "alphas": alphas,
        "seconds": medians,
        "ratio": {name: medians[name] / medians["plain"] for name in names},
        "all_seconds": times,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="faces64")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--batch", type=int, default=16, help="images per sampling call")
    p.add_argument("--out", type=Path, default=Path("results/operator_cost.json"))
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        p.error("--repeats and --batch must be at least 1")
    result = measure(args.model, args.repeats, args.batch)
    result["command"] = " ".join(["python -m benchmarks.operator_cost", *(sys.argv[1:] if argv is None else argv)])
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"models": {}}
    data["models"][args.model] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"))
    plain = result["seconds"]["plain"]
    print(f"{args.model}: plain sampling {plain:.3f} s per batch of {args.batch} ({args.repeats} rounds); "
          + ", ".join(f"{op} {result['ratio'][op]:.2f}x" for op in OPERATORS))  # fmt: skip
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
