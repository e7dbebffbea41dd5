"""Hidden-state operators: ``shift`` and ``scale`` edit the output h of one module (a forward hook).

- ``shift`` adds ``alpha * ||h|| * u`` to the output h of one module (default: the mid-block, i.e. Asyrp/Haas
  "h-space"). u is the unit vector of the direction spread over all positions (a C-dim direction n becomes
  n / sqrt(H*W) at each of the H*W positions), and ||h|| is the norm of that sample's h at that step: alpha = 1
  moves h by its own length. Several directions compose as a sum.
- ``scale`` is content-aware: ``h_p += alpha * <h_p, n> n`` at every position p (n the unit C-dim direction; the
  whole flattened h for C*H*W directions): alpha = -1 removes the direction where the image has it, +1 doubles it.

Also the helpers other operators share: ``batch_alphas`` (alphas for a guided batch), ``get_module``,
``hidden_at`` and ``location_dims`` (what an edit location outputs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from eigenedit.core.directions import Directions
    from eigenedit.core.model import EditableModel


def direction_field(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k u_k shaped like h (B, C, H, W) or (B, N, C): C-dim directions spread evenly over positions
    (unit norm per direction), or C*H*W directions as they are."""
    combo = alphas.to(h) @ vectors.to(h)  # (B, D)
    if h.ndim == 4:
        channels, positions = h.shape[1], h.shape[2] * h.shape[3]
    elif h.ndim == 3:
        channels, positions = h.shape[2], h.shape[1]
    else:
        raise ValueError(f"cannot edit a hidden state of shape {tuple(h.shape)}")
    if combo.shape[1] == channels:
        u = combo / math.sqrt(positions)
        return (u[:, :, None, None] if h.ndim == 4 else u[:, None, :]).expand_as(h)
    if combo.shape[1] == h[0].numel():
        return combo.view_as(h)
    raise ValueError(
        f"directions have dimension {combo.shape[1]}, but the hidden state has {channels} channels "
        f"({h[0].numel()} values per sample)"
    )


def shift_hidden(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``shift``: h + alpha * ||h|| * u for h of shape (B, C, H, W) or (B, N, C) (tokens)."""
    u = direction_field(h, vectors, alphas)
    norm = h.reshape(h.shape[0], -1).norm(dim=1).view(h.shape[0], *([1] * (h.ndim - 1)))
    return h + norm * u


def scale_hidden(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``scale``: h_p + sum_k alpha_k <h_p, n_k> n_k at each position p (C-dim directions), or
    h + sum_k alpha_k <h, n_k> n_k over the flattened h (C*H*W directions)."""
    n, a = vectors.to(h), alphas.to(h)
    if h.ndim not in (3, 4):
        raise ValueError(f"cannot edit a hidden state of shape {tuple(h.shape)}")
    channels = h.shape[1] if h.ndim == 4 else h.shape[2]
    if n.shape[1] == channels:
        tokens = h.flatten(2).transpose(1, 2) if h.ndim == 4 else h  # (B, N, C)
        delta = (tokens @ n.T * a[:, None, :]) @ n
        return h + (delta.transpose(1, 2).view_as(h) if h.ndim == 4 else delta)
    if n.shape[1] == h[0].numel():
        flat = h.reshape(h.shape[0], -1)
        return h + ((flat @ n.T * a) @ n).view_as(h)
    raise ValueError(
        f"directions have dimension {n.shape[1]}, but the hidden state has {channels} channels "
        f"({h[0].numel()} values per sample)"
    )


def batch_alphas(alphas: torch.Tensor, batch: int) -> torch.Tensor:
    """Alphas (B, k) for a UNet batch of ``batch`` rows: stacked copies of the batch (classifier-free guidance:
    [uncond; cond]) give every copy of a sample that sample's alphas."""
    if batch != len(alphas) and batch % len(alphas) == 0:
        return alphas.repeat(batch // len(alphas), 1)
    return alphas


def get_module(unet: torch.nn.Module, location: str) -> torch.nn.Module:
    modules = dict(unet.named_modules())
    if not location or location not in modules:
        hint = ", ".join(n for n in modules if n.count(".") <= 1 and n)[:400]
        raise ValueError(f"unknown edit location {location!r}; modules include: {hint}")
    return modules[location]


def hidden_at(model: EditableModel, location: str, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
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
def location_dims(model: EditableModel, location: str) -> tuple[int, int]:
    """(channels, values per sample) of the output of ``location``, from one dry forward pass."""
    h = hidden_at(model, location, torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype), 0)
    return (h.shape[1] if h.ndim == 4 else h.shape[-1]), h[0].numel()


class HiddenShift:
    """A forward hook that edits a module's output (``fn``: ``shift_hidden`` or ``scale_hidden``) while
    ``active``; use as a context manager."""

    def __init__(self, module: torch.nn.Module, vectors: torch.Tensor, alphas: torch.Tensor, fn=shift_hidden):
        self.module, self.vectors, self.alphas, self.fn = module, vectors, alphas, fn
        self.active = False
        self.handle = None

    def _hook(self, module, args, output):
        if not self.active:
            return output
        h = output[0] if isinstance(output, tuple) else output
        edited = self.fn(h, self.vectors, batch_alphas(self.alphas, h.shape[0]))
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Operators on h leave x_t alone."""
        return x

    def __enter__(self) -> HiddenShift:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def build_shift(
    model: EditableModel, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
) -> HiddenShift:
    return HiddenShift(get_module(model.unet, location), directions.vectors, alphas, shift_hidden)


def build_scale(
    model: EditableModel, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
) -> HiddenShift:
    return HiddenShift(get_module(model.unet, location), directions.vectors, alphas, scale_hidden)
