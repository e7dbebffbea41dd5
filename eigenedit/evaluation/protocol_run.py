"""Run the strict protocol (``eigenedit.evaluation.protocol``) on one model and write results/protocol_{model}.*

    python -m eigenedit.evaluation.protocol_run --model faces64 [--quick] [--write-defaults]

Phases, each paid for once (the JSON's ``timing`` says where the time went):

1. **calibration**: every direction's alpha, on calibration seeds of their own, so that +-alpha changes images by
   ``target_change`` (mean |delta| on the 0..1 scale, ``metrics.pixel_change``); a power-law fit through two
   measurements. Test seeds record the change each row reached; a miss of more than 15% is flagged.
2. **screen** (selection seeds): the top-k directions of every decomposition, at every (operator, layer,
   location) group, each with its best attribute and sign by the precision score; beside every group, a small
   random distribution scored the same way.
3. **full treatment** of the best screened rows (test blocks): a random distribution of ``random_per_row``
   directions shared by all rows of the same group (random rank-one modes for ``spectral``), each calibrated,
   selected and tested exactly like the weight rows; percentiles, intervals and the best-of-m p-value.
4. **ceiling**: a supervised linear direction per attribute (ridge on the hidden state pooled over positions and
   edited steps, from probe labels of generated samples; a reference, never a default), under the same operator
   at matched change, with the held-out R^2 of the read-out.
5. **alignment**: |cos| of each weight direction with each supervised one against random unit vectors, and the
   energy of each supervised direction in the top-k weight subspace against k/C.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eigenedit.core import operators, sampling
from eigenedit.core.attention import read_attention_weights
from eigenedit.core.colour_axes import colour_axes, without_colour
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import SINGLE_MATRICES, random_directions
from eigenedit.evaluation import protocol
from eigenedit.evaluation.baselines import collect_hidden
from eigenedit.evaluation.metrics import attribute_scale, pixel_change
from eigenedit.evaluation.probes import Probe, probe_for_model
from eigenedit.models import DiffusionModel, load_model

NOMINAL = {"shift": 1.0, "scale": 1.0, "spectral": 1.0, "xspace": 0.01}  # first calibration strength
MAX_ALPHA = {"shift": 50.0, "scale": 50.0, "spectral": 200.0, "xspace": 1.0}
WEIGHT_SOURCES = ("qk", "ov-left", "ov-right", "qkv")
NO_COLOUR = ":no-colour"  # a source suffix: its directions with the data-free colour axes taken out
Group = tuple  # (operator, layer, location[, t_edit, target_change]); the last two default to the plan's


@dataclass
class Plan:
    """What one protocol run measures; ``plan_for`` gives each shipped model's."""

    model_id: str
    steps: int = 10
    t_edit: int = 500
    groups: list[Group] = field(default_factory=list)  # (operator, layer, location[, t_edit, target_change])
    sources: tuple[str, ...] = WEIGHT_SOURCES
    candidates: int = 3  # top k of every decomposition
    calibration_seeds: list[int] = field(default_factory=lambda: list(range(8)))
    selection_seeds: list[int] = field(default_factory=lambda: list(range(100, 116)))
    test_blocks: list[list[int]] = field(default_factory=lambda: [list(range(1000, 1032)), list(range(2000, 2032))])
    random_per_row: int = 32
    screen_random: int = 8
    full_rows: int = 3  # best screened rows given the full treatment
    full_groups: int = 2  # at most this many groups (each costs one random distribution)
    ceiling_samples: int = 512
    ceiling_attributes: tuple[str, ...] | None = None  # None: every target attribute
    target_change: float = 0.03
    not_targets: tuple[str, ...] = ()  # probe reads that are nuisances here (terrain: elevation)
    batch: int = 64
    notes: list[str] = field(default_factory=list)


def _groups(pairs: list[tuple[str, str]], ops=("shift", "scale", "spectral", "xspace"), *window) -> list[Group]:
    """Every operator at every (layer, location), with an optional (t_edit, target_change) window."""
    return [(op, layer, loc, *window) for layer, loc in pairs for op in ops]


def group_settings(group: Group, plan: Plan) -> tuple[str, str, str, int, float]:
    """(operator, layer, location, t_edit, target_change) of a group, the plan's window where it gives none."""
    op, layer, loc, *window = group
    t_edit, target = (list(window) + [plan.t_edit, plan.target_change][len(window) :])[:2]
    return op, layer, loc, int(t_edit), float(target)


def plan_for(model_id: str, quick: bool = False) -> Plan:
    """Each shipped model's plan; ``quick`` shrinks it to run every code path on a few seeds (for the tests)."""
    plan = _full_plan(model_id)
    if not quick:
        return plan
    first = [g for g in plan.groups if g[1] == plan.groups[0][1]]
    groups = [g for g in first if g[0] != "spectral"][:2] + [g for g in first if g[0] == "spectral"]
    return replace(
        plan, groups=groups, sources=plan.sources[:2], candidates=1, calibration_seeds=[0, 1],
        selection_seeds=[100, 101], test_blocks=[[1000, 1001], [2000, 2001]], random_per_row=3, screen_random=2,
        full_rows=2, full_groups=2, ceiling_samples=24, ceiling_attributes=None, batch=32,
        notes=["--quick: every code path on a few seeds; no number here is a result"],
    )  # fmt: skip


def _full_plan(model_id: str) -> Plan:
    if model_id == "terrain128":
        layer = "network.input_blocks.16.1"
        return Plan(
            model_id, steps=1, t_edit=0,
            groups=[(op, layer, layer) for op in ("shift", "scale", "spectral")] + [("shift", layer, layer, 0, 0.06)],
            sources=("qk", "ov-left", "qkv", *SINGLE_MATRICES), candidates=2, calibration_seeds=list(range(8)),
            selection_seeds=list(range(100, 104)), test_blocks=[list(range(1000, 1016)), list(range(2000, 2016))],
            random_per_row=16, screen_random=4, full_rows=2, full_groups=1, ceiling_samples=96, batch=8,
            not_targets=("elevation",),
            notes=["terrain128 costs about 0.3-0.9 s per image: one layer, 16 random per row, 2 x 16 test seeds; "
                   "xspace left out (a gradient through the 128 px UNet per step); one sampling step, so no t_edit "
                   "windows; shift also at twice the change"],
        )  # fmt: skip
    if model_id == "faces64":
        mid, up = ("mid_block.attentions.0", "mid_block"), ("up_blocks.1.attentions.1", "up_blocks.1.attentions.1")
        return Plan(
            model_id,
            groups=_groups([mid], ("shift", "spectral", "xspace")) + _groups([mid], ("shift",), 0, 0.03)
            + _groups([mid], ("shift",), 500, 0.06) + _groups([up], ("shift", "scale"), 0, 0.03),
            sources=WEIGHT_SOURCES + SINGLE_MATRICES + ("ov-left" + NO_COLOUR, "ov-right" + NO_COLOUR),
            candidates=2, selection_seeds=list(range(100, 108)), screen_random=4, full_rows=3, full_groups=1,
            ceiling_samples=384,
            ceiling_attributes=("smile", "mouth_open", "eye_open", "glasses", "beard", "yaw", "face_width",
                                "hair_color"),
            notes=["faces64 costs about 0.25 s per image here: top 2 of every decomposition (the four products, "
                   "each matrix alone, ov with the colour axes taken out), 8 selection seeds; h-space at t_edit "
                   "500 and 0 and at twice the change, the 16x16 attention at t_edit 0 (the late steps, where "
                   "mouth, eyes, glasses and beard become readable); the full treatment for the best group only; "
                   "one head per layer, so no per-head rows; scale at the mid-block and spectral at the 16x16 "
                   "layer were screened on 2026-12-06 (results/protocol_faces64.json of that day) and left out "
                   "for time"],
        )  # fmt: skip
    return Plan(
        model_id,
        groups=_groups(
            [("mid_block.attentions.0", "mid_block"), ("up_blocks.0.attentions.1", "up_blocks.0.attentions.1")]
        ),
        candidates=2,
        selection_seeds=list(range(100, 112)),
        screen_random=6,
    )


class Lab:
    """One model and probe, with cached noise, plain images and reads; edits many (direction, alpha) pairs in
    large batches; counts images and seconds per phase."""

    def __init__(self, model: DiffusionModel, probe: Probe, plan: Plan, progress: bool = True):
        self.model, self.probe, self.plan, self.progress = model, probe, plan, progress
        self.plain: dict[int, torch.Tensor] = {}
        self.reads_cache: dict[int, dict[str, float]] = {}
        self.images: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.phase = "setup"
        seeds = plan.calibration_seeds + plan.selection_seeds
        reads = self.read(self.plain_images(seeds))
        self.continuous = [n for n in reads if n != "valid" and n not in probe.categorical]
        self.targets = [n for n in self.continuous if n not in protocol.NUISANCE and n not in plan.not_targets]
        self.scales = {n: attribute_scale(reads[n][reads["valid"]], probe.scales.get(n)) for n in self.continuous}

    def at(self, t_edit: int, target_change: float) -> Lab:
        """This lab with another edit window (t_edit) and target change; caches and counters are shared."""
        view = copy.copy(self)
        view.plan = replace(self.plan, t_edit=t_edit, target_change=target_change)
        return view

    def timed(self, phase: str):
        lab = self

        class _Phase:
            def __enter__(self):
                self.prev, self.start = lab.phase, time.perf_counter()
                lab.phase = phase

            def __exit__(self, *exc):
                lab.seconds[phase] += time.perf_counter() - self.start
                lab.phase = self.prev

        return _Phase()

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The probe's reads plus the nuisance reads (brightness; red, green, blue for colour images)."""
        finite = torch.isfinite(images.flatten(1)).all(1)
        clean = torch.nan_to_num(images, nan=0.0)
        reads = self.probe(clean)
        reads["valid"] = reads["valid"] & finite
        unit = (clean.float().clamp(-1, 1) + 1) / 2
        reads["brightness"] = unit.mean((1, 2, 3))
        if unit.shape[1] == 3:
            for c, name in enumerate(("red", "green", "blue")):
                reads[name] = unit[:, c].mean((1, 2))
        return reads

    def plain_images(self, seeds: list[int]) -> torch.Tensor:
        todo = [s for s in seeds if s not in self.plain]
        for i in range(0, len(todo), self.plan.batch):
            part = todo[i : i + self.plan.batch]
            x = sampling.noise_from_seeds(self.model, part)
            out = self.model.decode(sampling.sample(self.model, x, self.plan.steps))
            self.plain.update(zip(part, out, strict=True))
            self.images[self.phase] += len(part)
        return torch.stack([self.plain[s] for s in seeds])

    def edit(self, op: str, location: str, dirs: Directions, pairs: list[tuple[int, float]], seeds: list[int]):
        """Images (len(pairs), len(seeds), C, H, W); a batch whose edit blows up gives NaN images."""
        n = len(seeds)
        x = sampling.noise_from_seeds(self.model, seeds).repeat(len(pairs), *([1] * len(self.model.sample_shape)))
        alphas = torch.zeros(len(pairs) * n, len(dirs))
        for p, (index, a) in enumerate(pairs):
            alphas[p * n : (p + 1) * n, index] = a
        out = []
        batches = list(range(0, len(x), self.plan.batch))
        for i in tqdm(batches, desc=f"{self.phase} {op}", disable=not self.progress or len(batches) < 4, leave=False):
            sl = slice(i, min(len(x), i + self.plan.batch))
            try:
                edit = sampling.Edit(directions=dirs, alphas=alphas[sl], t_edit=self.plan.t_edit, location=location,
                                     operator=op)  # fmt: skip
                edited = sampling.edit_images(self.model, x[sl], edit, self.plan.steps, self.plan.batch)
                out.append(self.model.decode(edited))
            except ValueError as err:
                if "non-finite" not in str(err):
                    raise
                out.append(torch.full((sl.stop - sl.start, *self.model.image_shape), float("nan")))
        self.images[self.phase] += len(x)
        return torch.cat(out).view(len(pairs), n, *self.model.image_shape)

    def calibrate(self, op: str, location: str, dirs: Directions) -> list[float]:
        """Per direction, the alpha whose +-alpha change images by ``target_change`` on the calibration seeds."""
        seeds, target, cap = self.plan.calibration_seeds, self.plan.target_change, MAX_ALPHA[op]
        plain = self.plain_images(seeds)

        def changes(alphas: list[float]) -> list[float]:
            pairs = [(i, s * a) for i, a in enumerate(alphas) for s in (1.0, -1.0)]
            imgs = self.edit(op, location, dirs, pairs, seeds)
            return [(pixel_change(plain, imgs[2 * i]) + pixel_change(plain, imgs[2 * i + 1])) / 2 for i in
                    range(len(alphas))]  # fmt: skip

        a0 = [NOMINAL[op]] * len(dirs)
        c0 = changes(a0)
        a1 = [
            min(cap, a * target / max(c, 1e-5)) if math.isfinite(c) and c < 0.5 else a / 8
            for a, c in zip(a0, c0, strict=True)
        ]
        a1 = [a * 1.5 if abs(math.log(a / b)) < 0.05 else a for a, b in zip(a1, a0, strict=True)]
        c1 = changes(a1)
        out = []
        for x0, y0, x1, y1 in zip(a0, c0, a1, c1, strict=True):
            y0, y1 = (y if math.isfinite(y) else 1.0 for y in (y0, y1))
            p = (math.log(max(y1, 1e-6)) - math.log(max(y0, 1e-6))) / (math.log(x1) - math.log(x0))
            p = p if p > 0.2 else 1.0
            xn, yn = min(((x0, y0), (x1, y1)), key=lambda pt: abs(math.log(max(pt[1], 1e-6) / target)))
            out.append(float(min(cap, xn * (target / max(yn, 1e-6)) ** (1 / p))))
        return out

    def series(self, op: str, location: str, dirs: Directions, alphas: list[float], seeds: list[int]) -> list[dict]:
        """Per direction: ``changes`` (attribute -> (5, seeds) in scale units), ``flips`` and the pixel change
        reached at +-1."""
        plain = self.plain_images(seeds)
        r0 = self.read(plain)
        moved = [s for s in protocol.STRENGTHS if s != 0]
        pairs = [(i, s * a) for i, a in enumerate(alphas) for s in moved]
        imgs = self.edit(op, location, dirs, pairs, seeds)
        out = []
        for i in range(len(alphas)):
            block = imgs[4 * i : 4 * i + 4]
            reads = [self.read(b) for b in block]
            valid = [r["valid"] & r0["valid"] for r in reads]
            changes = {}
            for name in self.continuous:
                d = [torch.where(v, self.probe.difference(name, r[name], r0[name]).double(), torch.nan) for r, v in
                     zip(reads, valid, strict=True)]  # fmt: skip
                d.insert(2, torch.zeros(len(seeds), dtype=torch.float64))
                changes[name] = torch.stack(d).numpy() / self.scales[name]
            flips = {n: np.maximum(*(self.probe.difference(n, reads[j][n], r0[n]).numpy() for j in (0, 3)))
                     for n in self.probe.categorical}  # fmt: skip
            reached = (pixel_change(plain, block[0]) + pixel_change(plain, block[3])) / 2
            out.append({"changes": changes, "flips": flips, "reached_change": reached})
        return out


def weight_directions(lab: Lab, layer: str, source: str, k: int, location: str) -> Directions:
    """The top k directions of ``source`` (a decomposition, with ``NO_COLOUR`` appended: its directions made
    orthogonal to the data-free colour axes of ``location`` over the lab's edit window)."""
    decomposition, suffix, _ = source.partition(NO_COLOUR)
    dirs = compute_directions(lab.model.unet, layer, decomposition, model_id=lab.model.model_id, k=k)
    if suffix:
        dirs = without_colour(dirs, colour_axes(lab.model, location, lab.plan.steps, lab.plan.t_edit))
    return dirs


def random_set(model: DiffusionModel, op: str, layer: str, location: str, count: int, seed: int) -> Directions:
    """``count`` random directions for this group: unit vectors in the location's channels, or for ``spectral``
    random rank-one modes with the per-head strengths of the layer's top ov mode."""
    if op == "spectral":
        top = compute_directions(model.unet, layer, "ov-left", model_id=model.model_id, k=1)
        tiled = Directions(top.vectors.repeat(count, 1), top.values.repeat(count), dict(top.metadata))
        return operators.random_modes(tiled, read_attention_weights(model.unet, layer), seed=seed)
    channels = operators.location_dims(model, location)[0]
    vectors = random_directions(count, channels, seed=seed).float()
    return Directions(vectors, torch.zeros(count), {"decomposition": "random", "layer": layer, "seed": seed})


def _group_name(group: dict) -> str:
    op, layer, loc = group["operator"], group["layer"], group["location"]
    window = f" (t_edit {group['t_edit']}, change {group['target_change']:g})" if "t_edit" in group else ""
    return f"{op} @ {layer}" + ("" if loc == layer else f" -> {loc}") + window


SPECTRAL_SOURCES = ("qk", "ov-left", "qkv")  # spectral edits a rank-one mode of one of these products


def screen(lab: Lab, group: Group) -> dict:
    """Phase 2 for one group: every weight candidate and ``screen_random`` random ones on the selection seeds."""
    op, layer, loc, t_edit, target = group_settings(group, lab.plan)
    lab = lab.at(t_edit, target)
    plan, rows = lab.plan, []
    with lab.timed("screen"):
        for source in plan.sources:
            if op == "spectral" and source not in SPECTRAL_SOURCES:
                continue  # ov-right: the same modes as ov-left; single matrices and no-colour: no mode to edit
            dirs = weight_directions(lab, layer, source, plan.candidates, loc)
            alphas = lab.calibrate(op, loc, dirs)
            for index, s in enumerate(lab.series(op, loc, dirs, alphas, plan.selection_seeds)):
                best = protocol.best_attribute(s["changes"], lab.targets)
                rows.append({"source": source, "index": index, "alpha": alphas[index], "selection": best})
        rand = random_set(lab.model, op, layer, loc, plan.screen_random, seed=7)
        alphas = lab.calibrate(op, loc, rand)
        scores = [protocol.best_attribute(s["changes"], lab.targets)["score"]
                  for s in lab.series(op, loc, rand, alphas, plan.selection_seeds)]  # fmt: skip
    return {
        "operator": op, "layer": layer, "location": loc, "t_edit": t_edit, "target_change": target, "rows": rows,
        "candidates": len(rows),
        "random_best_score": {"p50": float(np.median(scores)), "p95": float(np.percentile(scores, 95)),
                              "n": len(scores)},
    }  # fmt: skip


def full_treatment(lab: Lab, group: dict, chosen: list[dict], ceiling: dict | None) -> list[dict]:
    """Phase 3 (and 4) for the chosen rows of one group: test blocks beside a random distribution."""
    op, layer, loc = group["operator"], group["layer"], group["location"]
    lab = lab.at(group["t_edit"], group["target_change"])
    plan = lab.plan
    with lab.timed("random"):
        rand = random_set(lab.model, op, layer, loc, plan.random_per_row, seed=1000)
        r_alpha = lab.calibrate(op, loc, rand)
        r_sel = [protocol.best_attribute(s["changes"], lab.targets)
                 for s in lab.series(op, loc, rand, r_alpha, plan.selection_seeds)]  # fmt: skip
        r_test = [lab.series(op, loc, rand, r_alpha, seeds) for seeds in plan.test_blocks]
    rows = []
    with lab.timed("test"):
        for c in chosen:
            dirs = weight_directions(lab, layer, c["source"], plan.candidates, loc).select([c["index"]])
            rows.append(_test_row(lab, dirs, c["alpha"], c["selection"], group, c["source"], c["index"],
                                  r_sel, r_test, r_alpha, m=group["candidates"]))  # fmt: skip
    if ceiling is not None and op != "spectral":
        with lab.timed("ceiling"):
            wanted = plan.ceiling_attributes or tuple(lab.targets)
            names = [n for n in wanted if n in ceiling["directions"]]
            if names:
                vectors = torch.stack([ceiling["directions"][n] for n in names])
                sup = Directions(vectors, torch.zeros(len(names)), {"decomposition": "supervised", "layer": layer})
                alphas = lab.calibrate(op, loc, sup)
                for i, name in enumerate(names):
                    selection = {"attribute": name, "sign": 1.0, "score": None}
                    row = _test_row(lab, sup.select([i]), alphas[i], selection, group, "supervised", i, r_sel, r_test,
                                    r_alpha, m=None)  # fmt: skip
                    row["readout_r2"] = ceiling["r2"][name]
                    rows.append(row)
    return rows


def _test_row(lab, dirs, alpha, selection, group, source, index, r_sel, r_test, r_alpha, m) -> dict:
    op, loc = group["operator"], group["location"]
    name, sign = selection["attribute"], selection["sign"]
    blocks = []
    for b, seeds in enumerate(lab.plan.test_blocks):
        s = lab.series(op, loc, dirs, [alpha], seeds)[0]
        random_changes = [r["changes"] for r in r_test[b]]
        row = protocol.judge_block(s["changes"], name, sign, random_changes, r_sel, m, s["flips"], seed=b)
        row["reached_change"] = s["reached_change"]
        row["change_flag"] = abs(s["reached_change"] / lab.plan.target_change - 1) > protocol.CHANGE_TOLERANCE
        blocks.append(row)
    return {
        "source": source, "operator": op, "layer": group["layer"], "location": loc, "t_edit": group["t_edit"],
        "target_change": group["target_change"], "index": index,
        "attribute": name, "sign": sign, "alpha": alpha, "selection_score": selection["score"],
        "blocks": blocks, "precise": protocol.is_precise(blocks), "random_alpha_median": float(np.median(r_alpha)),
    }  # fmt: skip


def supervised(lab: Lab, location: str) -> dict:
    """Ridge read-outs from the pooled hidden state at ``location`` (edited steps) to each target attribute:
    unit directions, and held-out R^2 (fit on 3/4 of the samples, its ridge strength chosen by 4-fold
    cross-validation inside them, and scored on the rest)."""
    seeds = list(range(50_000, 50_000 + lab.plan.ceiling_samples))
    with lab.timed("ceiling"):
        hidden = collect_hidden(lab.model, seeds, lab.plan.steps, lab.plan.t_edit, location, lab.plan.batch,
                                pooled=True)  # fmt: skip
        reads = lab.read(lab.plain_images(seeds))
    x = hidden.double()
    valid = reads["valid"].numpy()
    fit = np.arange(len(seeds)) < len(seeds) * 3 // 4
    out = {"directions": {}, "r2": {}}
    for name in lab.targets:
        y = reads[name].double()
        ok = torch.as_tensor(valid & np.isfinite(y.numpy()))
        tr, te = ok & torch.as_tensor(fit), ok & ~torch.as_tensor(fit)
        if tr.sum() < 8 or te.sum() < 4:
            continue
        strength = _cv_strength(x[tr], y[tr])
        w, b = _ridge(x[tr], y[tr], strength)
        r2 = _r2(x[te] @ w + b, y[te])
        w_all, _ = _ridge(x[ok], y[ok], strength)
        out["directions"][name] = (w_all / w_all.norm().clamp_min(1e-12)).float()
        out["r2"][name] = r2
    return out


RIDGE_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative to the mean eigenvalue of the Gram matrix


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return 1 - float((pred - y).pow(2).mean() / y.var().clamp_min(1e-12))


def _cv_strength(x: torch.Tensor, y: torch.Tensor, folds: int = 4) -> float:
    """The ridge strength of ``RIDGE_STRENGTHS`` with the best mean R^2 over ``folds`` contiguous folds."""
    fold = torch.arange(len(y)) % folds

    def score(strength: float) -> float:
        fits = [_ridge(x[fold != f], y[fold != f], strength) for f in range(folds)]
        return float(np.mean([_r2(x[fold == f] @ w + b, y[fold == f]) for f, (w, b) in enumerate(fits)]))

    return max(RIDGE_STRENGTHS, key=score)


def _ridge(x: torch.Tensor, y: torch.Tensor, strength: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    mx, my = x.mean(0), y.mean()
    xc = x - mx
    gram = xc.T @ xc
    lam = strength * gram.trace() / len(gram)
    w = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=x.dtype), xc.T @ (y - my))
    return w, my - mx @ w


def alignment(lab: Lab, layer: str, location: str, ceiling: dict, k: int = 16) -> list[dict]:
    """|cos| of the top-k weight directions (every decomposition) with each supervised direction, against the
    95th percentile of random unit vectors; and each supervised direction's energy in the top-k subspace."""
    out = []
    for source in lab.plan.sources:
        dirs = weight_directions(lab, layer, source, k, location)
        v = dirs.vectors.double()
        if v.shape[1] != next(iter(ceiling["directions"].values()), torch.zeros(0)).numel():
            continue
        rand = random_directions(2000, v.shape[1], seed=3)
        for name, w in ceiling["directions"].items():
            w = w.double()
            cos = (v @ w).abs()
            random_p95 = float(np.percentile((rand @ w).abs().numpy(), 95))
            basis = torch.linalg.qr(v.T)[0]
            energy = float((basis.T @ w).pow(2).sum())
            best = int(cos.argmax())
            out.append({
                "decomposition": source, "index": best, "attribute": name, "cos": float(cos[best]),
                "random_cos_p95": random_p95, "above_random": int((cos > random_p95).sum()), "k": len(v),
                "energy": energy, "energy_random": len(v) / v.shape[1],
            })  # fmt: skip
    return out


def run(plan: Plan, probe: Probe | None = None, model: DiffusionModel | None = None, progress: bool = True) -> dict:
    """Every phase for one model; the results dict that ``write`` saves."""
    start = time.perf_counter()
    probe = probe or probe_for_model(plan.model_id)
    if probe is None:
        raise ValueError(f"model {plan.model_id!r} has no attribute probe; the protocol needs one (a shipped model)")
    model = model or load_model(plan.model_id)
    lab = Lab(model, probe, plan, progress)
    screens = [screen(lab, g) for g in tqdm(plan.groups, desc="screen", disable=not progress)]
    ranked = sorted(((row["selection"]["score"], gi, ri) for gi, g in enumerate(screens)
                     for ri, row in enumerate(g["rows"])), reverse=True)  # fmt: skip
    chosen: dict[int, list[dict]] = {}
    for _, gi, ri in ranked:
        if sum(map(len, chosen.values())) >= plan.full_rows:
            break
        if gi in chosen or len(chosen) < plan.full_groups:
            chosen.setdefault(gi, []).append(screens[gi]["rows"][ri])
    ceilings: dict[str, dict] = {}  # by location and edit window: "mid_block" or "mid_block @ t_edit 0"
    rows = []

    def ceiling_key(g: dict) -> str:
        return g["location"] + ("" if g["t_edit"] == plan.t_edit else f" @ t_edit {g['t_edit']}")

    for gi, picks in tqdm(chosen.items(), desc="full treatment", disable=not progress):
        key = ceiling_key(screens[gi])
        if key not in ceilings:
            ceilings[key] = supervised(lab.at(screens[gi]["t_edit"], plan.target_change), screens[gi]["location"])
        rows += full_treatment(lab, screens[gi], picks, ceilings[key])
    align = []
    for gi in chosen:
        g = screens[gi]
        if g["layer"] == g["location"] or g["location"] == "mid_block":
            align += [
                dict(a, layer=g["layer"], location=g["location"])
                for a in alignment(
                    lab.at(g["t_edit"], g["target_change"]), g["layer"], g["location"], ceilings[ceiling_key(g)]
                )
            ]
    align = list({(a["decomposition"], a["attribute"], a["layer"]): a for a in align}.values())
    weight_rows = [r for r in rows if r["source"] != "supervised"]
    result = {
        "model": plan.model_id,
        "command": "python -m eigenedit.evaluation.protocol_run " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "plan": asdict(plan),
        "calibration_seeds": plan.calibration_seeds,
        "selection_seeds": plan.selection_seeds,
        "test_blocks": plan.test_blocks,
        "random_per_row": plan.random_per_row,
        "scales": lab.scales,
        "screen": screens,
        "rows": weight_rows,
        "ceiling": [r for r in rows if r["source"] == "supervised"],
        "readout_r2": {loc: c["r2"] for loc, c in ceilings.items()},
        "alignment": align,
        "precise_rows": sum(r["precise"] for r in weight_rows),
        "timing": {"seconds": dict(lab.seconds), "images": dict(lab.images),
                   "total_seconds": time.perf_counter() - start},
    }  # fmt: skip
    return result


def best_row(result: dict) -> dict | None:
    """The row the shipped defaults and the demo use: a precise row if any, else the highest mean test score."""
    rows = result["rows"]
    if not rows:
        return None
    return max(rows, key=lambda r: (r["precise"], min(b["score"] for b in r["blocks"])))


STORED_FIELDS = ("layer", "source", "index", "operator", "location", "t_edit", "attribute", "sign", "precise")


def _stored_row(row: dict) -> dict:
    """A fully treated row as eigenedit.json keeps it: what it is, its verdict, and its numbers per block."""
    numbers = {k: [round(b[k], 3) for b in row["blocks"]] for k in ("rho", "random_abs_rho_p95", "off_target_ratio")}
    return {k: row[k] for k in STORED_FIELDS} | numbers


def defaults_from(result: dict, row: dict) -> dict:
    """An eigenedit.json chosen by the protocol (settings from the selection seeds; numbers from the test blocks)."""
    plan = result["plan"]
    b = row["blocks"]
    sign = "+" if row["sign"] > 0 else "-"
    a = row["alpha"]
    return {
        "layer": row["layer"],
        "location": row["location"],
        "decomposition": row["source"],
        "operator": row["operator"],
        "t_edit": row.get("t_edit", plan["t_edit"]),
        "steps": plan["steps"],
        "alphas": [round(s * a, 6) for s in protocol.STRENGTHS],
        "direction": row["index"],
        "label": f"{sign}{row['attribute']}",
        "precise": row["precise"],
        "protocol_rows": [_stored_row(r) for r in result["rows"]],  # for labels (``evaluation.reading``)
        "measured": (
            f"eigenedit.evaluation.protocol_run {result['created']}; test blocks: rho "
            + " / ".join(f"{x['rho']:+.2f}" for x in b)
            + ", random |rho| p95 "
            + " / ".join(f"{x['random_abs_rho_p95']:.2f}" for x in b)
            + ", off-target "
            + " / ".join(f"{x['off_target_ratio']:.1f}" for x in b)
            + ", p "
            + " / ".join(f"{x['p_value']:.3f}" for x in b)
        ),
    }


def _f(x, spec=".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    return format(x, spec)


def markdown(result: dict) -> str:
    """The result tables: full rows beside their random distribution, the ceiling, alignment, the screen."""
    nb = len(result["test_blocks"])
    lines = [
        f"# Strict protocol: {result['model']}",
        "",
        f"`{result['command']}` ({result['created']}). Calibration seeds {_seeds(result['calibration_seeds'])}, "
        f"selection seeds {_seeds(result['selection_seeds'])}, test blocks "
        + ", ".join(_seeds(b) for b in result["test_blocks"])
        + f"; {result['random_per_row']} random directions per row at matched change "
        f"({result['plan']['target_change']} mean |delta| on 0..1). Numbers are block 1 / block 2. "
        "Precise: rho >= 0.8, interval above random p95, off-target >= 2 and p < 0.05 in every block.",
        "",
        "## Best weight rows (chosen on selection seeds, measured on test blocks)",
        "",
        "| operator | layer -> location | direction | target | rho [95% CI] | random abs rho p50 / p95 | score"
        " (random p95) | percentile | p (best of m) | off-target | brightness share | reached change | precise |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"] + result["ceiling"]:
        b = r["blocks"]

        def each(fn, b=b):
            return " / ".join(fn(x) for x in b)

        lines.append(
            f"| {r['operator']} | {r['layer']} -> {r['location']}{_window(r, result)} | {r['source']} #{r['index']} | "
            f"{'+' if r['sign'] > 0 else '-'}{r['attribute']} | "
            + each(lambda x: f"{x['rho']:+.2f} [{x['rho_ci'][0]:+.2f}, {x['rho_ci'][1]:+.2f}]")
            + " | "
            + each(lambda x: f"{x['random_abs_rho_p50']:.2f}, {x['random_abs_rho_p95']:.2f}")
            + " | "
            + each(lambda x: f"{x['score']:.2f} ({x['random_score_p95']:.2f})")
            + " | "
            + each(lambda x: f"{x['percentile_vs_random']:.0f}")
            + " | "
            + each(lambda x: _f(x["p_value"], ".3f"))
            + " | "
            + each(lambda x: _f(x["off_target_ratio"], ".1f"))
            + " | "
            + each(lambda x: _f(x["brightness_share"]))
            + " | "
            + each(lambda x: f"{x['reached_change']:.3f}{'!' if x['change_flag'] else ''}")
            + f" | {'**yes**' if r['precise'] else 'no'} |"
        )
    lines += ["", "Rows with source `supervised` are the ceiling (data-based reference, never a default); their "
              "read-out R^2 (held-out):", ""]  # fmt: skip
    for loc, r2 in result["readout_r2"].items():
        lines.append(f"- `{loc}`: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r2.items(), key=lambda kv: -kv[1])))
    flips = [(r, x["flips"]) for r in result["rows"] for x in r["blocks"][:1] if x.get("flips")]
    if flips:
        lines += ["", "Categorical flip rates at +-1 (block 1): "
                  + "; ".join(f"{r['source']} #{r['index']} ({r['operator']}): "
                              + ", ".join(f"{k} {v:.2f}" for k, v in f.items()) for r, f in flips)]  # fmt: skip
    if result["alignment"]:
        lines += ["", "## Alignment of weight directions with supervised ones (no editing)", "",
                  "| layer | decomposition | attribute | best abs cos (#) | random p95 | above random (of k) | "
                  "energy in top-k (random k/C) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for a in result["alignment"]:
            lines.append(f"| {a['layer']} | {a['decomposition']} | {a['attribute']} | {a['cos']:.2f} (#{a['index']}) | "
                         f"{a['random_cos_p95']:.2f} | {a['above_random']} of {a['k']} | {a['energy']:.2f} "
                         f"({a['energy_random']:.2f}) |")  # fmt: skip
    lines += ["", "## Screen (selection seeds; every candidate, best attribute by precision score)", "",
              "| group | direction | best attribute | rho | off-target | score | random best-score p50 / p95 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in result["screen"]:
        rnd = g["random_best_score"]
        for row in sorted(g["rows"], key=lambda r: -r["selection"]["score"]):
            s = row["selection"]
            lines.append(f"| {_group_name(g)} | {row['source']} "
                         f"#{row['index']} | {'+' if s['sign'] > 0 else '-'}{s['attribute']} | {s['rho']:+.2f} | "
                         f"{_f(s['off_target_ratio'], '.1f')} | {s['score']:.2f} | {rnd['p50']:.2f} / "
                         f"{rnd['p95']:.2f} |")  # fmt: skip
    t = result["timing"]
    lines += [
        "",
        f"Time: {t['total_seconds'] / 60:.1f} min; "
        + ", ".join(f"{k} {v:.0f} s ({t['images'].get(k, 0)} images)" for k, v in t["seconds"].items()),
    ]
    lines += [f"\nTest blocks: {nb}."] + [f"\nNote: {n}" for n in result["plan"]["notes"]]
    return "\n".join(lines) + "\n"


def _window(row: dict, result: dict) -> str:
    """`` (t_edit T, change C)`` where a row's edit window differs from the plan's, else nothing."""
    plan = result["plan"]
    t, c = row.get("t_edit", plan["t_edit"]), row.get("target_change", plan["target_change"])
    return "" if (t, c) == (plan["t_edit"], plan["target_change"]) else f" (t_edit {t}, change {c:g})"


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else str(seeds)


def figure(result: dict, path: Path) -> None:
    """Per full row and block: the random directions' precision scores on the row's attribute (dots, p95 bar)
    against the row's own (star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"] + result["ceiling"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(rows))))
    for i, r in enumerate(rows):
        for b, block in enumerate(r["blocks"]):
            y = i + (b - 0.5) * 0.3
            ax.plot([block["random_score_p50"], block["random_score_p95"]], [y, y], color="grey", lw=3)
            ax.plot(block["score"], y, "*", color="tab:green" if r["precise"] else "tab:red", ms=10)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['source']} #{r['index']} {r['operator']} ({r['attribute']})" for r in rows], fontsize=7)
    ax.set_xlabel("precision score on test blocks (star); random directions p50-p95 (grey)")
    ax.set_title(f"{result['model']}: weight rows vs {result['random_per_row']} random directions at matched change")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"protocol_{result.get('model_run', result['model'])}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(result, indent=1, default=float) + "\n")
    paths[1].write_text(markdown(result))
    figure(result, paths[2])
    return paths


MARKERS = ("<!-- protocol-results:start -->", "<!-- protocol-results:end -->")


def summary_table(results: list[dict]) -> str:
    """One row per model: its best weight row beside the random distribution, and the best ceiling row."""
    lines = [
        "| model | best weight edit (test blocks 1 / 2) | rho | random abs rho p95 | off-target | p (best of m) | "
        "precise | supervised ceiling (precise) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        row = best_row(result)
        ceiling = [r for r in result["ceiling"] if r["precise"]]
        ceil = ", ".join(f"{r['attribute']} ({r['operator']})" for r in ceiling) or "none"
        if row is None:
            lines.append(f"| `{result.get('model_run', result['model'])}` | no row | | | | | | {ceil} |")
            continue
        b = row["blocks"]

        def each(key, spec, b=b):
            return " / ".join(_f(x[key], spec) for x in b)

        name = result.get("model_run", result["model"])
        lines.append(
            f"| `{name}` | {row['operator']}, {row['source']} #{row['index']} of `{row['layer']}`"
            f"{_window(row, result)}: "
            f"{'+' if row['sign'] > 0 else '-'}{row['attribute']} | {each('rho', '+.2f')} | "
            f"{each('random_abs_rho_p95', '.2f')} | {each('off_target_ratio', '.1f')} | {each('p_value', '.3f')} | "
            f"{'**yes**' if row['precise'] else 'no'} | {ceil} |"
        )
    return "\n".join(lines) + "\n"


def update_summary(results_dir: Path, readme: Path) -> None:
    """Rewrite the table between the README's protocol markers from every results/protocol_*.json."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("protocol_*.json"))]
    text = readme.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    readme.write_text(text[:start] + "\n" + summary_table(results) + text[end:])


def _parse_group(text: str) -> Group:
    """OPERATOR:LAYER:LOCATION or OPERATOR:LAYER:LOCATION:T_EDIT:CHANGE; a ValueError for anything else."""
    parts = text.split(":")
    if len(parts) not in (3, 5) or parts[0] not in NOMINAL:
        raise ValueError(text)
    return (*parts[:3], int(parts[3]), float(parts[4])) if len(parts) == 5 else tuple(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eigenedit.evaluation.protocol_run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", help="a shipped model with a probe (faces64, terrain128, shapes32, fashion32)")
    parser.add_argument(
        "--summary",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="only rewrite the results table in these files from results/protocol_*.json",
    )
    parser.add_argument("--quick", action="store_true", help="every code path on a few seeds (about a minute)")
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--write-defaults", type=Path, default=None, help="write the chosen eigenedit.json here")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="OPERATOR:LAYER:LOCATION[:T_EDIT:CHANGE]",
        help="only these groups of the model's plan (repeatable); results get a name suffix",
    )
    args = parser.parse_args(argv)
    if args.summary is not None:
        for path in args.summary:
            update_summary(args.output_dir, path)
            print(f"wrote the protocol table of {path}")
        return
    if not args.model:
        parser.error("--model is required (or --summary README)")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    plan = plan_for(args.model, args.quick)
    if args.group:
        try:
            groups = [_parse_group(g) for g in args.group]
        except ValueError:
            parser.error(f"--group must be OPERATOR:LAYER:LOCATION[:T_EDIT:CHANGE] with an operator of "
                         f"{', '.join(NOMINAL)}")  # fmt: skip
        plan = replace(plan, groups=groups, full_groups=len(groups))
    result = run(plan)
    if args.group:
        result["model_run"] = result["model"] + "-" + "-".join(g[0] + "@" + g[2] for g in plan.groups)
    for p in write(result, args.output_dir):
        print(f"wrote {p}")
    if args.write_defaults is not None:
        row = best_row(result)
        if row is not None:
            args.write_defaults.write_text(json.dumps(defaults_from(result, row), indent=1) + "\n")
            print(f"wrote {args.write_defaults}")


if __name__ == "__main__":
    main()
