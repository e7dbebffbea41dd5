"""Procedural faces with known, independent attributes (the paper's domain, without a face dataset).

Each face is drawn from signed-distance shapes, deterministic from a seed. Edges are anti-aliased analytically
(coverage ramps one pixel wide, from the distance); ``supersample=2`` also renders large and averages
down. Attributes (continuous in [0, 1] unless noted):

- ``smile`` (mouth curvature: 0 frown, 0.5 flat, 1 smile) and ``mouth_open``;
- ``eye_open``, ``eye_size`` and ``brow_angle`` (0 inner ends up / worried, 1 inner ends down / angry);
- ``glasses`` and ``beard`` (binary 0/1);
- ``hair_color`` (0 black .. 1 blond) and ``hair_style`` (categorical: 0 short, 1 bob, 2 long);
- ``skin_tone`` (0 light .. 1 dark) and ``face_width``;
- ``x``, ``y`` (head position) and ``yaw`` (0 turned left .. 1 turned right);
- ``bg_hue`` (background colour).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONTINUOUS = (
    "smile", "mouth_open", "eye_open", "eye_size", "brow_angle", "hair_color", "skin_tone", "face_width",
    "x", "y", "yaw", "bg_hue",
)  # fmt: skip
BINARY = ("glasses", "beard")
CATEGORICAL = {"hair_style": ("short", "bob", "long")}
ATTRIBUTES = (*CONTINUOUS, *BINARY, *CATEGORICAL)
RESOLUTION = 64

_SKIN = torch.tensor([[0.96, 0.83, 0.72], [0.80, 0.60, 0.45], [0.42, 0.28, 0.20]])  # light, medium, dark
_HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.40, 0.24, 0.12], [0.93, 0.80, 0.45]])  # black, brown, blond
_SHIRT = torch.tensor([0.25, 0.30, 0.42])


def sample_attributes(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw n independent attribute sets."""
    u = torch.rand(n, len(CONTINUOUS), generator=generator)
    attrs = {name: u[:, i] for i, name in enumerate(CONTINUOUS)}
    b = torch.rand(n, len(BINARY), generator=generator)
    attrs["glasses"] = (b[:, 0] < 0.3).float()
    attrs["beard"] = (b[:, 1] < 0.3).float()
    attrs["hair_style"] = torch.randint(0, 3, (n,), generator=generator)
    return attrs


def _lerp_palette(palette: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour (N, 3) along a palette's rows at t in [0, 1]."""
    pos = t.clamp(0, 1) * (len(palette) - 1)
    lo = pos.floor().long().clamp(max=len(palette) - 2)
    w = (pos - lo)[:, None]
    return palette[lo] * (1 - w) + palette[lo + 1] * w


def _hsv(h: torch.Tensor, s: float, v: float) -> torch.Tensor:
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _ellipse(px, py, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse (negative inside), in image units."""
    d = torch.sqrt(((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2)
    return (d - 1) * torch.minimum(rx, ry)


def render(attrs: dict[str, torch.Tensor], resolution: int = RESOLUTION, supersample: int = 1) -> torch.Tensor:
    """Attributes -> images (N, 3, R, R) in [-1, 1], in chunks of 16 (the fastest size on a CPU)."""
    n = next(iter(attrs.values())).shape[0]
    chunks = [{k: v[i : i + 16] for k, v in attrs.items()} for i in range(0, n, 16)]
    return torch.cat([_render(c, resolution, supersample) for c in chunks])


def _render(attrs: dict[str, torch.Tensor], resolution: int, supersample: int) -> torch.Tensor:
    a = {k: v.float()[:, None, None] for k, v in attrs.items()}
    n = next(iter(attrs.values())).shape[0]
    r = resolution * supersample
    aa = 1.0 / r  # one fine pixel: edge width of the coverage ramps
    grid = (torch.arange(r, dtype=torch.float32) + 0.5) / r * 2 - 1  # [-1, 1]
    px, py = grid[None, None, :], grid[None, :, None]

    def cover(sdf: torch.Tensor) -> torch.Tensor:
        return (0.5 - sdf / (2 * aa)).clamp(0, 1)

    def paint(img, mask, colour):
        return img + mask[:, None] * (colour[:, :, None, None] - img)

    cx = (a["x"] - 0.5) * 0.24
    cy = (a["y"] - 0.5) * 0.20 - 0.06
    hw = 0.30 + 0.12 * a["face_width"]  # half width of the face
    hh = 0.46 + 0.0 * hw
    yaw = (a["yaw"] - 0.5) * 2  # -1 .. 1
    fx = cx + yaw * hw * 0.28  # where the features sit
    skin = _lerp_palette(_SKIN, attrs["skin_tone"].float())
    hair = _lerp_palette(_HAIR, attrs["hair_color"].float())
    style = attrs["hair_style"][:, None, None]

    img = _hsv(attrs["bg_hue"].float(), 0.45, 0.85)[:, :, None, None].expand(n, 3, r, r).clone()
    # shoulders and neck
    img = paint(
        img, cover(_ellipse(px, py, cx, cy + hh + 0.62, hw + 0.42, torch.full_like(hw, 0.45))), _SHIRT.expand(n, 3)
    )
    neck = torch.maximum((px - cx).abs() - hw * 0.45, (py - (cy + hh * 0.95)).abs() - 0.18)
    img = paint(img, cover(neck), skin * 0.85)
    # long hair behind the head
    back = torch.maximum(_ellipse(px, py, cx, cy + 0.12, hw + 0.13, hh + 0.12), py - (cy + hh + 0.28))
    img = paint(img, cover(back) * (style == 2).float(), hair)
    bob = torch.maximum(_ellipse(px, py, cx, cy - 0.02, hw + 0.11, hh + 0.08), py - (cy + hh * 0.45))
    img = paint(img, cover(bob) * (style == 1).float(), hair)
    # ears and face
    for side in (-1.0, 1.0):
        ear = _ellipse(px, py, cx + side * hw * (1 - 0.1 * side * yaw), cy + 0.02, torch.full_like(hw, 0.07),
                       torch.full_like(hw, 0.11))  # fmt: skip
        img = paint(img, cover(ear), skin * 0.92)
    face = _ellipse(px, py, cx, cy, hw, hh + 0.0 * hw)
    img = paint(img, cover(face), skin)
    # beard: lower face below the nose, in the hair's colour
    beard = torch.maximum(face + 0.005, (cy + 0.16) - py)
    img = paint(img, cover(beard) * a["beard"], hair * 0.9 + 0.05)
    # hair on top: a cap cut by a line across the forehead
    cap = torch.maximum(_ellipse(px, py, cx, cy - 0.02, hw + 0.04, hh + 0.05), py - (cy - hh * 0.52 + 0.04 * (px - cx)))
    img = paint(img, cover(cap), hair)
    # eyes
    eye_y = cy - 0.06
    ew = 0.055 + 0.045 * a["eye_size"]
    eh = ew * (0.15 + 0.75 * a["eye_open"])
    spread = hw * 0.42
    for side in (-1.0, 1.0):
        ex = fx + side * spread * (1 - 0.25 * side * yaw)
        w = ew * (1 - 0.3 * side * yaw)
        sclera = _ellipse(px, py, ex, eye_y, w, eh)
        img = paint(img, cover(sclera), torch.ones(n, 3) * 0.97)
        iris = torch.maximum(_ellipse(px, py, ex + yaw * w * 0.3, eye_y, ew * 0.5, ew * 0.5), sclera)
        img = paint(img, cover(iris), torch.tensor([0.15, 0.12, 0.10]).expand(n, 3))
        # eyebrow: a thin bar above the eye, its inner end tilted by brow_angle
        angle = (a["brow_angle"] - 0.5) * 0.9 * side  # radians
        bx, by = px - ex, py - (eye_y - 0.10 - 0.5 * ew)
        u = bx * torch.cos(angle) + by * torch.sin(angle)
        v = -bx * torch.sin(angle) + by * torch.cos(angle)
        brow = torch.maximum(u.abs() - w * 1.25, v.abs() - 0.022)
        img = paint(img, cover(brow), hair * 0.8)
        # glasses: a ring around the eye
        ring = (torch.sqrt((px - ex) ** 2 + (py - eye_y) ** 2) - (ew + 0.05)).abs() - 0.016
        img = paint(img, cover(ring) * a["glasses"], torch.full((n, 3), 0.05))
    bridge = torch.maximum((px - fx).abs() - (spread - ew - 0.05), (py - eye_y + 0.01).abs() - 0.014)
    img = paint(img, cover(bridge) * a["glasses"], torch.full((n, 3), 0.05))
    # nose
    nose = torch.maximum(_ellipse(px, py, fx + yaw * 0.03, cy + 0.10, torch.full_like(hw, 0.045),
                                  torch.full_like(hw, 0.07)), -(py - (cy + 0.10)))  # fmt: skip
    img = paint(img, cover(nose), skin * 0.8)
    # mouth: a curved band; corners rise with smile; opening drops the lower lip
    mw = 0.11 + 0.03 * a["face_width"]
    my = cy + 0.25
    dx = (px - fx) / mw
    curve = my - (a["smile"] - 0.5) * 0.16 * (dx**2 - 0.3)
    inside = dx.abs() - 1
    gap = 0.012 + 0.09 * a["mouth_open"] * (1 - dx**2).clamp_min(0)
    opening = torch.maximum(inside * mw, torch.maximum(curve - py, py - (curve + gap)))
    lips = torch.maximum(inside * mw, torch.maximum(curve - 0.022 - py, py - (curve + gap + 0.022)))
    img = paint(img, cover(lips), torch.tensor([0.70, 0.25, 0.25]).expand(n, 3))
    img = paint(img, cover(opening) * (a["mouth_open"] > 0.05).float(), torch.tensor([0.25, 0.05, 0.05]).expand(n, 3))
    img = F.avg_pool2d(img, supersample) if supersample > 1 else img
    return img.clamp(0, 1) * 2 - 1


def make_batch(n: int, seed: int, resolution: int = RESOLUTION) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Deterministic batch of faces and their attributes from an integer seed."""
    attrs = sample_attributes(n, torch.Generator().manual_seed(seed))
    return render(attrs, resolution), attrs


class FacesDataset(torch.utils.data.Dataset):
    """``length`` faces; item i is rendered from seed ``seed * 1_000_003 + i`` (image, attribute dict)."""

    def __init__(self, length: int = 100_000, seed: int = 0, resolution: int = RESOLUTION):
        self.length, self.seed, self.resolution = length, seed, resolution

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        images, attrs = make_batch(1, self.seed * 1_000_003 + i, self.resolution)
        return images[0], {k: v[0] for k, v in attrs.items()}
