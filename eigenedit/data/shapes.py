"""Procedural "shapes" dataset with known factors, and an analytic estimator that reads them back.

Each 32x32 RGB image holds one flat-coloured shape on a flat background. Factors (all in [0, 1] except kind):
``kind`` (0 circle, 1 square, 2 triangle), ``shape_hue``, ``bg_hue``, ``size`` (half-extent / image side),
``x``, ``y`` (centre of the shape's bounding box / image side). Rendering is 4x supersampled (anti-aliased)
and deterministic from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("circle", "square", "triangle")
FACTORS = ("kind", "shape_hue", "bg_hue", "size", "x", "y")
CONTINUOUS_FACTORS = ("shape_hue", "bg_hue", "size", "x", "y")
SIZE_RANGE = (0.10, 0.22)
POS_RANGE = (0.30, 0.70)
MIN_HUE_GAP = 0.2
BG_SAT, BG_VAL = 0.55, 0.85
SHAPE_SAT, SHAPE_VAL = 0.90, 0.95
# fill ratio of the bounding box: triangle 0.5, circle pi/4, square 1
_KIND_FILL = torch.tensor([math.pi / 4, 1.0, 0.5])


def hsv_to_rgb(h: torch.Tensor, s: float, v: float) -> torch.Tensor:
    """(N,) hues in [0,1) -> (N, 3) RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def rgb_to_hue(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB -> hue in [0, 1)."""
    r, g, b = rgb.unbind(-1)
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    d = (mx - mn).clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (h / 6) % 1.0


def sample_factors(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw n independent factor sets; shape hue keeps MIN_HUE_GAP away from the background hue."""
    u = torch.rand(n, 5, generator=generator)
    bg_hue = u[:, 0]
    shape_hue = (bg_hue + MIN_HUE_GAP + u[:, 1] * (1 - 2 * MIN_HUE_GAP)) % 1.0
    return {
        "kind": torch.randint(0, len(KINDS), (n,), generator=generator),
        "shape_hue": shape_hue,
        "bg_hue": bg_hue,
        "size": SIZE_RANGE[0] + u[:, 2] * (SIZE_RANGE[1] - SIZE_RANGE[0]),
        "x": POS_RANGE[0] + u[:, 3] * (POS_RANGE[1] - POS_RANGE[0]),
        "y": POS_RANGE[0] + u[:, 4] * (POS_RANGE[1] - POS_RANGE[0]),
    }


def shape_coverage(
    kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, size: torch.Tensor, resolution: int = 32, supersample: int = 4
) -> torch.Tensor:
    """Anti-aliased coverage (N, 1, R, R) in [0, 1] of each shape."""
    r = resolution * supersample
    grid = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    px, py = grid[None, None, :], grid[None, :, None]
    cx, cy, s = (t.float()[:, None, None] for t in (x, y, size))
    dx, dy = px - cx, py - cy
    circle = dx**2 + dy**2 <= s**2
    square = (dx.abs() <= s) & (dy.abs() <= s)
    triangle = (dy <= s) & (2 * dx.abs() <= dy + s)  # isosceles, apex up, half of its 2s x 2s box
    kind = kind[:, None, None]
    mask = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)).float()
    return torch.nn.functional.avg_pool2d(mask[:, None], supersample)


def render(factors: dict[str, torch.Tensor], resolution: int = 32, supersample: int = 4) -> torch.Tensor:
    """Factors -> images (N, 3, R, R) in [-1, 1]."""
    f = factors
    mask = shape_coverage(f["kind"], f["x"], f["y"], f["size"], resolution, supersample)
    bg = hsv_to_rgb(f["bg_hue"], BG_SAT, BG_VAL)[:, :, None, None]
    fg = hsv_to_rgb(f["shape_hue"], SHAPE_SAT, SHAPE_VAL)[:, :, None, None]
    return (bg + mask * (fg - bg)) * 2 - 1


def make_batch(n: int, seed: int, resolution: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Deterministic batch of images and their factors from an integer seed."""
    factors = sample_factors(n, torch.Generator().manual_seed(seed))
    return render(factors, resolution), factors


@dataclass
class FactorEstimate:
    """Factors read back from images; ``valid`` is False where no single clean shape was found."""

    kind: torch.Tensor
    shape_hue: torch.Tensor
    bg_hue: torch.Tensor
    size: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    valid: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in (*FACTORS, "valid")}


def estimate_factors(images: torch.Tensor) -> FactorEstimate:
    """Read the factors of images (N, 3, R, R) in [-1, 1] analytically.

    Background colour = median of the border pixels; soft shape coverage = distance to the background colour
    relative to the shape colour's, ignoring deviations under 10% of it. For each kind, the size follows from
    the covered area and the centre from the centroid (a triangle's centroid sits size/3 below its box centre);
    the kind whose rendered template matches the coverage best wins. An image is valid when it is two flat
    colours (blended at edges), the shape saturated, its size in (a margin around) the dataset's range and the
    best template fits closely.
    """
    img = (images.detach().float().clamp(-1, 1) + 1) / 2
    n, _, res, _ = img.shape
    border = torch.cat([img[:, :, 0], img[:, :, -1], img[:, :, 1:-1, 0], img[:, :, 1:-1, -1]], dim=2)
    bg = border.median(dim=2).values  # (N, 3)
    dist = (img - bg[:, :, None, None]).norm(dim=1)  # (N, R, R)
    far = dist >= 0.5 * dist.flatten(1).amax(1)[:, None, None].clamp_min(1e-6)
    fg = (img * far[:, None]).sum((2, 3)) / far.sum((1, 2)).clamp_min(1)[:, None]
    contrast = dist / (fg - bg).norm(dim=1).clamp_min(1e-6)[:, None, None]
    cover = ((contrast - 0.1) / 0.8).clamp(0, 1)  # deviations under 10% of the contrast are background noise
    area = cover.sum((1, 2)).clamp_min(1e-6)
    coords = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    cx = (cover * coords[None, None, :]).sum((1, 2)) / area
    cy = (cover * coords[None, :, None]).sum((1, 2)) / area
    errors, sizes, centres_y = [], [], []
    for k, fill in enumerate(_KIND_FILL.tolist()):
        size = (area / res**2 / (4 * fill)).sqrt()
        y = cy - size / 3 if KINDS[k] == "triangle" else cy
        template = shape_coverage(torch.full((n,), k), cx, y, size, res, supersample=2)[:, 0]
        errors.append((template - cover).abs().mean((1, 2)))
        sizes.append(size)
        centres_y.append(y)
    errors_t = torch.stack(errors, 1)
    kind = errors_t.argmin(1)
    pick = torch.arange(n)
    size = torch.stack(sizes, 1)[pick, kind]
    model = bg[:, :, None, None] + cover[:, None] * (fg - bg)[:, :, None, None]  # two flat colours, blended
    residual = (img - model).norm(dim=1).amax((1, 2))
    shape_chroma = fg.max(1).values - fg.min(1).values
    template_error = errors_t[pick, kind] / (area / res**2)  # relative to the shape's area
    valid = (
        (residual < 0.25)
        & (shape_chroma > 0.3)
        & (size > 0.6 * SIZE_RANGE[0])
        & (size < 1.4 * SIZE_RANGE[1])
        & (template_error < 0.35)
    )
    return FactorEstimate(
        kind=kind,
        shape_hue=rgb_to_hue(fg),
        bg_hue=rgb_to_hue(bg),
        size=size,
        x=cx,
        y=torch.stack(centres_y, 1)[pick, kind],
        valid=valid,
    )


def hue_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Signed circular difference a - b of hues, in [-0.5, 0.5)."""
    return (a - b + 0.5) % 1.0 - 0.5
