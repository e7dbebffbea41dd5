"""Which edit operator makes attention-weight directions edit: operator x decomposition x model, on held-out seeds.

    python -m benchmarks.operators [--models shapes32 fashion32 terrain128 faces64] [--quick] [--output-dir results]

Protocol (every method is treated the same; a method is operator x direction source x layer):
- direction sources: the weight decompositions (qk, ov-left, ov-right, qkv = SeFa with unit-norm rows, qkv-raw
  without), the control ``random`` (random unit vectors; for ``spectral``, random rank-one modes with the same
  per-head strengths as that decomposition's modes: ``operators.random_modes``), h-space PCA (``pca-h``, Haas et
  al.) and Park et al.'s pullback (per image: top right singular vectors of d h / d x_T, x_T moved along one).
- strength is matched by image change, not alpha: for a direction, s(T) is the strength whose mean |pixel change|
  (model space [-1, 1], both signs, calibration seeds) is T; s is found by a power-law fit through two
  measurements. Targets T = 0.03 and 0.06; the 5 strengths are -s(.06), -s(.03), 0, s(.03), s(.06).
- selection seeds choose, per method, the layer (from a small grid), which of the top candidates (directions 0..)
  and which attribute with which sign: the largest |mean Spearman rho| of the attribute change vs strength.
- test seeds (disjoint, >= 32) give every reported number: rho (mean over seeds of Spearman's rho of the chosen
  attribute vs the 5 strengths, signed by the selection's sign), agree (share of seeds that move that way from
  -s(.06) to +s(.06)), effect at each target ((d(+s) - d(-s)) / 2 in the attribute's units, signed), the pixel
  change reached (targets hit?), and validity where the probe has it.
- cost: median wall time of interleaved repeats of plain sampling and of each operator on the same batch.
Writes operators.json (every number, both seed lists, settings), operators.md and operators.png.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eigenedit.core import operators, sampling
from eigenedit.core.attention import read_attention_weights
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import fix_signs, random_directions
from eigenedit.evaluation.baselines import collect_hidden, pca_directions, pullback_directions
from eigenedit.evaluation.probes import Probe, load_probe, probe_for_model
from eigenedit.evaluation.protocol import spearman
from eigenedit.imaging import image_grid
from eigenedit.models import DiffusionModel, load_model

TARGETS = (0.03, 0.06)
NOMINAL = {"shift": 1.0, "scale": 1.0, "spectral": 1.0, "xspace": 0.01, "pullback": 0.01}
MAX_STRENGTH = {"shift": 50.0, "scale": 50.0, "spectral": 200.0, "xspace": 1.0, "pullback": 1.0}


@dataclass
class Setup:
    """Per-model settings: layer grid (attention layer, edit location), sources, seeds and sizes."""

    steps: int
    t_edit: int
    configs: list[tuple[str, str]]
    sources: tuple[str, ...]
    candidates: int
    selection: list[int]
    test: list[int]
    calibration: int  # the first seeds of ``selection`` calibrate strengths
    pca_seeds: int
    batch: int
    pullback: bool
    test_all: bool = True  # False: test only each operator's selected weight source, its random control, pca-h
    notes: list[str] = field(default_factory=list)


def setup_for(model_id: str, quick: bool) -> Setup:
    weights = ("qk", "ov-left", "ov-right", "qkv", "qkv-raw")
    if quick:
        return Setup(2, 500, [("mid_block.attentions.0", "mid_block")], ("qk", "ov-left", "qkv", "random", "pca-h"),
                     1, [0, 1], [100, 101, 102], 2, 8, 8, True)  # fmt: skip
    if model_id == "terrain128":
        return Setup(
            1, 0, [("network.input_blocks.16.1", "network.input_blocks.16.1")],
            ("qk", "ov-left", "qkv", "random", "pca-h"), 1, list(range(4)), list(range(1000, 1032)), 2, 48, 4, False,
            test_all=False,
            notes=["terrain128 (0.9 s per image on this CPU): one layer, 4 selection seeds, top-1 candidates, "
                   "decompositions qk/ov-left/qkv; on test seeds only each operator's selected weight decomposition, "
                   "its random control and pca-h; no pullback (double backward through the 128 px UNet per image)"],
        )  # fmt: skip
    if model_id == "faces64":
        return Setup(
            10, 500,
            [("mid_block.attentions.0", "mid_block"), ("up_blocks.1.attentions.1", "up_blocks.1.attentions.1")],
            ("qk", "ov-left", "ov-right", "qkv", "random", "pca-h"), 3, list(range(6)), list(range(1000, 1032)),
            3, 64, 64, True,
            notes=["faces64: the paper's h-space (mid-block attention output, 8x8) and the last 16x16 attention; "
                   "SeFa's qkv only (qkv-raw measured on the other models)"],
        )  # fmt: skip
    return Setup(
        10, 500,
        [("up_blocks.0.attentions.1", "up_blocks.0.attentions.1"), ("mid_block.attentions.0", "mid_block")],
        (*weights, "random", "pca-h"), 3, list(range(6)), list(range(1000, 1032)), 3, 128, 64, True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- edits


class Runner:
    """Edits seeds of one model with one method (operator + directions or pullback) at given strengths."""

    def __init__(self, model: DiffusionModel, setup: Setup):
        self.model, self.setup = model, setup
        self.noise: dict[int, torch.Tensor] = {}
        self.plain: dict[int, torch.Tensor] = {}
        self.pullback_basis: dict[int, torch.Tensor] = {}
        self.images = 0

    def x(self, seeds: list[int]) -> torch.Tensor:
        for s in seeds:
            if s not in self.noise:
                self.noise[s] = sampling.noise_from_seeds(self.model, [s])[0]
        return torch.stack([self.noise[s] for s in seeds])

    def plain_images(self, seeds: list[int]) -> torch.Tensor:
        todo = [s for s in seeds if s not in self.plain]
        for i in range(0, len(todo), self.setup.batch):
            part = todo[i : i + self.setup.batch]
            out = self.model.decode(sampling.sample(self.model, self.x(part), self.setup.steps))
            self.plain.update(zip(part, out, strict=True))
        return torch.stack([self.plain[s] for s in seeds])

    def edit(self, method: dict, index: int, seeds: list[int], strengths: list[float]) -> torch.Tensor:
        """Images (len(strengths), len(seeds), C, H, W) of direction ``index``."""
        return self.edits(method, [(index, a) for a in strengths], seeds)

    def edits(self, method: dict, pairs: list[tuple[int, float]], seeds: list[int]) -> torch.Tensor:
        """Images (len(pairs), len(seeds), C, H, W) for (direction index, strength) pairs, all in large batches;
        a batch whose edit fails (non-finite) gives NaN images."""
        n = len(seeds)
        x = self.x(seeds).repeat(len(pairs), *([1] * len(self.model.sample_shape)))
        k = method["candidates"]
        alphas = torch.zeros(len(pairs) * n, k)
        for p, (index, a) in enumerate(pairs):
            alphas[p * n : (p + 1) * n, index] = a
        out = []
        for i in range(0, len(x), self.setup.batch):
            sl = slice(i, min(len(x), i + self.setup.batch))
            try:
                out.append(self._edit(method, x[sl], alphas[sl], [seeds[j % n] for j in range(sl.start, sl.stop)]))
            except ValueError as err:
                if "non-finite" not in str(err):
                    raise
                out.append(torch.full((sl.stop - sl.start, *self.model.image_shape), float("nan")))
        self.images += len(x)
        return torch.cat(out).view(len(pairs), n, *self.model.image_shape)

    def _edit(self, method: dict, x: torch.Tensor, alphas: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        if method["operator"] == "pullback":
            v = torch.stack(
                [(self.basis(s) * a[:, None, None, None]).sum(0) for s, a in zip(seeds, alphas, strict=True)]
            )
            moved = x + x.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * v
            return self.model.decode(sampling.sample(self.model, moved, self.setup.steps))
        edit = sampling.Edit(method["directions"], alphas, t_edit=self.setup.t_edit, location=method["location"],
                             operator=method["operator"])  # fmt: skip
        edited = sampling.edit_images(self.model, x, edit, self.setup.steps, self.setup.batch)
        return self.model.decode(edited)

    def basis(self, seed: int) -> torch.Tensor:
        """Park et al.'s local basis at x_T (the first DDIM step): top right singular vectors of d h / d x_T."""
        if seed not in self.pullback_basis:
            sched = self.model.scheduler
            sched.set_timesteps(self.setup.steps)
            t = int(sched.timesteps[0])
            vectors, _, _ = pullback_directions(
                self.model, self.x([seed])[0], t, rank=self.setup.candidates, max_iter=8, location="mid_block",
                seed=seed, min_iter=3, tol=1e-3,
            )  # fmt: skip
            self.pullback_basis[seed] = vectors
        return self.pullback_basis[seed]


def pixel_change(edited: torch.Tensor, plain: torch.Tensor) -> float:
    """Mean |edited - plain| over pixels and images (NaN images count as a change of 1)."""
    d = (edited - plain).abs().flatten(1).mean(1)
    return float(torch.nan_to_num(d, nan=1.0).mean())


def calibrate(runner: Runner, method: dict, index: int, seeds: list[int], plain: torch.Tensor) -> dict[float, float]:
    """Strength per target from a power-law fit c = exp(q) a^p through two measurements (then one refinement
    of the larger target)."""
    op = method["operator"]
    cap = MAX_STRENGTH[op]

    def change(a: float) -> float:
        imgs = runner.edit(method, index, seeds, [a, -a])
        return (pixel_change(imgs[0], plain) + pixel_change(imgs[1], plain)) / 2

    a0 = NOMINAL[op]
    c0 = change(a0)
    a1 = min(cap, a0 * TARGETS[1] / max(c0, 1e-4)) if c0 < 1.0 else a0 / 8
    if abs(math.log(a1 / a0)) < 0.05:
        a1 = a0 * 1.5
    c1 = change(a1)
    points = sorted([(a0, c0), (a1, c1)])

    def solve(target: float) -> float:
        (x0, y0), (x1, y1) = points[0], points[-1]
        p = (math.log(max(y1, 1e-6)) - math.log(max(y0, 1e-6))) / (math.log(x1) - math.log(x0))
        p = p if p > 0.2 else 1.0
        nearest = min(points, key=lambda pt: abs(math.log(max(pt[1], 1e-6) / target)))
        return float(min(cap, nearest[0] * (target / max(nearest[1], 1e-6)) ** (1 / p)))

    a2 = solve(TARGETS[1])
    points.append((a2, change(a2)))
    return {t: solve(t) for t in TARGETS}


# ------------------------------------------------------------------------------------------------- scoring


def ladder(strength: dict[float, float]) -> list[float]:
    s3, s6 = strength[TARGETS[0]], strength[TARGETS[1]]
    return [-s6, -s3, 0.0, s3, s6]


def attribute_series(probe: Probe, images: torch.Tensor, plain: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Per continuous attribute: (5, N) change from plain (NaN where unreadable); and the (5, N) valid mask."""
    reads0 = probe(plain)
    out, valid = {}, []
    reads = [probe(torch.nan_to_num(img, nan=0.0)) for img in images]
    for r, img in zip(reads, images, strict=True):
        valid.append(r["valid"] & reads0["valid"] & torch.isfinite(img.flatten(1)).all(1))
    valid = torch.stack(valid)
    for name in probe.units:
        if name in probe.categorical:
            continue
        d = torch.stack([probe.difference(name, r[name], reads0[name]).double() for r in reads])
        out[name] = torch.where(valid, d, torch.full_like(d, float("nan"))).numpy()
    return out, valid


def series_scores(series: dict, strengths: list[float]) -> dict[str, dict]:
    """Per attribute: mean Spearman rho over seeds (seeds with >= 4 readable strengths) and per-seed values."""
    s = np.asarray(strengths)
    out = {}
    for name, d in series.items():
        rhos = []
        for j in range(d.shape[1]):
            ok = np.isfinite(d[:, j])
            rhos.append(spearman(s[ok], d[ok, j]) if ok.sum() >= 4 else float("nan"))
        rhos = np.asarray(rhos)
        out[name] = {"rho": float(np.nanmean(rhos)) if np.isfinite(rhos).any() else 0.0, "rhos": rhos}
    return out


def scales_for(probe: Probe, plain: torch.Tensor) -> dict[str, float]:
    reads = probe(plain)
    out = {}
    for name in probe.units:
        values = reads[name][reads["valid"]].double()
        out[name] = probe.scales.get(name) or max(float(values.std()) if len(values) > 1 else 1.0, 1e-6)
    return out


# ------------------------------------------------------------------------------------------------- methods


def method_list(model: DiffusionModel, setup: Setup, layer: str, location: str) -> list[dict]:
    """Every (operator, source) at one layer config, with its directions (top candidates)."""
    k = setup.candidates
    weights = read_attention_weights(model.unet, layer)
    channels = operators.location_dims(model, location)[0]
    methods = []
    pca = None
    for op in operators.OPERATORS:
        for source in setup.sources:
            if source == "random":
                continue
            if source == "pca-h":
                if op == "spectral":
                    continue
                if pca is None:
                    hidden = collect_hidden(
                        model, list(range(5000, 5000 + setup.pca_seeds)), setup.steps, setup.t_edit, location
                    )
                    pca = pca_directions(hidden, k)
                methods.append(dict(operator=op, source="pca-h", directions=pca, layer=layer, location=location))
                continue
            if op == "spectral" and source == "ov-right":
                continue  # the same modes as ov-left
            dirs = source_directions(model, layer, source).top(k)
            name = "ov" if op == "spectral" and source == "ov-left" else source
            methods.append(dict(operator=op, source=name, directions=dirs, layer=layer, location=location))
            if op == "spectral" and "random" in setup.sources:
                ctrl = operators.random_modes(dirs, weights, seed=11)
                methods.append(dict(operator=op, source=f"random:{name}", directions=ctrl, layer=layer,
                                    location=location))  # fmt: skip
        if op != "spectral" and "random" in setup.sources:
            vectors = random_directions(k, channels, seed=11).float()
            dirs = Directions(vectors, torch.zeros(k), {"decomposition": "random", "layer": layer})
            methods.append(dict(operator=op, source="random", directions=dirs, layer=layer, location=location))
    if setup.pullback:
        methods.append(dict(operator="pullback", source="pullback", directions=None, layer="-", location="mid_block"))
    for m in methods:
        m["candidates"] = k if m["directions"] is None else len(m["directions"])
    return methods


def source_directions(model: DiffusionModel, layer: str, source: str) -> Directions:
    """A weight decomposition's directions; ``qkv-raw``: eigenvectors of A^T A without SeFa's unit-norm rows
    (the variant eigenedit used before, measured here against SeFa's recipe)."""
    if source != "qkv-raw":
        return compute_directions(model.unet, layer, source, model_id=model.model_id)
    dirs = compute_directions(model.unet, layer, "qkv", model_id=model.model_id)
    w = read_attention_weights(model.unet, layer)
    a = torch.cat([w.q, w.k, w.v])
    values, vectors = torch.linalg.eigh(a.T @ a)
    order = torch.argsort(values.abs(), descending=True)
    vectors = fix_signs(vectors.T[order])
    return Directions(vectors.float(), values[order].float(), dict(dirs.metadata, decomposition="qkv-raw"))


def key(m: dict) -> tuple[str, str]:
    return (m["operator"], m["source"])


def select(runner: Runner, probe: Probe, method: dict, setup: Setup) -> dict:
    """On selection seeds: a rough strength (candidate 0), then per candidate the 5-strength rho per attribute."""
    seeds = setup.selection
    cal = seeds[: setup.calibration]
    plain = runner.plain_images(seeds)
    strength = calibrate(runner, method, 0, cal, plain[: len(cal)])
    strengths = ladder(strength)
    best = None
    moved = [s for s in strengths if s != 0]
    every = runner.edits(method, [(i, s) for i in range(method["candidates"]) for s in moved], seeds)
    for index in range(method["candidates"]):
        edited = every[4 * index : 4 * index + 4]
        images = torch.cat([edited[:2], plain[None], edited[2:]])
        series, _ = attribute_series(probe, images, plain)
        for name, sc in series_scores(series, strengths).items():
            score = abs(sc["rho"])
            if best is None or score > best["score"]:
                best = dict(score=score, index=index, attribute=name, sign=1.0 if sc["rho"] >= 0 else -1.0,
                            rho=sc["rho"], rough_strength=strength)  # fmt: skip
    return best


def test(runner: Runner, probe: Probe, method: dict, choice: dict, setup: Setup, scales: dict) -> dict:
    """Calibrate the chosen candidate on the calibration seeds, then every number on the test seeds."""
    cal = setup.selection[: setup.calibration]
    strength = calibrate(runner, method, choice["index"], cal, runner.plain_images(cal))
    strengths = ladder(strength)
    plain = runner.plain_images(setup.test)
    edited = runner.edit(method, choice["index"], setup.test, [s for s in strengths if s != 0])
    images = torch.cat([edited[:2], plain[None], edited[2:]])
    series, valid = attribute_series(probe, images, plain)
    name, sign = choice["attribute"], choice["sign"]
    rhos = series_scores({name: series[name]}, strengths)[name]["rhos"] * sign
    d = series[name] * sign / scales[name]
    moved = d[4] - d[0]
    ok = np.isfinite(moved)
    row = {
        "operator": method["operator"],
        "source": method["source"],
        "layer": method["layer"],
        "location": method["location"],
        "index": choice["index"],
        "attribute": name,
        "sign": sign,
        "strengths": strengths,
        "selection_rho": choice["rho"] * sign,
        "rho": float(np.nanmean(rhos)) if np.isfinite(rhos).any() else 0.0,
        "agree": float((moved[ok] > 0).mean()) if ok.any() else 0.0,
        "effect": {str(t): float(np.nanmean((d[3 + i] - d[1 - i]) / 2)) for i, t in enumerate(TARGETS)},
        "pixel": {
            str(t): (pixel_change(edited[2 + i], plain) + pixel_change(edited[1 - i], plain)) / 2
            for i, t in enumerate(TARGETS)
        },  # fmt: skip
        "valid": float(valid.float().mean()),
        "seeds_used": int(ok.sum()),
    }
    example = images[:, 0]
    return row | {"_example": example}


# -------------------------------------------------------------------------------------------------- timing


def timing(model: DiffusionModel, setup: Setup, layer: str, location: str, repeats: int) -> dict[str, float]:
    """Median seconds of plain sampling and of each operator (one direction, alpha small) on the same batch,
    interleaved; ratios to plain."""
    x = sampling.noise_from_seeds(model, list(range(min(16, setup.batch))))
    dirs = compute_directions(model.unet, layer, "ov-left").top(1)
    times: dict[str, list[float]] = {"plain": [], **{op: [] for op in operators.OPERATORS}}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            if name == "plain":
                sampling.sample(model, x, setup.steps)
            else:
                alphas = torch.full((len(x), 1), NOMINAL[name] * 0.1)
                edit = sampling.Edit(dirs, alphas, t_edit=setup.t_edit, location=location, operator=name)
                sampling.edit_images(model, x, edit, setup.steps, setup.batch)
            times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": medians, "ratio": {k: v / medians["plain"] for k, v in medians.items()}, "repeats": repeats}


# -------------------------------------------------------------------------------------------------- driver


def run_model(model_id: str, setup: Setup, probe: Probe, progress: bool = True) -> dict:
    model = load_model(model_id)
    runner = Runner(model, setup)
    start = time.perf_counter()
    selection_plain = runner.plain_images(setup.selection)
    del selection_plain
    chosen: dict[tuple[str, str], tuple[dict, dict]] = {}
    screened = []
    for layer, location in setup.configs:
        for method in method_list(model, setup, layer, location):
            if method["operator"] == "pullback" and key(method) in chosen:
                continue  # the pullback does not depend on the layer
            choice = select(runner, probe, method, setup)
            screened.append({"operator": method["operator"], "source": method["source"], "layer": layer,
                             **{k: v for k, v in choice.items() if k != "rough_strength"},
                             "rough_strengths": {str(t): s for t, s in choice["rough_strength"].items()}})  # fmt: skip
            if key(method) not in chosen or choice["score"] > chosen[key(method)][1]["score"]:
                chosen[key(method)] = (method, choice)
            if progress:
                print(f"[{model_id} {time.perf_counter() - start:6.0f} s, {runner.images} images] select "
                      f"{method['operator']:8s} {method['source']:14s} {layer}: {choice['attribute']} "
                      f"rho {choice['rho']:+.2f} (direction {choice['index']})", flush=True)  # fmt: skip
    to_test = list(chosen)
    if not setup.test_all:  # each operator's best weight source (by selection), its control, pca-h under shift
        to_test = []
        for op in operators.OPERATORS:
            weight = [k for k in chosen if k[0] == op and k[1] not in ("pca-h", "pullback")
                      and not k[1].startswith("random")]  # fmt: skip
            best = max(weight, key=lambda k: chosen[k][1]["score"])
            control = (op, f"random:{best[1]}") if op == "spectral" else (op, "random")
            to_test += [best, control]
        to_test.append(("shift", "pca-h"))
    scales = scales_for(probe, runner.plain_images(setup.test))
    rows, examples = [], {}
    for k in to_test:
        method, choice = chosen[k]
        row = test(runner, probe, method, choice, setup, scales)
        examples[k] = row.pop("_example")
        rows.append(row)
        if progress:
            print(f"[{model_id} {time.perf_counter() - start:6.0f} s] test {k[0]:8s} {k[1]:14s}: {row['attribute']} "
                  f"rho {row['rho']:+.2f} agree {row['agree']:.2f} effect {row['effect']['0.06']:+.2f} "
                  f"pixel {row['pixel']['0.06']:.3f}", flush=True)  # fmt: skip
    best_layer = {op: chosen.get((op, "qk"), (None, {}))[0] for op in operators.OPERATORS}
    layer, location = setup.configs[0]
    for m in best_layer.values():
        if m is not None:
            layer, location = m["layer"], m["location"]
            break
    cost = timing(model, setup, layer, location, repeats=5 if setup.steps > 1 else 3)
    return {
        "model": model_id,
        "probe": probe.name,
        "steps": setup.steps,
        "t_edit": setup.t_edit,
        "configs": setup.configs,
        "candidates": setup.candidates,
        "selection_seeds": setup.selection,
        "calibration_seeds": setup.selection[: setup.calibration],
        "test_seeds": setup.test,
        "pca_seeds": [5000, 5000 + setup.pca_seeds - 1],
        "notes": setup.notes,
        "scales": scales,
        "screened": screened,
        "rows": rows,
        "cost": cost,
        "images": runner.images,
        "seconds": time.perf_counter() - start,
        "_examples": examples,
        "_plain": runner.plain_images(setup.test[:1])[0],
    }


# ------------------------------------------------------------------------------------------------- reports


def control_of(row: dict, rows: list[dict]) -> dict | None:
    if row["source"].startswith("random") or row["source"] in ("pca-h", "pullback"):
        return None
    name = f"random:{row['source']}" if row["operator"] == "spectral" else "random"
    return next((r for r in rows if r["operator"] == row["operator"] and r["source"] == name), None)


def pca_of(row: dict, rows: list[dict]) -> dict | None:
    op = row["operator"] if row["operator"] in ("shift", "scale", "xspace") else "shift"
    return next((r for r in rows if r["operator"] == op and r["source"] == "pca-h"), None) or next(
        (r for r in rows if r["source"] == "pca-h"), None
    )


def beats(row: dict, ctrl: dict | None) -> bool:
    """A weight row beats its control when it is a real edit (rho >= 0.5, agree >= 0.75), more monotonic than the
    control (by 0.1) and moves more seeds the same way."""
    real = row["rho"] >= 0.5 and row["agree"] >= 0.75
    return ctrl is not None and real and row["rho"] > ctrl["rho"] + 0.1 and row["agree"] > ctrl["agree"]


def capped(r: dict) -> bool:
    """The strength hit the operator's cap: the row did not reach the pixel-change target."""
    return max(abs(s) for s in r["strengths"]) >= MAX_STRENGTH[r["operator"]] * 0.999


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{r['rho']:+.2f} / {r['agree']:.2f} / {r['effect']['0.06']:+.2f}{' (cap)' if capped(r) else ''}"


def markdown(results: list[dict]) -> str:
    lines = [
        "Test seeds only. Cells: **rho** (mean Spearman rho of the selected attribute vs the 5 strengths) / "
        "**agree** (share of seeds moving the selected way) / **effect** at pixel change 0.06 (attribute units). "
        "Strengths are matched per method to mean pixel changes 0.03 and 0.06; `pixel .03/.06` is what the test "
        "seeds reached. Random = the same operator with random directions (spectral: random rank-one modes of "
        "the same per-head strengths); pca-h = Haas et al.'s h-space PCA under the same operator (spectral: shift). "
        "(cap): the strength hit the operator's cap before reaching the target, so that row is not at matched "
        "change. Beats random: rho >= 0.5, agree >= 0.75, rho above the control's by 0.1 and agree above its.",
        "",
    ]
    for res in results:
        rows = res["rows"]
        cost = res["cost"]["ratio"]
        lines += [
            f"### {res['model']} ({res['probe']} probe; {len(res['selection_seeds'])} selection seeds "
            f"{res['selection_seeds'][0]}-{res['selection_seeds'][-1]}, {len(res['test_seeds'])} test seeds "
            f"{res['test_seeds'][0]}-{res['test_seeds'][-1]}; {res['steps']} DDIM steps, t_edit {res['t_edit']})",
            "",
            "cost vs plain sampling: " + ", ".join(f"{op} {cost[op]:.2f}x" for op in operators.OPERATORS),
            "",
            "| operator | source | layer | attribute | rho / agree / effect | random same operator | pca-h | "
            "pixel .03/.06 | beats random |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["source"].startswith("random"):
                continue
            ctrl = control_of(r, rows)
            pca = pca_of(r, rows) if r["source"] not in ("pca-h", "pullback") else None
            flag = "" if ctrl is None else ("**yes**" if beats(r, ctrl) else "no")
            flag += " (control capped)" if flag == "**yes**" and capped(ctrl) else ""
            lines.append(
                f"| {r['operator']} | {r['source']} (#{r['index']}) | {r['layer']} | {'+' if r['sign'] > 0 else '-'}"
                f"{r['attribute']} | {cell(r)} | {cell(ctrl)} | {cell(pca)} | "
                f"{r['pixel']['0.03']:.3f}/{r['pixel']['0.06']:.3f} | {flag} |"
            )
        verdict = [r for r in rows if beats(r, control_of(r, rows))]
        if not verdict:
            lines += ["", f"On {res['model']}, no operator lets weight directions beat random directions under the "
                      "same operator on the test seeds."]  # fmt: skip
        else:
            names = ", ".join(f"{r['operator']} {r['source']}" for r in verdict)
            lines += ["", f"On {res['model']}, weight directions beat random-same-operator with: {names}."]
        for note in res["notes"]:
            lines += ["", f"Note: {note}"]
        lines.append("")
    return "\n".join(lines)


def figure(results: list[dict], path: Path) -> None:
    """Per model: the test seed 0 at the 5 strengths for each operator's best weight row and its control."""
    panels = []
    for res in results:
        rows, examples = res["rows"], res["_examples"]
        shown = []
        for op in ("shift", "scale", "spectral", "xspace", "pullback"):
            weight = [r for r in rows if r["operator"] == op and not r["source"].startswith("random")
                      and r["source"] != "pca-h"]  # fmt: skip
            if not weight:
                continue
            best = max(weight, key=lambda r: abs(r["selection_rho"]))  # chosen on selection seeds
            shown.append(best)
            ctrl = control_of(best, rows)
            if ctrl is not None:
                shown.append(ctrl)
        images = torch.cat([examples[(r["operator"], r["source"])] for r in shown])
        labels = [f"{r['operator']} {r['source']} rho {r['rho']:+.2f}" for r in shown]
        cols = ["-s.06", "-s.03", "plain", "+s.03", "+s.06"]
        scale = max(1, 128 // images.shape[-1])
        panels.append(image_grid(torch.nan_to_num(images), len(shown), 5, labels, cols, scale=scale))
    width = max(p.width for p in panels)
    canvas = Image.new("RGB", (width, sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        canvas.paste(p, (0, y))
        y += p.height
    canvas.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes32", "fashion32", "terrain128", "faces64"])
    p.add_argument("--probe", default=None, help="probe for models without a shipped one (e.g. shapes)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 DDIM steps, 2+3 seeds, one candidate")
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument("--report-only", action="store_true", help="merge the models' saved parts into the report")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    parts = args.output_dir / "operators-parts"
    parts.mkdir(exist_ok=True)
    for model_id in [] if args.report_only else args.models:
        probe = probe_for_model(model_id) or (load_probe(args.probe) if args.probe else None)
        if probe is None:
            raise SystemExit(f"no probe for {model_id!r}: give --probe")
        result = run_model(model_id, setup_for(model_id, args.quick), probe)
        result["command"] = "python -m benchmarks.operators " + " ".join(sys.argv[1:] if argv is None else argv)
        result["date"] = time.strftime("%Y-%m-%d %H:%M")
        result["_examples"] = {"|".join(k): v for k, v in result["_examples"].items()}
        torch.save(result, parts / f"{Path(model_id).name}.pt")  # one model per part: models can run in parallel
    results = []
    for model_id in args.models:
        result = torch.load(parts / f"{Path(model_id).name}.pt", weights_only=False)
        result["_examples"] = {tuple(k.split("|")): v for k, v in result["_examples"].items()}
        results.append(result)
    figure(results, args.output_dir / "operators.png")
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    data = {
        "date": time.strftime("%Y-%m-%d"),
        "torch_threads": torch.get_num_threads(),
        "targets": TARGETS,
        "seconds": sum(r["seconds"] for r in results),
        "models": public,
    }
    (args.output_dir / "operators.json").write_text(json.dumps(data, indent=1, default=float))
    (args.output_dir / "operators.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.output_dir}/operators.{{json,md,png}} (the runs took {data['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
