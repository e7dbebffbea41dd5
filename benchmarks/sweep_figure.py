"""A sweep grid of a model's best weight directions, labelled automatically by the operators benchmark.

    python -m benchmarks.sweep_figure --model faces64 [--rows 4] [--seeds 1000-1002] [--out results] [--card]

Reads results/operators.json (``benchmarks/operators.py``). The rows shown are chosen on **selection seeds** only:
per operator, the weight row (decomposition x layer, direction index, attribute, as the benchmark selected them)
whose attribute moves most on the selection seeds at the benchmark's matched strengths. Their label (``+smile``)
is the attribute and sign the selection chose; the test-seed rho and the random control's rho (same operator) are
printed beside it. Columns are the benchmark's 5 strengths (matched to mean pixel changes 0.03 and 0.06). Writes
OUT/sweep_{model}.png and .json; with --card, also copies the grid into the shipped model's folder, replaces the
"Edits" section of its model card and writes its eigenedit.json (the default edit: the first row shown).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.model_card import update_card
from benchmarks.operators import Runner, beats, capped, control_of, setup_for, source_directions
from eigenedit.apps.arguments import parse_seeds
from eigenedit.core.directions import Directions
from eigenedit.evaluation.probes import Probe, probe_for_model
from eigenedit.imaging import image_grid
from eigenedit.models import DiffusionModel, load_model
from eigenedit.models.registry import SHIPPED_MODELS

CARD_START, CARD_END = "<!-- edits:start -->", "<!-- edits:end -->"


def weight_rows(result: dict) -> list[dict]:
    controls = ("pca-h", "pullback")
    return [r for r in result["rows"] if not r["source"].startswith("random") and r["source"] not in controls]


def row_directions(model: DiffusionModel, result: dict, r: dict) -> Directions:
    source = "ov-left" if r["source"] == "ov" else r["source"]
    return source_directions(model, r["layer"], source).top(result["candidates"])


@torch.no_grad()
def edit_row(runner: Runner, result: dict, r: dict, seeds: list[int], strengths: list[float]) -> torch.Tensor:
    """Images (len(strengths), len(seeds), C, H, W) of row r's direction, through the benchmark's own Runner."""
    method = dict(operator=r["operator"], directions=row_directions(runner.model, result, r), location=r["location"],
                  candidates=result["candidates"])  # fmt: skip
    return runner.edit(method, r["index"], seeds, strengths)


def selection_effect(runner: Runner, probe: Probe, result: dict, r: dict) -> float:
    """Row r's effect on selection seeds: the mean change of its attribute, in its sign and scale, from -s(.06) to
    +s(.06) (the benchmark's matched strengths) / 2. Selection rho saturates at 1 on 6 seeds; this does not."""
    seeds, s6 = result["selection_seeds"], r["strengths"][-1]
    reads = [probe(img)[r["attribute"]] for img in edit_row(runner, result, r, seeds, [-s6, s6])]
    change = probe.difference(r["attribute"], reads[1], reads[0]).double() / 2
    return float(change.mean()) * r["sign"] / result["scales"][r["attribute"]]


def shown_rows(runner: Runner, probe: Probe, result: dict, count: int) -> list[dict]:
    """Per operator, the weight row with the largest effect on selection seeds (never test numbers), best first."""
    best: dict[str, dict] = {}
    for r in weight_rows(result):
        r = dict(r, selection_effect=selection_effect(runner, probe, result, r))
        print(f"selection effect {r['operator']:8s} {r['source']:9s} {r['layer']}: {label(r)} "
              f"{r['selection_effect']:+.2f}", flush=True)  # fmt: skip
        if r["operator"] not in best or r["selection_effect"] > best[r["operator"]]["selection_effect"]:
            best[r["operator"]] = r
    return sorted(best.values(), key=lambda r: -r["selection_effect"])[:count]


def label(r: dict) -> str:
    return f"{'+' if r['sign'] > 0 else '-'}{r['attribute']}"


def render(runner: Runner, result: dict, rows: list[dict], seeds: list[int]) -> tuple[torch.Tensor, list[str]]:
    """Images (rows * seeds, 5 strengths) and their row labels."""
    images, labels = [], []
    for r in rows:
        edited = edit_row(runner, result, r, seeds, r["strengths"])
        images.append(edited.transpose(0, 1).flatten(0, 1))
        ctrl = control_of(r, result["rows"])
        ctrl_text = f", random {ctrl['rho']:+.2f}" if ctrl else ""
        labels.append(f"{label(r)} ({r['operator']} {r['source']} #{r['index']}; test rho {r['rho']:+.2f}{ctrl_text})")
        labels += [f"seed {s}" for s in seeds[1:]]
    return torch.cat(images), labels


def edit_defaults(r: dict, result: dict) -> dict:
    """The model's eigenedit.json from the row chosen on selection seeds: its layer, decomposition, operator and
    the 5 strengths calibrated on the calibration seeds (a subset of the selection seeds)."""
    return {
        "layer": r["layer"],
        "location": r["location"],
        "decomposition": "ov-left" if r["source"] == "ov" else r["source"],
        "operator": r["operator"],
        "t_edit": result["t_edit"],
        "steps": result["steps"],
        "alphas": [round(v, 4 if abs(v) < 0.1 else 2) for v in r["strengths"]],
        "direction": r["index"],
        "label": label(r),
        "measured": f"benchmarks/operators.py {result['date']}; test seeds: rho {r['rho']:+.2f} agree {r['agree']:.2f}",
    }


def card_section(model_id: str, rows: list[dict], result: dict, seeds: list[int]) -> str:
    lines = [
        CARD_START,
        "## Edits (measured by `benchmarks/operators.py`, grid by `benchmarks/sweep_figure.py`)",
        "",
        f"Each operator's weight direction whose attribute moves most at matched image change on selection seeds "
        f"{result['selection_seeds'][0]}-{result['selection_seeds'][-1]}; labels are the probe attribute that "
        "selection found; the first row is the model's default edit (eigenedit.json). Numbers are from "
        f"test seeds {result['test_seeds'][0]}-{result['test_seeds'][-1]} ({len(result['test_seeds'])}): rho = "
        "mean Spearman rho of that attribute over 5 strengths matched to mean pixel changes 0.03 and 0.06; agree = "
        "share of seeds moving that way; random = the same operator with random directions; beats random as in "
        "results/operators.md (rho >= 0.5, agree >= 0.75, rho above the control's by 0.1 and agree above its).",
        "",
        "| label | operator | decomposition | layer | selection effect | rho / agree | random rho / agree | "
        "beats random | strengths |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ctrl = control_of(r, result["rows"])
        c = f"{ctrl['rho']:+.2f} / {ctrl['agree']:.2f}{' (cap)' if capped(ctrl) else ''}" if ctrl else "-"
        s = ", ".join(f"{v:+.3g}" for v in r["strengths"])
        lines.append(
            f"| {label(r)} | {r['operator']} | {r['source']} #{r['index']} | {r['layer']} | "
            f"{r['selection_effect']:+.2f} | {r['rho']:+.2f} / {r['agree']:.2f}{' (cap)' if capped(r) else ''} | "
            f"{c} | {'**yes**' if beats(r, ctrl) else 'no'} | {s} |"
        )
    lines += ["", f"![sweep of the best directions, seeds {', '.join(map(str, seeds))}](sweep.png)", CARD_END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="faces64")
    p.add_argument("--rows", type=int, default=4, help="directions shown (one per operator, best first)")
    p.add_argument("--seeds", default="1000-1002", help="test seeds shown")
    p.add_argument("--results", type=Path, default=Path("results/operators.json"))
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--card", action="store_true", help="also update the shipped model's card and sweep.png")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = json.loads(args.results.read_text())
    result = next((m for m in data["models"] if m["model"] == args.model), None)
    if result is None:
        raise SystemExit(f"{args.results} has no {args.model!r}: run benchmarks/operators.py --models {args.model}")
    seeds = parse_seeds(args.seeds)
    setup = replace(setup_for(args.model, quick=False), steps=result["steps"], t_edit=result["t_edit"])
    runner = Runner(load_model(args.model), setup)
    rows = shown_rows(runner, probe_for_model(args.model), result, args.rows)
    images, labels = render(runner, result, rows, seeds)
    cols = ["-s.06", "-s.03", "plain", "+s.03", "+s.06"]
    grid = image_grid(images, len(labels), 5, labels, cols, scale=max(1, 128 // images.shape[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    grid.save(args.out / f"sweep_{args.model}.png")
    summary = {"model": args.model, "seeds": seeds, "rows": rows, "source": str(args.results), "date": data["date"]}
    (args.out / f"sweep_{args.model}.json").write_text(json.dumps(summary, indent=1, default=float))
    if args.card:
        folder = SHIPPED_MODELS[args.model]
        grid.save(folder / "sweep.png")
        update_card(folder / "README.md", CARD_START, CARD_END, card_section(args.model, rows, result, seeds))
        defaults = json.dumps(edit_defaults(rows[0], result), indent=1)
        defaults = re.sub(r"\[\s+([^\]]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", defaults)
        (folder / "eigenedit.json").write_text(defaults + "\n")
    for line in labels[:: len(seeds)]:
        print(line)
    print(
        f"wrote {args.out}/sweep_{args.model}.{{png,json}}"
        + (f" and {SHIPPED_MODELS[args.model]}" if args.card else "")
    )


if __name__ == "__main__":
    main()
