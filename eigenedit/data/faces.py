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

import json
from pathlib import Path

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
from eigenedit.data.probe_net import ProbeNet

CONTINUOUS = (
    "smile", "mouth_open", "eye_open", "eye_size", "brow_angle", "hair_color", "skin_tone", "face_width",
    "x", "y", "yaw", "bg_hue",
)  # fmt: skip
ATTRIBUTES = (*CONTINUOUS, *BINARY, *CATEGORICAL)

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


def render(attrs: dict[str, torch.Tensor], resolution: int = RESOLUTION, supersample: int = 1) -> torch.Tensor:
    """Attributes -> images (N, 3, R, R) in [-1, 1], in chunks of 16 (the fastest size on a CPU)."""
    return render_in_chunks(_render, attrs, resolution, supersample)


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
    hw = 0.33 + 0.12 * a["face_width"]  # half width of the face
    hh = 0.50 + 0.0 * hw
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
    ew = 0.07 + 0.05 * a["eye_size"]
    eh = ew * (0.15 + 0.85 * a["eye_open"])
    spread = hw * 0.42
    for side in (-1.0, 1.0):
        ex = fx + side * spread * (1 - 0.25 * side * yaw)
        w = ew * (1 - 0.3 * side * yaw)
        sclera = _ellipse(px, py, ex, eye_y, w, eh)
        img = paint(img, cover(sclera), torch.ones(n, 3) * 0.97)
        iris = torch.maximum(_ellipse(px, py, ex + yaw * w * 0.3, eye_y, ew * 0.5, ew * 0.5), sclera)
        img = paint(img, cover(iris), torch.tensor([0.15, 0.12, 0.10]).expand(n, 3))
        # eyebrow: a thin bar above the eye, its inner end tilted by brow_angle
        angle = (a["brow_angle"] - 0.5) * 1.2 * side  # radians
        bx, by = px - ex, py - (eye_y - 0.11 - 0.5 * ew)
        u = bx * torch.cos(angle) + by * torch.sin(angle)
        v = -bx * torch.sin(angle) + by * torch.cos(angle)
        brow = torch.maximum(u.abs() - w * 1.25, v.abs() - 0.03)
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
    mw = 0.16 + 0.04 * a["face_width"]
    my = cy + 0.27
    dx = (px - fx) / mw
    curve = my - (a["smile"] - 0.5) * 0.32 * (dx**2 - 0.3)
    inside = dx.abs() - 1
    gap = 0.015 + 0.16 * a["mouth_open"] * (1 - dx**2).clamp_min(0)
    opening = torch.maximum(inside * mw, torch.maximum(curve - py, py - (curve + gap)))
    lips = torch.maximum(inside * mw, torch.maximum(curve - 0.03 - py, py - (curve + gap + 0.03)))
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


class FaceProbe(ProbeNet):
    """A small CNN trained by the project on rendered faces: regresses every continuous attribute (in [0, 1]),
    predicts glasses and beard (logits) and the hair style (3 logits). Its penultimate ``features`` (128-d) give a
    Frechet distance between generated and rendered faces (no Inception weights offline)."""

    def __init__(self, width: int = 24, feature_dim: int = 128, version: int = 1):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "version": version}
        self.continuous = _testbed(version).CONTINUOUS
        c = width
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),  # 32
            torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),  # 16
            torch.nn.Conv2d(2 * c, 4 * c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),  # 8
            torch.nn.Conv2d(4 * c, 4 * c, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(), torch.nn.Linear(64 * c, feature_dim), torch.nn.GELU(),
        )  # fmt: skip
        self.head = torch.nn.Linear(feature_dim, len(self.continuous) + len(BINARY) + len(CATEGORICAL["hair_style"]))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, 64, 64) in [-1, 1] -> (N, feature_dim)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attribute estimates: continuous values, binary probabilities, hair style index (as float)."""
        out = self(images)
        n_cont, n_bin = len(self.continuous), len(BINARY)
        pred = {name: out[:, i] for i, name in enumerate(self.continuous)}
        pred |= {name: out[:, n_cont + i].sigmoid() for i, name in enumerate(BINARY)}
        pred["hair_style"] = out[:, n_cont + n_bin :].argmax(1).float()
        return pred

    def loss(self, images: torch.Tensor, attrs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self(images)
        n_cont, n_bin = len(self.continuous), len(BINARY)
        target = torch.stack([attrs[name] for name in self.continuous], 1)
        binary = torch.stack([attrs[name] for name in BINARY], 1)
        return (
            F.mse_loss(out[:, :n_cont], target) * 10
            + F.binary_cross_entropy_with_logits(out[:, n_cont : n_cont + n_bin], binary)
            + F.cross_entropy(out[:, n_cont + n_bin :], attrs["hair_style"])
        )


TEST_SEED_OFFSET = 10**9  # held-out renders for probe scores come from seeds >= this


def _testbed(version: int):
    """The renderer module of a faces version (1: this module, 2: ``faces_v2``)."""
    if version == 2:
        from eigenedit.data import faces_v2

        return faces_v2
    if version != 1:
        raise ValueError(f"faces version must be 1 or 2, not {version!r}")
    import sys

    return sys.modules[__name__]


def train_probe(
    steps: int = 3000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True, version: int = 1
):
    """Train the probe on fresh renders each step; returns it and its held-out scores (``probe_scores``)."""
    from tqdm.auto import tqdm

    testbed = _testbed(version)
    torch.manual_seed(seed)
    model = FaceProbe(version=version)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for step in (bar := tqdm(range(steps), desc="face probe", disable=not progress)):
        images, attrs = testbed.make_batch(batch_size, seed * 1_000_003 + step)
        loss = model.loss(images, attrs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval().requires_grad_(False)
    return model, probe_scores(model)


@torch.no_grad()
def probe_scores(model: FaceProbe, n: int = 2000) -> dict[str, float]:
    """R^2 of each continuous attribute and accuracy of the binary/categorical ones, on held-out renders."""
    images, attrs = _testbed(model.config.get("version", 1)).make_batch(n, TEST_SEED_OFFSET)
    pred = model.predict(images)
    scores = {}
    for name in model.continuous:
        residual = (pred[name] - attrs[name]).pow(2).mean()
        scores[f"{name}_r2"] = float(1 - residual / attrs[name].var())
    for name in BINARY:
        scores[f"{name}_accuracy"] = float(((pred[name] > 0.5).float() == attrs[name]).float().mean())
    scores["hair_style_accuracy"] = float((pred["hair_style"] == attrs["hair_style"].float()).float().mean())
    return scores


def main(argv: list[str] | None = None) -> None:
    """``python -m eigenedit.data.faces --output eigenedit/pretrained/faces64/probe``: train the attribute probe."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eigenedit.data.faces", description=main.__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--version", type=int, default=1, choices=(1, 2), help="faces renderer version")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    model, scores = train_probe(steps=args.steps, seed=args.seed, version=args.version)
    model.save_pretrained(args.output)
    (args.output / "metrics.json").write_text(json.dumps({"steps": args.steps, **scores}, indent=1) + "\n")
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
