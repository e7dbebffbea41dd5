"""Label-free metrics of editing directions: they need no probe, so they rank directions on any model.

All take the unedited images ``plain`` (N, C, H, W) of N seeds and edited images of the same seeds, in [-1, 1]:

- ``pixel_change``: mean |edited - plain| on the 0..1 scale; ``effect / random`` (in ``evaluate``) divides it by
  the random control's at the same strength and location (matched strength: both add alpha * ||h|| * u).
- ``linearity_r2``: the paper's "linear editing property". Per pixel, the change d(a) at strengths a (5 of them:
  -alpha, -alpha/2, 0, alpha/2, alpha; d(0) = 0 by definition) is fitted by d(a) = a * b; R^2 = 1 - residual
  energy / change energy, pooled over the pixels of one seed. 1: the change is exactly proportional to alpha;
  0: +alpha and -alpha do the same thing (or nothing).
- ``consistency``: mean cosine similarity of (edited - plain) between every pair of seeds: does the direction do
  the same thing to every image? Near 0 for unrelated (e.g. random-noise) changes.
- ``preservation``: SSIM(plain, edited) (1 = unchanged), and, where a probe gives features, the Frechet distance
  between the feature distributions of plain and edited images (``metrics.frechet_distance``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from eigenedit.evaluation.metrics import frechet_distance, pixel_change, ssim

# a direction is a "consistent edit" when it changes images at least as much as random directions do, does the
# same thing to every seed, and is close to linear in alpha
MIN_CONSISTENCY = 0.3
MIN_LINEARITY = 0.7


def linearity_r2(plain: torch.Tensor, edited: Mapping[float, torch.Tensor]) -> torch.Tensor:
    """Per-seed R^2 (N,) of the per-pixel change against the strength through the origin (see module docstring).

    ``edited`` maps each strength to images (N, C, H, W); strength 0 may be left out (its change is 0)."""
    strengths = [a for a in edited if a != 0]
    if len(strengths) < 2:
        raise ValueError("linearity needs at least two non-zero strengths")
    a = torch.tensor(strengths, dtype=torch.float64).view(-1, 1, 1)
    d = torch.stack([(edited[s].double() - plain.double()).flatten(1) for s in strengths])  # (S, N, P)
    slope = (a * d).sum(0, keepdim=True) / (a**2).sum()
    residual = ((d - a * slope) ** 2).sum(dim=(0, 2))
    energy = (d**2).sum(dim=(0, 2))
    r2 = 1 - residual / energy.clamp_min(1e-30)
    return torch.where(energy > 0, r2, torch.zeros_like(r2)).float()  # no change at all: not a linear edit


def consistency(plain: torch.Tensor, edited: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of the changes (edited - plain) over seeds (needs N >= 2)."""
    n = len(plain)
    if n < 2:
        raise ValueError("cross-seed consistency needs at least 2 seeds")
    d = (edited.double() - plain.double()).flatten(1)
    u = d / d.norm(dim=1, keepdim=True).clamp_min(1e-30)
    total = u.sum(0)
    return float(((total @ total) - (u * u).sum()) / (n * (n - 1)))


@dataclass
class LabelFreeScore:
    pixel_change: float  # mean over +-alpha, 0..1 scale
    linearity: float  # mean over seeds of R^2 over the strengths given (nan-free: no change counts as 0)
    consistency: float  # mean over +alpha and -alpha
    ssim: float  # mean over +alpha and -alpha and seeds
    fd: float | None  # Frechet distance plain vs edited on probe features, mean over +-alpha; None without a probe


def score(
    plain: torch.Tensor,
    edited: Mapping[float, torch.Tensor],
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    plain_features: torch.Tensor | None = None,
    full: Sequence[float] = (-1.0, 1.0),
) -> LabelFreeScore:
    """Every label-free metric of one direction: ``edited`` maps strengths (multiples of alpha) to images of the
    seeds of ``plain``; ``full`` are the two strengths (+-alpha) the other metrics are measured at.
    ``features`` (images -> (N, D)) gives the FD; ``plain_features`` saves recomputing those of ``plain``."""
    ends = [edited[s] for s in full]
    linear = float(linearity_r2(plain, edited).mean()) if len([s for s in edited if s != 0]) >= 2 else 0.0
    fd = None
    if features is not None and len(plain) > 1:
        base = features(plain) if plain_features is None else plain_features
        fd = sum(frechet_distance(base, features(e)) for e in ends) / len(ends)
    return LabelFreeScore(
        pixel_change=sum(pixel_change(plain, e) for e in ends) / len(ends),
        linearity=linear,
        consistency=sum(consistency(plain, e) for e in ends) / len(ends),
        ssim=float(torch.stack([ssim(plain, e) for e in ends]).mean()),
        fd=fd,
    )


def is_consistent_edit(s: LabelFreeScore | dict, random_pixel_change: float) -> bool:
    """Moves images at least as much as random directions, the same way on every seed, nearly linearly."""
    get = s.get if isinstance(s, dict) else lambda k: getattr(s, k)
    return (
        get("pixel_change") >= random_pixel_change
        and get("consistency") >= MIN_CONSISTENCY
        and get("linearity") >= MIN_LINEARITY
    )
