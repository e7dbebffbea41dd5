"""Drawing pieces shared by the procedural faces, v1 (``faces``) and v2 (``faces_v2``): the binary and
categorical attributes they share, and colour and signed-distance helpers."""

from __future__ import annotations

from collections.abc import Callable

import torch

BINARY = ("glasses", "beard")
CATEGORICAL = {"hair_style": ("short", "bob", "long")}
RESOLUTION = 64


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


def render_in_chunks(
    draw: Callable[[dict[str, torch.Tensor], int, int], torch.Tensor],
    attrs: dict[str, torch.Tensor],
    resolution: int,
    supersample: int,
) -> torch.Tensor:
    """Run a renderer over chunks of 16 faces (the fastest size on a CPU) and stack the images."""
    n = next(iter(attrs.values())).shape[0]
    chunks = [{k: v[i : i + 16] for k, v in attrs.items()} for i in range(0, n, 16)]
    return torch.cat([draw(c, resolution, supersample) for c in chunks])
