"""Probes: read named attributes, with their units, from images; one interface for every model.

A probe maps images (N, C, H, W) in [-1, 1] to a dict of (N,) float tensors, one per attribute, plus an optional
boolean ``valid`` mask (images the probe can read; the others are left out of averages). Shipped probes:

- ``shapes``: the analytic factor estimator (kind, hues, size, position);
- ``fashion``: measured garment attributes (area, brightness, width, height) and the project's classifier
  (``class`` index, ``confidence``);
- ``terrain``: heightmap statistics in metres (elevation, roughness, slope, ridge density);
- a user's own: ``load_probe("package.module:function")``, where the function returns such a dict.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

Reader = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Probe:
    """A named attribute reader. ``units`` lists every attribute it returns (besides ``valid``); attributes in
    ``circular`` wrap around at 1 (hues); ``categorical`` ones count a change as a flip rate. ``scales``: the
    reference spread of each attribute (changes are reported in these units; missing ones: the std over the
    unedited images of the run). ``features``: images -> (N, D) features for a Frechet distance (default: the
    scaled non-categorical attributes)."""

    name: str
    read: Reader
    units: dict[str, str]
    circular: frozenset[str] = field(default_factory=frozenset)
    categorical: frozenset[str] = field(default_factory=frozenset)
    scales: dict[str, float] = field(default_factory=dict)
    features: Callable[[torch.Tensor], torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        parts = [self.read(images[i : i + batch_size].float().clamp(-1, 1)) for i in range(0, len(images), batch_size)]
        out = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        missing = set(self.units) - set(out)
        if missing:
            raise ValueError(f"probe {self.name!r} did not return {sorted(missing)}")
        out.setdefault("valid", torch.ones(len(images), dtype=torch.bool))
        return out

    def difference(self, name: str, edited: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
        """Per-image change of one attribute (circular for hues, 0/1 flips for categorical attributes)."""
        if name in self.categorical:
            return (edited != plain).float()
        if name in self.circular:
            return (edited - plain + 0.5) % 1.0 - 0.5
        return edited - plain

    @torch.no_grad()
    def feature_vectors(self, images: torch.Tensor, reads: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, D) features for the Frechet distance: ``features`` if given, else the attributes in their scales."""
        if self.features is not None:
            return torch.cat([self.features(images[i : i + 256].float()) for i in range(0, len(images), 256)])
        reads = self(images) if reads is None else reads
        names = [n for n in self.units if n not in self.categorical]
        return torch.stack([reads[n].double() / self.scales.get(n, 1.0) for n in names], 1)


def shapes_probe() -> Probe:
    from eigenedit.data import shapes

    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        est = shapes.estimate_factors(images)
        return {name: getattr(est, name).float() for name in shapes.FACTORS} | {"valid": est.valid}

    units = {"kind": "category", "shape_hue": "hue", "bg_hue": "hue", "size": "side", "x": "side", "y": "side"}
    circular, categorical = frozenset({"shape_hue", "bg_hue"}), frozenset({"kind"})
    return Probe("shapes", read, units, circular, categorical, scales=shapes_scales())


def shapes_scales() -> dict[str, float]:
    """Std of each factor over the shapes dataset (uniform ranges); a kind change counts as one unit."""
    from eigenedit.data import shapes

    side = (shapes.SIZE_RANGE[1] - shapes.SIZE_RANGE[0]) / math.sqrt(12)
    position = (shapes.POS_RANGE[1] - shapes.POS_RANGE[0]) / math.sqrt(12)
    hue = 1 / math.sqrt(12)
    return {"kind": 1.0, "shape_hue": hue, "bg_hue": hue, "size": side, "x": position, "y": position}


def fashion_probe(classifier_dir: str | Path | None = None) -> Probe:
    from eigenedit.data import fashion
    from eigenedit.models import SHIPPED_MODELS

    classifier = fashion.FashionClassifier.from_pretrained(classifier_dir or SHIPPED_MODELS["fashion32"] / "classifier")

    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = classifier(images).softmax(1)
        confidence, cls = probs.max(1)
        return fashion.attributes(images) | {"class": cls.float(), "confidence": confidence}

    units = {"area": "fraction", "brightness": "intensity", "width": "side", "height": "side"}
    units |= {"class": "category", "confidence": "probability"}
    try:  # attribute spreads over the real test photos (as benchmarks/fashion.py); else over the run's samples
        test_images, _ = fashion.load("test")
        scales = {name: float(v.std()) for name, v in fashion.attributes(test_images).items()}
    except (FileNotFoundError, OSError):
        scales = {}
    scales["confidence"] = 1.0  # a probability: its changes are reported as they are
    return Probe("fashion", read, units, categorical=frozenset({"class"}), scales=scales, features=classifier.features)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) with reflected borders."""
    radius = math.ceil(3 * sigma)
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return F.conv2d(y, kernel.view(1, 1, -1, 1))[:, 0]


def terrain_statistics(heights: torch.Tensor, pixel_size: float) -> dict[str, torch.Tensor]:
    """Heightmaps (B, H, W) in metres -> elevation (mean height), roughness (std of the high-pass residual
    h - G_4 * h), slope (mean |grad h|), ridges (fraction of pixels where the convex curvature -laplacian(G_1 * h)
    is positive and the largest in its 3x3 neighbourhood)."""
    h = heights.double()
    roughness = (h - gaussian_blur(h, 4.0)).flatten(1).std(dim=1)
    gy, gx = torch.gradient(h, spacing=pixel_size, dim=(1, 2))
    slope = (gx**2 + gy**2).sqrt().flatten(1).mean(dim=1)
    smooth = F.pad(gaussian_blur(h, 1.0)[:, None], (1, 1, 1, 1), mode="replicate")
    curvature = -F.conv2d(smooth, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=h.dtype))
    is_max = curvature == F.max_pool2d(curvature, 3, stride=1, padding=1)
    ridges = (is_max & (curvature > 0)).flatten(1).double().mean(dim=1)
    stats = {"elevation": h.flatten(1).mean(dim=1), "roughness": roughness, "slope": slope, "ridges": ridges}
    return {k: v.float() for k, v in stats.items()}


def terrain_probe() -> Probe:
    from eigenedit.models.terrain import PIXEL_SIZE, to_heights

    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return terrain_statistics(to_heights(images), PIXEL_SIZE)

    return Probe("terrain", read, {"elevation": "m", "roughness": "m", "slope": "m/m", "ridges": "fraction"})


def faces_probe(probe_dir: str | Path | None = None) -> Probe:
    """The faces model's attribute probe (``eigenedit.data.faces.FaceProbe``): continuous attributes in [0, 1]
    (scale: the std of a uniform attribute, 1/sqrt(12)), glasses/beard probabilities, hair style class."""
    from eigenedit.data import faces
    from eigenedit.models import SHIPPED_MODELS

    probe = faces.FaceProbe.from_pretrained(probe_dir or SHIPPED_MODELS["faces64"] / "probe")
    units = {name: "fraction of range" for name in faces.CONTINUOUS}
    units |= {name: "probability" for name in faces.BINARY} | {"hair_style": "category"}
    scales = {name: 1 / math.sqrt(12) for name in faces.CONTINUOUS} | {name: 1.0 for name in faces.BINARY}
    return Probe("faces", probe.predict, units, circular=frozenset({"bg_hue"}), categorical=frozenset({"hair_style"}),
                 scales=scales, features=probe.features)  # fmt: skip


SHIPPED_PROBES: dict[str, Callable[[], Probe]] = {
    "shapes": shapes_probe,
    "fashion": fashion_probe,
    "terrain": terrain_probe,
    "faces": faces_probe,
}
MODEL_PROBES = {"shapes32": "shapes", "fashion32": "fashion", "terrain128": "terrain", "faces64": "faces"}


def load_probe(spec: str) -> Probe:
    """A shipped probe by name, or ``module:function`` returning a Probe or a reader (images -> dict)."""
    if spec in SHIPPED_PROBES:
        return SHIPPED_PROBES[spec]()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"unknown probe {spec!r}: give one of {', '.join(SHIPPED_PROBES)} or module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load probe {spec!r}: {err}") from None
    if isinstance(fn, Probe):
        return fn
    result = fn()
    if isinstance(result, Probe):
        return result
    raise ValueError(f"probe {spec!r} must be a Probe or a function returning one")


def probe_for_model(model_id: str) -> Probe | None:
    """The shipped probe of a shipped model (None for other models: use label-free metrics or --probe)."""
    name = MODEL_PROBES.get(model_id)
    return SHIPPED_PROBES[name]() if name else None
