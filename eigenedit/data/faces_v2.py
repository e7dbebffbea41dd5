"""Procedural faces, version 2: a testbed that can express what face editors edit.

The v1 faces (``eigenedit.data.faces``) have small mouths, thin glasses and few beards; a linear read-out of
the hidden state cannot see their smile (held-out R^2 <= 0.14). Version 2 draws the same attributes large and
bold, deterministic from a seed:

- the face fills most of the frame (half width 0.52-0.66 of the half image);
- the mouth is 30-35% of the image wide; ``smile`` bends its corners by about +-5 px at 64 px and raises two
  rosy cheeks as it grows (a frown lowers the corners, no cheeks);
- ``glasses``: thick dark frames with tinted lenses; ``beard``: a full beard with a moustache;
- a new continuous ``age``: greying hair and forehead lines.

Stated correlations (tested), the way real faces correlate:
- ``hair_color = 0.6 u + 0.4 age`` with u uniform, so corr(hair_color, age) is about 0.55;
- a beard only where ``face_width > 0.4``, with probability 0.5 there (30% of faces overall).
Everything else is independent and uniform in [0, 1], as in v1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eigenedit.data.face_canvas import (
    BINARY,
    CATEGORICAL,
    RESOLUTION,
    _ellipse,
    _hsv,
    _lerp_palette,
    render_in_chunks,
)

CONTINUOUS = (
    "smile", "mouth_open", "eye_open", "eye_size", "brow_angle", "hair_color", "skin_tone", "face_width",
    "x", "y", "yaw", "bg_hue", "age",
)  # fmt: skip
ATTRIBUTES = (*CONTINUOUS, *BINARY, *CATEGORICAL)
BEARD_MIN_FACE_WIDTH = 0.4

_SKIN = torch.tensor([[0.97, 0.85, 0.74], [0.82, 0.62, 0.46], [0.45, 0.30, 0.21]])
_HAIR = torch.tensor([[0.07, 0.05, 0.04], [0.42, 0.25, 0.12], [0.95, 0.82, 0.45]])
_GREY = torch.tensor([0.78, 0.78, 0.80])
_SHIRT = torch.tensor([0.22, 0.28, 0.45])
_LIPS = torch.tensor([0.72, 0.22, 0.24])
_MOUTH = torch.tensor([0.22, 0.04, 0.05])
_CHEEK = torch.tensor([0.93, 0.45, 0.45])
_FRAME = torch.tensor([0.06, 0.06, 0.08])
_LENS = torch.tensor([0.35, 0.45, 0.55])


def sample_attributes(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw n attribute sets with the module's stated correlations."""
    u = torch.rand(n, len(CONTINUOUS) + 3, generator=generator)
    attrs = {name: u[:, i] for i, name in enumerate(CONTINUOUS)}
    attrs["hair_color"] = 0.6 * attrs["hair_color"] + 0.4 * attrs["age"]
    attrs["glasses"] = (u[:, -3] < 0.3).float()
    attrs["beard"] = ((attrs["face_width"] > BEARD_MIN_FACE_WIDTH) & (u[:, -2] < 0.5)).float()
    attrs["hair_style"] = (u[:, -1] * 3).long().clamp(max=2)
    return attrs


def render(attrs: dict[str, torch.Tensor], resolution: int = RESOLUTION, supersample: int = 1) -> torch.Tensor:
    """Attributes -> images (N, 3, R, R) in [-1, 1], in chunks of 16."""
    return render_in_chunks(_render, attrs, resolution, supersample)


def _render(attrs: dict[str, torch.Tensor], resolution: int, supersample: int) -> torch.Tensor:
    a = {k: v.float()[:, None, None] for k, v in attrs.items()}
    n = next(iter(attrs.values())).shape[0]
    r = resolution * supersample
    aa = 1.0 / r
    grid = (torch.arange(r, dtype=torch.float32) + 0.5) / r * 2 - 1
    px, py = grid[None, None, :], grid[None, :, None]

    def cover(sdf: torch.Tensor) -> torch.Tensor:
        return (0.5 - sdf / (2 * aa)).clamp(0, 1)

    def paint(img, mask, colour):
        colour = colour.expand(n, 3) if colour.ndim == 1 else colour
        return img + mask[:, None] * (colour[:, :, None, None] - img)

    def full(value: float) -> torch.Tensor:
        return torch.full((n, 1, 1), value)

    cx = (a["x"] - 0.5) * 0.14
    cy = (a["y"] - 0.5) * 0.10 + 0.04
    hw = 0.52 + 0.14 * a["face_width"]
    hh = full(0.70)
    yaw = (a["yaw"] - 0.5) * 2
    fx = cx + yaw * hw * 0.22
    age = attrs["age"].float()
    skin = _lerp_palette(_SKIN, attrs["skin_tone"].float())
    grey = (age.clamp(0.3, 1) - 0.3)[:, None] / 0.7
    hair = _lerp_palette(_HAIR, attrs["hair_color"].float()) * (1 - 0.8 * grey) + _GREY * 0.8 * grey
    style = attrs["hair_style"][:, None, None]

    img = _hsv(attrs["bg_hue"].float(), 0.45, 0.85)[:, :, None, None].expand(n, 3, r, r).clone()
    img = paint(img, cover(_ellipse(px, py, cx, cy + hh + 0.45, hw + 0.40, full(0.40))), _SHIRT)
    back = torch.maximum(_ellipse(px, py, cx, cy + 0.10, hw + 0.16, hh + 0.14), py - (cy + hh + 0.30))
    img = paint(img, cover(back) * (style == 2).float(), hair)
    bob = torch.maximum(_ellipse(px, py, cx, cy - 0.02, hw + 0.13, hh + 0.08), py - (cy + hh * 0.35))
    img = paint(img, cover(bob) * (style == 1).float(), hair)
    for side in (-1.0, 1.0):
        ear = _ellipse(px, py, cx + side * hw * (1 - 0.08 * side * yaw), cy + 0.02, full(0.08), full(0.13))
        img = paint(img, cover(ear), skin * 0.92)
    face = _ellipse(px, py, cx, cy, hw, hh)
    img = paint(img, cover(face), skin)
    # forehead lines, stronger with age
    for k in range(3):
        line_y = cy - hh * 0.38 + k * 0.06
        line = torch.maximum((py - line_y).abs() - 0.009, (px - fx).abs() - hw * 0.40)
        img = paint(img, cover(line) * ((a["age"] - 0.45) * 1.6).clamp(0, 0.8), skin * 0.62)
    # mouth geometry, shared by the cheeks, the beard and the lips
    mw = 0.30 + 0.05 * a["face_width"]
    my = cy + 0.36
    bend = (a["smile"] - 0.5) * 0.50  # corners rise by bend * 0.7 at dx = 1
    # cheeks: rosy, raised and stronger as the smile grows
    for side in (-1.0, 1.0):
        cheek = _ellipse(px, py, fx + side * mw * 1.15, my - 0.14 - 0.10 * a["smile"], full(0.12), full(0.08))
        img = paint(img, cover(cheek) * (a["smile"] - 0.5).clamp_min(0) * 1.3, _CHEEK)
    # full beard below the nose line plus a moustache, in the hair colour
    beard_colour = hair * 0.85 + 0.04
    beard = torch.maximum(face + 0.004, (cy + 0.22) - py)
    img = paint(img, cover(beard) * a["beard"], beard_colour)
    # hair on top
    cap = torch.maximum(_ellipse(px, py, cx, cy - 0.02, hw + 0.05, hh + 0.06), py - (cy - hh * 0.55 + 0.05 * (px - cx)))
    img = paint(img, cover(cap), hair)
    # eyes, brows and glasses
    eye_y = cy - 0.12
    ew = 0.10 + 0.06 * a["eye_size"]
    eh = ew * (0.15 + 0.85 * a["eye_open"])
    spread = hw * 0.42
    for side in (-1.0, 1.0):
        ex = fx + side * spread * (1 - 0.2 * side * yaw)
        w = ew * (1 - 0.25 * side * yaw)
        sclera = _ellipse(px, py, ex, eye_y, w, eh)
        img = paint(img, cover(sclera), torch.ones(3) * 0.97)
        iris = torch.maximum(_ellipse(px, py, ex + yaw * w * 0.3, eye_y, ew * 0.5, ew * 0.5), sclera)
        img = paint(img, cover(iris), torch.tensor([0.15, 0.12, 0.10]))
        angle = (a["brow_angle"] - 0.5) * 1.2 * side
        bx, by = px - ex, py - (eye_y - 0.12 - 0.5 * ew)
        u = bx * torch.cos(angle) + by * torch.sin(angle)
        v = -bx * torch.sin(angle) + by * torch.cos(angle)
        brow = torch.maximum(u.abs() - w * 1.2, v.abs() - 0.035)
        img = paint(img, cover(brow), hair * 0.75)
        lens = _ellipse(px, py, ex, eye_y, ew + 0.09, ew + 0.06)
        img = paint(img, cover(lens) * a["glasses"] * 0.45, _LENS)
        ring = lens.abs() - 0.03
        img = paint(img, cover(ring) * a["glasses"], _FRAME)
    bridge = torch.maximum((px - fx).abs() - (spread - ew - 0.06), (py - eye_y + 0.02).abs() - 0.025)
    img = paint(img, cover(bridge) * a["glasses"], _FRAME)
    nose = torch.maximum(_ellipse(px, py, fx + yaw * 0.04, cy + 0.12, full(0.06), full(0.10)), -(py - (cy + 0.12)))
    img = paint(img, cover(nose), skin * 0.8)
    moustache = _ellipse(px, py, fx, my - 0.10, mw * 0.85, full(0.05))
    img = paint(img, cover(moustache) * a["beard"], beard_colour * 0.9)
    # mouth: a curved band whose corners bend with smile; opening drops the lower lip
    dx = (px - fx) / mw
    curve = my - bend * (dx**2 - 0.3)
    inside = dx.abs() - 1
    gap = 0.02 + 0.20 * a["mouth_open"] * (1 - dx**2).clamp_min(0)
    opening = torch.maximum(inside * mw, torch.maximum(curve - py, py - (curve + gap)))
    lips = torch.maximum(inside * mw, torch.maximum(curve - 0.045 - py, py - (curve + gap + 0.045)))
    img = paint(img, cover(lips), _LIPS)
    img = paint(img, cover(opening) * (a["mouth_open"] > 0.05).float(), _MOUTH)
    img = F.avg_pool2d(img, supersample) if supersample > 1 else img
    return img.clamp(0, 1) * 2 - 1


def make_batch(n: int, seed: int, resolution: int = RESOLUTION) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Deterministic batch of v2 faces and their attributes from an integer seed."""
    attrs = sample_attributes(n, torch.Generator().manual_seed(seed))
    return render(attrs, resolution), attrs
