"""Baseline direction finders the method is compared with.

- ``random``: random unit directions (see ``factorize.random_directions``), the control.
- ``pca-h`` (Haas et al.): principal components of h-space (the edit location's output, flattened C*H*W)
  collected over sampled trajectories.
- ``pullback`` (Park et al.): per image, the top right singular vectors of the Jacobian of x_t -> h at the first
  DDIM step, by subspace (power) iteration with JVPs and VJPs; the edit moves x_t along them.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from eigenedit.directions import Directions
from eigenedit.editing import DEFAULT_LOCATION, DEFAULT_T_EDIT, get_module, noise_from_seeds
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
                eps = model.unet(x, t).sample[:, : x.shape[1]]
                x = sched.step(eps, t, x, eta=0.0).prev_sample
    finally:
        handle.remove()
    return torch.cat(found)


def pca_directions(hidden: torch.Tensor, k: int) -> Directions:
    """Top-k principal components of the collected hidden states (Haas et al.'s h-space PCA)."""
    centred = hidden - hidden.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(k, vh.shape[0])
    from eigenedit.factorize import fix_signs

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
    """Top ``rank`` right singular vectors (rank, *x.shape) and singular values of d h / d x_t for one image.

    Subspace iteration: V <- orth(J^T J V), each step one JVP and one VJP per vector (torch.func).
    """
    module = get_module(model.unet, location)
    store: dict[str, torch.Tensor] = {}

    def hook(mod, args, output):
        store["h"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    timestep = torch.tensor([t])

    def h_of(x: torch.Tensor) -> torch.Tensor:
        model.unet(x[None], timestep)
        return store["h"][0]

    x = x_t.detach().to(model.dtype)
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(x.numel(), rank, generator=g, dtype=model.dtype))[0].T
    try:
        for _ in range(iterations):
            images = []
            for v in basis:
                _, jv = torch.func.jvp(h_of, (x,), (v.view_as(x),))
                _, vjp_fn = torch.func.vjp(h_of, x)
                images.append(vjp_fn(jv)[0].flatten())
            basis = torch.linalg.qr(torch.stack(images, 1))[0].T
        sigmas = torch.stack([torch.func.jvp(h_of, (x,), (v.view_as(x),))[1].norm() for v in basis])
    finally:
        handle.remove()
    order = torch.argsort(sigmas, descending=True)
    return basis[order].view(rank, *x.shape).detach(), sigmas[order].detach()


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
        eps = model.unet(x, t).sample[:, : x.shape[1]]
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)
