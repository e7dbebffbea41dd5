"""Edit operators: how a direction acts on the model during sampling.

``shift`` adds ``alpha * ||h|| * u`` to the output h of one module (default: the mid-block, i.e. Asyrp/Haas
"h-space"). u is the unit vector of the direction spread over all positions (a C-dim direction n becomes
n / sqrt(H*W) at each of the H*W positions), and ||h|| is the norm of that sample's h at that step: alpha = 1
moves h by its own length. Several directions compose as a sum.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from eigenedit.models.base import DiffusionModel


def shift_hidden(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """h + alpha * ||h|| * u for h of shape (B, C, H, W) or (B, N, C) (tokens); see the module docstring."""
    combo = alphas.to(h) @ vectors.to(h)  # (B, D)
    batch = h.shape[0]
    if h.ndim == 4:
        channels, positions = h.shape[1], h.shape[2] * h.shape[3]
    elif h.ndim == 3:
        channels, positions = h.shape[2], h.shape[1]
    else:
        raise ValueError(f"cannot edit a hidden state of shape {tuple(h.shape)}")
    if combo.shape[1] == channels:
        u = combo / math.sqrt(positions)
        u = u[:, :, None, None] if h.ndim == 4 else u[:, None, :]
    elif combo.shape[1] == h[0].numel():
        u = combo.view_as(h)
    else:
        raise ValueError(
            f"directions have dimension {combo.shape[1]}, but the hidden state has {channels} channels "
            f"({h[0].numel()} values per sample)"
        )
    norm = h.reshape(batch, -1).norm(dim=1).view(batch, *([1] * (h.ndim - 1)))
    return h + norm * u


def get_module(unet: torch.nn.Module, location: str) -> torch.nn.Module:
    modules = dict(unet.named_modules())
    if not location or location not in modules:
        hint = ", ".join(n for n in modules if n.count(".") <= 1 and n)[:400]
        raise ValueError(f"unknown edit location {location!r}; modules include: {hint}")
    return modules[location]


def hidden_at(model: DiffusionModel, location: str, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """The output of module ``location`` (its first tensor) in one UNet forward pass on (x, t).

    Under classifier-free guidance the UNet runs on [unconditional; conditional] copies of x: this returns the
    conditional (last) copy.
    """
    store = {}
    hook = get_module(model.unet, location).register_forward_hook(
        lambda m, a, o: store.update(h=o[0] if isinstance(o, tuple) else o)
    )
    try:
        model.predict_eps(x, torch.as_tensor(t, device=x.device))
    finally:
        hook.remove()
    return store["h"][-x.shape[0] :]


@torch.no_grad()
def location_dims(model: DiffusionModel, location: str) -> tuple[int, int]:
    """(channels, values per sample) of the output of ``location``, from one dry forward pass."""
    h = hidden_at(model, location, torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype), 0)
    return (h.shape[1] if h.ndim == 4 else h.shape[-1]), h[0].numel()


class HiddenShift:
    """A forward hook that shifts a module's output while ``active``; use as a context manager."""

    def __init__(self, module: torch.nn.Module, vectors: torch.Tensor, alphas: torch.Tensor):
        self.module, self.vectors, self.alphas = module, vectors, alphas
        self.active = False
        self.handle = None

    def _hook(self, module, args, output):
        if not self.active:
            return output
        h = output[0] if isinstance(output, tuple) else output
        alphas = self.alphas
        if h.shape[0] != len(alphas) and h.shape[0] % len(alphas) == 0:
            # the UNet runs on stacked copies of the batch (classifier-free guidance: [uncond; cond]):
            # every copy of a sample gets that sample's alphas
            alphas = alphas.repeat(h.shape[0] // len(alphas), 1)
        shifted = shift_hidden(h, self.vectors, alphas)
        return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

    def __enter__(self) -> HiddenShift:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()
