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
from dataclasses import asdict, dataclass

import torch

from eigenedit import shapes
from eigenedit.directions import Directions
from eigenedit.editing import DEFAULT_LOCATION, DEFAULT_T_EDIT, edit_images, noise_from_seeds, sample
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
    """Per-method summary: mean concentration, monotonic single-factor directions, best direction per factor."""
    best = {}
    for name in shapes.FACTORS:
        candidates = [s for s in scores if s.dominant == name and s.monotonic]
        if candidates:
            top = max(candidates, key=lambda s: s.effect * s.concentration)
            best[name] = {"index": top.index, "effect": top.effect, "concentration": top.concentration}
    n = max(1, len(scores))
    return {
        "directions": len(scores),
        "mean_concentration": sum(s.concentration for s in scores) / n,
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
