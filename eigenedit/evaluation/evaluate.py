"""Interpretability metrics of editing directions on the shapes model, read with the analytic factor estimator.

For each direction and each sign of alpha, on a fixed set of seeds: the signed mean change of every factor in
units of that factor's standard deviation over the dataset (hues: circular differences; kind: rate of kind
changes), counted only where both the plain and the edited image are valid (one clean shape). From these:
``concentration`` = largest factor change / sum of factor changes (1 = moves one factor only), ``dominant``
factor and its sign (the automatic label, e.g. "+size"), ``monotonic`` (the dominant factor moves in opposite
directions for +alpha and -alpha, each by at least ``MIN_EFFECT``), validity rate and pixel change.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import torch

from eigenedit.core.attention import DEFAULT_LAYER, list_attention_layers, read_attention_weights
from eigenedit.core.defaults import DEFAULT_LOCATION, DEFAULT_T_EDIT
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, random_directions
from eigenedit.core.operators import get_module, hidden_at
from eigenedit.core.sampling import edit_images, noise_from_seeds, sample
from eigenedit.data import shapes
from eigenedit.evaluation.baselines import collect_hidden, pca_directions, pullback_directions, sample_with_x_shift
from eigenedit.models import DiffusionModel

FACTOR_STD = {
    "kind": 1.0,  # a kind change counts as one unit
    "shape_hue": 1 / math.sqrt(12),
    "bg_hue": 1 / math.sqrt(12),
    "size": (shapes.SIZE_RANGE[1] - shapes.SIZE_RANGE[0]) / math.sqrt(12),
    "x": (shapes.POS_RANGE[1] - shapes.POS_RANGE[0]) / math.sqrt(12),
    "y": (shapes.POS_RANGE[1] - shapes.POS_RANGE[0]) / math.sqrt(12),
}
MIN_EFFECT = 0.25  # std units: smaller mean changes do not count as moving a factor


@dataclass
class DirectionScore:
    index: int
    label: str
    dominant: str
    concentration: float
    monotonic: bool
    effect: float  # mean |change| of the dominant factor over both signs, std units
    leakage: float  # mean |change| of the other factors, std units
    valid_rate: float
    pixel_change: float
    plus: dict[str, float]
    minus: dict[str, float]


def factor_changes(plain: shapes.FactorEstimate, edited: shapes.FactorEstimate) -> tuple[dict[str, float], float]:
    """Signed mean change per factor (std units) over images valid before and after; and the validity rate."""
    both = plain.valid & edited.valid
    out = {}
    for name in shapes.FACTORS:
        a, b = getattr(plain, name)[both], getattr(edited, name)[both]
        if not both.any():
            out[name] = 0.0
        elif name == "kind":
            out[name] = float((a != b).float().mean())
        elif name.endswith("hue"):
            out[name] = float(shapes.hue_difference(b, a).mean()) / FACTOR_STD[name]
        else:
            out[name] = float((b - a).mean()) / FACTOR_STD[name]
    return out, float(edited.valid[plain.valid].float().mean()) if plain.valid.any() else 0.0


def score_direction(
    index: int, plain_images: torch.Tensor, plus_images: torch.Tensor, minus_images: torch.Tensor
) -> DirectionScore:
    """All metrics of one direction from its plain, +alpha and -alpha images (same seeds, same order)."""
    plain = shapes.estimate_factors(plain_images)
    plus, valid_plus = factor_changes(plain, shapes.estimate_factors(plus_images))
    minus, valid_minus = factor_changes(plain, shapes.estimate_factors(minus_images))
    magnitude = {f: (abs(plus[f]) + abs(minus[f])) / 2 for f in shapes.FACTORS}
    total = sum(magnitude.values())
    dominant = max(magnitude, key=magnitude.get)
    concentration = magnitude[dominant] / total if total > 0 else 0.0
    if dominant == "kind":
        monotonic = min(plus["kind"], minus["kind"]) >= MIN_EFFECT
        sign = ""
    else:
        monotonic = (
            plus[dominant] * minus[dominant] < 0 and min(abs(plus[dominant]), abs(minus[dominant])) >= MIN_EFFECT
        )
        sign = "+" if plus[dominant] - minus[dominant] >= 0 else "-"
    others = [magnitude[f] for f in shapes.FACTORS if f != dominant]
    pixel = float(((plus_images - plain_images).abs().mean() + (minus_images - plain_images).abs().mean()) / 4)
    return DirectionScore(
        index=index,
        label=f"{sign}{dominant}" if magnitude[dominant] >= MIN_EFFECT else "none",
        dominant=dominant,
        concentration=concentration,
        monotonic=monotonic,
        effect=magnitude[dominant],
        leakage=sum(others) / len(others),
        valid_rate=(valid_plus + valid_minus) / 2,
        pixel_change=pixel,
        plus=plus,
        minus=minus,
    )


def score_all(plain: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor) -> list[DirectionScore]:
    """plain (N, ...) and plus/minus (k*N, ...) images, direction-major -> k scores."""
    n = len(plain)
    k = len(plus) // n
    return [score_direction(j, plain, plus[j * n : (j + 1) * n], minus[j * n : (j + 1) * n]) for j in range(k)]


def evaluate_directions(
    model: DiffusionModel,
    directions: Directions,
    seeds: list[int],
    alpha: float,
    num_steps: int = 20,
    t_edit: int = DEFAULT_T_EDIT,
    location: str = DEFAULT_LOCATION,
    batch_size: int = 128,
    progress: bool = False,
) -> tuple[list[DirectionScore], float]:
    """Score every direction at +alpha and -alpha on ``seeds``; also returns the seconds spent editing."""
    x = noise_from_seeds(model, seeds)
    plain = sample(model, x, num_steps)
    k, n = len(directions), len(seeds)
    signs = torch.eye(k).repeat_interleave(n, dim=0)  # (k*n, k): row j*n+i edits seed i along direction j
    start = time.perf_counter()
    edited = edit_images(
        model,
        x.repeat(2 * k, 1, 1, 1),
        directions,
        torch.cat([signs * alpha, signs * -alpha]),
        num_steps,
        t_edit,
        location,
        batch_size=batch_size,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    return score_all(plain, edited[: k * n], edited[k * n :]), elapsed


def label_directions(directions: Directions, scores: list[DirectionScore]) -> Directions:
    """Store the automatic labels (e.g. "+size") and scores in the directions' metadata."""
    directions.metadata["labels"] = [s.label for s in scores]
    directions.metadata["scores"] = [
        {"concentration": round(s.concentration, 4), "effect": round(s.effect, 4), "monotonic": s.monotonic}
        for s in scores
    ]
    return directions


def summarize(scores: list[DirectionScore]) -> dict:
    """Per-method summary: monotonic single-factor directions, directions that move anything (effect >=
    MIN_EFFECT), their mean concentration (None when none does: the concentration of a no-op is noise), and
    the best direction per factor."""
    best = {}
    for name in shapes.FACTORS:
        candidates = [s for s in scores if s.dominant == name and s.monotonic]
        if candidates:
            top = max(candidates, key=lambda s: s.effect * s.concentration)
            best[name] = {"index": top.index, "effect": top.effect, "concentration": top.concentration}
    n = max(1, len(scores))
    effective = [s for s in scores if s.effect >= MIN_EFFECT]
    return {
        "directions": len(scores),
        "effective": len(effective),
        "mean_concentration": sum(s.concentration for s in effective) / len(effective) if effective else None,
        "monotonic": sum(s.monotonic for s in scores),
        "mean_effect": sum(s.effect for s in scores) / n,
        "mean_leakage": sum(s.leakage for s in scores) / n,
        "mean_valid_rate": sum(s.valid_rate for s in scores) / n,
        "mean_pixel_change": sum(s.pixel_change for s in scores) / n,
        "factors_found": sorted(best),
        "best": best,
    }


def as_records(scores: list[DirectionScore]) -> list[dict]:
    return [asdict(s) for s in scores]


def resummarize(runs: list[dict]) -> list[dict]:
    """Recompute every method's summary from its stored per-direction records (e.g. after a metric change)."""
    for run in runs:
        for name, method in run["methods"].items():
            if name != "timing":
                method["summary"] = summarize([DirectionScore(**r) for r in method["directions"]])
    return runs


@dataclass
class EvalConfig:
    """What ``run_evaluation`` measures; the defaults are the benchmark's."""

    seeds: int = 16
    k: int = 6
    alpha: float = 1.0
    num_steps: int = 20
    t_edit: int = DEFAULT_T_EDIT
    location: str = DEFAULT_LOCATION
    pca_samples: int = 500
    pca_steps: int = 10
    pullback_rank: int = 4
    pullback_iterations: int = 3
    layers: tuple[str, ...] | None = None  # None: every self-attention layer
    per_head: bool = True  # also each head and the fold-norm variant of the default layer
    baselines: tuple[str, ...] = ("pca-h", "pullback")
    timing_repeats: int = 5


def _median(values: list[float]) -> float:
    return float(torch.tensor(values).median())


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _median(times)


def method_specs(model: DiffusionModel, cfg: EvalConfig) -> list[dict]:
    """Every weight decomposition to evaluate: each layer merged, plus heads and fold-norm of the default layer."""
    layers = cfg.layers or [layer.name for layer in list_attention_layers(model.unet)]
    specs = [
        {"layer": layer, "decomposition": d, "head": None, "fold_norm": False}
        for layer in layers
        for d in DECOMPOSITIONS
    ]
    if cfg.per_head:
        heads = read_attention_weights(model.unet, DEFAULT_LAYER).heads
        if heads > 1:
            specs += [
                {"layer": DEFAULT_LAYER, "decomposition": d, "head": h, "fold_norm": False}
                for d in DECOMPOSITIONS
                for h in range(heads)
            ]
        specs += [{"layer": DEFAULT_LAYER, "decomposition": d, "head": None, "fold_norm": True} for d in DECOMPOSITIONS]
    return specs


def spec_name(spec: dict) -> str:
    name = f"{spec['decomposition']} {spec['layer']}"
    if spec["head"] is not None:
        name += f" head{spec['head']}"
    if spec["fold_norm"]:
        name += " fold-norm"
    return name


def run_evaluation(model: DiffusionModel, cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluate every method on the same seeds and alpha; returns a JSON-ready dict of summaries and timings."""
    seeds = list(range(cfg.seeds))
    results: dict[str, dict] = {}
    channels = read_attention_weights(model.unet, DEFAULT_LAYER).channels

    def record(name: str, family: str, scores: list[DirectionScore], discovery_s: float, extra: dict | None = None):
        results[name] = {
            "family": family,
            "summary": summarize(scores),
            "discovery_s": discovery_s,
            "directions": as_records(scores),
            **(extra or {}),
        }
        s = results[name]["summary"]
        if progress:
            print(
                f"{name:48s} mono {s['monotonic']}/{s['directions']} moving {s['effective']} "
                f"effect {s['mean_effect']:.2f} valid {s['mean_valid_rate']:.2f}",
                flush=True,
            )

    def evaluate_set(dirs: Directions) -> list[DirectionScore]:
        scores, _ = evaluate_directions(model, dirs, seeds, cfg.alpha, cfg.num_steps, cfg.t_edit, cfg.location)
        return scores

    rand = Directions(random_directions(cfg.k, channels, seed=1234).float(), torch.zeros(cfg.k), {})
    record("random", "control", evaluate_set(rand), 0.0)

    for spec in method_specs(model, cfg):
        args = (model.unet, spec["layer"], spec["decomposition"], spec["head"], spec["fold_norm"])
        dirs = compute_directions(*args)
        if len(dirs) < cfg.k:
            continue
        discovery = _time(lambda args=args: compute_directions(*args), cfg.timing_repeats)
        record(spec_name(spec), "attention", evaluate_set(dirs.top(cfg.k)), discovery, {"spec": spec})

    if "pca-h" in cfg.baselines:
        start = time.perf_counter()
        seeds_pca = list(range(10_000, 10_000 + cfg.pca_samples))
        hidden = collect_hidden(model, seeds_pca, cfg.pca_steps, cfg.t_edit, cfg.location)
        pca = pca_directions(hidden, cfg.k)
        record("pca-h", "baseline", evaluate_set(pca), time.perf_counter() - start, {"samples": cfg.pca_samples})
    if "pullback" in cfg.baselines:
        record(*_evaluate_pullback(model, cfg, seeds))
    results["timing"] = _edit_timing(model, cfg)
    sensitivity = {
        where: zeroing_sensitivity(model, seeds, cfg.num_steps, where)
        for where in dict.fromkeys([cfg.location, DEFAULT_LAYER])
    }
    return {"config": asdict(cfg), "model": model.model_id, "methods": results, "zeroing_sensitivity": sensitivity}


def evaluate_locations(
    model: DiffusionModel, cfg: EvalConfig, locations: list[str], progress: bool = True
) -> list[dict]:
    """One run per edit location. At an attention layer's own output only that layer's directions are scored
    (with random and h-space PCA there); elsewhere every layer's. Pullback runs at the first location only."""
    attention_layers = {layer.name for layer in list_attention_layers(model.unet)}
    runs = []
    for i, location in enumerate(locations):
        if location in attention_layers:
            run_cfg = replace(cfg, location=location, layers=(location,), per_head=False, baselines=("pca-h",))
        else:
            baselines = cfg.baselines if i == 0 else tuple(b for b in cfg.baselines if b != "pullback")
            run_cfg = replace(cfg, location=location, baselines=baselines)
        if progress:
            print(f"== edits at {location}", flush=True)
        runs.append(run_evaluation(model, run_cfg, progress))
    return runs


def _evaluate_pullback(model: DiffusionModel, cfg: EvalConfig, seeds: list[int]):
    """Park et al.: per image, top right singular vectors v of d h/d x_T; x_T moves by gamma * v with
    gamma = alpha * ||h|| / sigma, i.e. the same first-step change of h as an h-space edit of size alpha."""
    x = noise_from_seeds(model, seeds)
    model.scheduler.set_timesteps(cfg.num_steps)
    t_first = int(model.scheduler.timesteps[0])
    plain = sample(model, x, cfg.num_steps)
    rank = cfg.pullback_rank
    with torch.no_grad():  # ||h|| only scales the edit: one batched pass, outside the discovery timing
        h_norms = hidden_at(model, cfg.location, x, t_first).flatten(1).norm(dim=1)
    shifts = torch.zeros(rank, len(seeds), *x.shape[1:])
    start = time.perf_counter()
    for i in range(len(seeds)):
        basis, sigmas = pullback_directions(model, x[i], t_first, rank, cfg.pullback_iterations, cfg.location, seed=i)
        shifts[:, i] = basis * (cfg.alpha * h_norms[i] / sigmas.clamp_min(1e-8)).view(rank, 1, 1, 1)
    discovery = (time.perf_counter() - start) / len(seeds)
    shifts = shifts.flatten(0, 1)
    xs = x.repeat(rank, 1, 1, 1)
    plus = sample_with_x_shift(model, xs, shifts, cfg.num_steps, 0)
    minus = sample_with_x_shift(model, xs, -shifts, cfg.num_steps, 0)
    extra = {"per_image": True, "rank": rank, "iterations": cfg.pullback_iterations}
    return "pullback", "baseline", score_all(plain, plus, minus), discovery, extra


@torch.no_grad()
def zeroing_sensitivity(model: DiffusionModel, seeds: list[int], num_steps: int, location: str) -> float:
    """Mean absolute pixel change (images in [0, 1]) when the output of ``location`` is replaced by zeros at
    every step: how much the rest of the UNet depends on it at all. Near 0 means no edit there can matter."""
    x = noise_from_seeds(model, seeds)
    plain = sample(model, x, num_steps)
    handle = get_module(model.unet, location).register_forward_hook(
        lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]) if isinstance(o, tuple) else torch.zeros_like(o)
    )
    try:
        zeroed = sample(model, x, num_steps)
    finally:
        handle.remove()
    return float((zeroed - plain).abs().mean() / 2)


def _edit_timing(model: DiffusionModel, cfg: EvalConfig) -> dict:
    """Median seconds of plain sampling vs an edit vs discovery, for one batch of ``cfg.seeds`` images."""
    x = noise_from_seeds(model, list(range(cfg.seeds)))
    dirs = compute_directions(model.unet).top(1)
    alphas = torch.full((len(x), 1), cfg.alpha)
    plain = _time(lambda: sample(model, x, cfg.num_steps), cfg.timing_repeats)
    edit = _time(lambda: edit_images(model, x, dirs, alphas, cfg.num_steps, cfg.t_edit), cfg.timing_repeats)
    return {"plain_sampling_s": plain, "edit_s": edit, "edit_over_plain": edit / plain, "batch": len(x)}
