"""Data-free colour axes of an edit location, and directions with those axes taken out.

Many weight directions edit mostly global brightness or colour. Without any data, the model itself says where
colour lives at a location: feed it noisy versions of flat images, ``x_t = sqrt(a_t) c + sqrt(1 - a_t) eps``,
with one colour channel c raised or lowered by ``LEVEL`` and the same noise eps, at every DDIM step an edit
reaches, and take the difference of the location's output pooled over positions. One axis per image channel
(R, G, B; one for grey images); ``without_colour`` projects directions onto the complement of their span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from eigenedit.core.directions import Directions
from eigenedit.core.operators.hidden import hidden_at

if TYPE_CHECKING:
    from eigenedit.core.model import EditableModel

LEVEL = 0.5  # how far each flat image's channel sits from mid-grey, on the [-1, 1] scale
NOISE_SEED = 0


@torch.no_grad()
def colour_axes(model: EditableModel, location: str, num_steps: int, t_edit: int) -> torch.Tensor:
    """(channels of the image, C) unit axes: how the pooled output of ``location`` moves when one image channel
    of a flat image is raised, averaged over the DDIM steps with t >= t_edit (the last step if none is)."""
    if model.latent or model.flow_matching:
        raise ValueError("colour axes need a pixel-space DDIM model (the flat images are its inputs)")
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    steps = [int(t) for t in sched.timesteps if int(t) >= t_edit] or [int(sched.timesteps[-1])]
    shape = model.sample_shape
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(NOISE_SEED)).to(model.device, model.dtype)
    flats = []
    for c in range(shape[0]):
        for sign in (1.0, -1.0):
            flat = torch.zeros(shape, device=model.device, dtype=model.dtype)
            flat[c] = sign * LEVEL
            flats.append(flat)
    flats = torch.stack(flats)
    total = 0.0
    for t in steps:
        a = sched.alphas_cumprod[t].to(model.device, model.dtype)
        h = hidden_at(model, location, a.sqrt() * flats + (1 - a).sqrt() * eps, t).double()
        total = total + (h.flatten(2).mean(2) if h.ndim == 4 else h.mean(1))
    pooled = total / len(steps)
    axes = pooled[0::2] - pooled[1::2]
    return (axes / axes.norm(dim=1, keepdim=True).clamp_min(1e-30)).float()


def without_colour(directions: Directions, axes: torch.Tensor) -> Directions:
    """``directions`` made orthogonal to the span of ``axes`` and renormalised (order and metadata kept)."""
    if axes.shape[1] != directions.vectors.shape[1]:
        raise ValueError(
            f"colour axes have {axes.shape[1]} channels, the directions {directions.vectors.shape[1]}: they must "
            "live at the same location"
        )
    basis = torch.linalg.qr(axes.double().T)[0]
    v = directions.vectors.double()
    v = v - (v @ basis) @ basis.T
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    meta = dict(directions.metadata, colour_removed=True)
    return Directions(v.float(), directions.values.clone(), meta)
