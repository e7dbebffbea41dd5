"""Baseline direction finders the method is compared with.

- ``random``: random unit directions (see ``factorize.random_directions``), the control.
- ``pca-h`` (Haas et al.): principal components of h-space (the edit location's output, flattened C*H*W)
  collected over sampled trajectories.
- ``pullback`` (Park et al.): per image, the top right singular vectors of the Jacobian of x_t -> h at the first
  DDIM step, by subspace (power) iteration with JVPs and VJPs; the edit moves x_t along them.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from tqdm.auto import tqdm

from eigenedit.core.defaults import DEFAULT_LOCATION, DEFAULT_T_EDIT
from eigenedit.core.directions import Directions
from eigenedit.core.operators import get_module, hidden_at
from eigenedit.core.sampling import noise_from_seeds
from eigenedit.models import DiffusionModel


@torch.no_grad()
def collect_hidden(
    model: DiffusionModel,
    seeds: list[int],
    num_steps: int = 10,
    t_edit: int = DEFAULT_T_EDIT,
    location: str = DEFAULT_LOCATION,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Flattened outputs (n, C*H*W) of ``location`` at every DDIM step with t >= t_edit, over all seeds."""
    module = get_module(model.unet, location)
    found: list[torch.Tensor] = []
    collect = [False]

    def hook(mod, args, output):
        h = output[0] if isinstance(output, tuple) else output
        if collect[0]:
            found.append(h.detach().flatten(1).double())

    handle = module.register_forward_hook(hook)
    sched = model.scheduler
    try:
        for start in tqdm(range(0, len(seeds), batch_size), desc="pca-h samples", disable=not progress):
            x = noise_from_seeds(model, seeds[start : start + batch_size])
            sched.set_timesteps(num_steps)
            for t in sched.timesteps:
                collect[0] = int(t) >= t_edit
                eps = model.predict_eps(x, t)
                x = sched.step(eps, t, x, eta=0.0).prev_sample
    finally:
        handle.remove()
    return torch.cat(found)


def pca_directions(hidden: torch.Tensor, k: int) -> Directions:
    """Top-k principal components of the collected hidden states (Haas et al.'s h-space PCA)."""
    centred = hidden - hidden.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(k, vh.shape[0])
    from eigenedit.core.factorize import fix_signs

    variance = s[:k] ** 2 / max(1, hidden.shape[0] - 1)
    return Directions(fix_signs(vh[:k]).float(), variance.float(), {"decomposition": "pca-h", "samples": len(hidden)})


def pullback_directions(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    rank: int = 4,
    iterations: int = 5,
    location: str = DEFAULT_LOCATION,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``rank`` right singular vectors (rank, *x.shape) and singular values of J = d h / d x_t for one image.

    Subspace iteration V <- orth(J^T J V). J^T w is a VJP; J v is the VJP of the linear map u -> J^T u
    (double backward), so one forward pass serves every product.
    """
    attentions = [m for m in model.unet.modules() if isinstance(m, Attention)]
    processors = [m.processor for m in attentions]
    for m in attentions:
        m.set_processor(AttnProcessor())  # plain ops: fused SDPA has no double backward on CPU
    try:
        with torch.enable_grad():
            x = x_t.detach().to(model.dtype)[None].requires_grad_(True)
            h = hidden_at(model, location, x, t)
            u = torch.zeros_like(h, requires_grad=True)
            (jt_u,) = torch.autograd.grad(h, x, u, create_graph=True)

            def jvp(v: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(jt_u, u, v.view_as(x), retain_graph=True)[0]

            def vjp(w: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(h, x, w, retain_graph=True)[0].flatten()

            g = torch.Generator().manual_seed(seed)
            basis = torch.linalg.qr(torch.randn(x.numel(), rank, generator=g, dtype=model.dtype))[0].T
            for _ in range(iterations):
                basis = torch.linalg.qr(torch.stack([vjp(jvp(v)) for v in basis], 1))[0].T
            sigmas = torch.stack([jvp(v).norm() for v in basis])
    finally:
        for m, p in zip(attentions, processors, strict=True):
            m.set_processor(p)
    order = torch.argsort(sigmas, descending=True)
    return basis[order].view(rank, *x_t.shape).detach(), sigmas[order].detach()


@torch.no_grad()
def sample_with_x_shift(
    model: DiffusionModel, x_t: torch.Tensor, shifts: torch.Tensor, num_steps: int, t_edit: int
) -> torch.Tensor:
    """DDIM from x_T where ``shifts`` is added to x at the first step with t >= t_edit (Park et al.'s edit)."""
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    x = x_t.clone()
    applied = False
    for t in sched.timesteps:
        if not applied and int(t) >= t_edit:
            x = x + shifts
            applied = True
        eps = model.predict_eps(x, t)
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)
