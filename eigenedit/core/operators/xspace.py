"""The ``xspace`` operator (Park et al.): moves x_t, not h.

At every edited step, ``x_t += |alpha| * ||x_t|| * g / ||g||`` with g = J^T U, J = d h / d x_t and U the shift's
field of ``alpha * u`` (one VJP per step; ``cg_steps`` > 0 refines g by conjugate gradients toward J g = U). The
rest of sampling stays under no_grad.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from eigenedit.core.operators.hidden import direction_field, get_module

if TYPE_CHECKING:
    from eigenedit.core.directions import Directions
    from eigenedit.core.model import EditableModel


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the edit location's output is known."""


def hidden_prefix(model: EditableModel, location: str, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """Like ``hidden_at``, but the forward pass stops at ``location`` (a gradient then flows only through the
    part of the UNet before it)."""
    store = {}

    def hook(module, args, output):
        store["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    handle = get_module(model.unet, location).register_forward_hook(hook)
    try:
        model.predict_eps(x, torch.as_tensor(t, device=x.device))
    except _Stop:
        pass
    finally:
        handle.remove()
    return store["h"][-x.shape[0] :]


class XSpace:
    """``xspace``: at every edited step, x_t += |alpha| * ||x_t|| * g / ||g||, g = J^T U (see the docstring)."""

    def __init__(self, model: EditableModel, location: str, vectors: torch.Tensor, alphas: torch.Tensor, cg_steps=0):
        self.model, self.location, self.vectors, self.alphas, self.cg_steps = model, location, vectors, alphas, cg_steps
        self.active = False

    def direction(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """g (same shape as x): J^T U, or with ``cg_steps`` the CG solution of min ||J g - U|| started at 0."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            if self.cg_steps == 0:
                h = hidden_prefix(self.model, self.location, xg, t)
                target = direction_field(h.detach(), self.vectors, self.alphas).contiguous()
                return torch.autograd.grad(h, xg, target)[0].detach()
            return self._cg(xg, t).detach()

    def _cg(self, xg: torch.Tensor, t: int) -> torch.Tensor:
        """CG on the normal equations J^T J g = J^T U, per sample; J p as the VJP of w -> J^T w (double backward)."""
        from diffusers.models.attention_processor import Attention, AttnProcessor

        attentions = [m for m in self.model.unet.modules() if isinstance(m, Attention)]
        processors = [m.processor for m in attentions]
        for m in attentions:
            m.set_processor(AttnProcessor())  # plain ops: fused SDPA has no double backward on CPU
        try:
            h = hidden_prefix(self.model, self.location, xg, t)
            target = direction_field(h.detach(), self.vectors, self.alphas).contiguous()
            w = torch.zeros_like(h, requires_grad=True)
            (jt_w,) = torch.autograd.grad(h, xg, w, create_graph=True)

            def normal(p: torch.Tensor) -> torch.Tensor:  # J^T J p
                jp = torch.autograd.grad(jt_w, w, p, retain_graph=True)[0]
                return torch.autograd.grad(h, xg, jp, retain_graph=True)[0]

            def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.ndim - 1)))

            r = torch.autograd.grad(h, xg, target, retain_graph=True)[0]  # J^T U - J^T J 0
            g, p, rr = torch.zeros_like(r), r, dot(r, r)
            for _ in range(self.cg_steps):
                ap = normal(p)
                step = rr / dot(p, ap).clamp_min(1e-30)
                g, r = g + step * p, r - step * ap
                rr_new = dot(r, r)
                p, rr = r + rr_new / rr.clamp_min(1e-30) * p, rr_new
            return g
        finally:
            for m, proc in zip(attentions, processors, strict=True):
                m.set_processor(proc)

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        alphas = self.alphas.to(x)
        if not alphas.any():
            return x
        g = self.direction(x, t)
        shape = (-1, *([1] * (x.ndim - 1)))
        size = alphas.norm(dim=1).view(shape) * x.flatten(1).norm(dim=1).view(shape)
        return x + size * g / g.flatten(1).norm(dim=1).view(shape).clamp_min(1e-30)

    def __enter__(self) -> XSpace:
        return self

    def __exit__(self, *exc) -> None:
        pass


def build_xspace(
    model: EditableModel, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
) -> XSpace:
    get_module(model.unet, location)
    return XSpace(model, location, directions.vectors, alphas, cg_steps)
