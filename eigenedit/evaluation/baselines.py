"""Baseline direction finders the method is compared with.

- ``random``: random unit directions (see ``factorize.random_directions``), the control.
- ``pca-h`` (Haas et al.): principal components of h-space (the edit location's output, flattened C*H*W)
  collected over sampled trajectories.
- ``pullback`` (Park et al., NeurIPS 2023, as published in github.com/enkeejunior1/Diffusion-Pullback): per
  image, the top right singular vectors of the Jacobian of x_t -> h (mid block) at the edit timestep, by their
  subspace iteration to convergence (``PullbackRecipe``); the edit moves x_t along one by x-space guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    pooled: bool = False,
) -> torch.Tensor:
    """Flattened outputs (n, C*H*W) of ``location`` at every DDIM step with t >= t_edit, over all seeds; with
    ``pooled``, one row (C,) per seed: the output averaged over positions and over those steps."""
    module = get_module(model.unet, location)
    found: list[torch.Tensor] = []
    collect = [False]

    def hook(mod, args, output):
        h = output[0] if isinstance(output, tuple) else output
        if collect[0]:
            h = h.detach().double()
            found.append(h.flatten(2).mean(2) if pooled and h.ndim == 4 else h.mean(1) if pooled else h.flatten(1))

    handle = module.register_forward_hook(hook)
    sched = model.scheduler
    try:
        for start in tqdm(range(0, len(seeds), batch_size), desc="pca-h samples", disable=not progress):
            x = noise_from_seeds(model, seeds[start : start + batch_size])
            sched.set_timesteps(num_steps)
            first = len(found)
            for t in sched.timesteps:
                collect[0] = int(t) >= t_edit
                eps = model.predict_eps(x, t)
                x = sched.step(eps, t, x, eta=0.0).prev_sample
            if pooled:
                found[first:] = [torch.stack(found[first:]).mean(0)]
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


@dataclass(frozen=True)
class PullbackRecipe:
    """Park et al.'s settings (NeurIPS 2023, github.com/enkeejunior1/Diffusion-Pullback), unconditional models:

    - ``rank`` 5: ``src/main.py`` calls ``run_edit_local_encoder_pullback_zt(..., pca_rank=5)``;
    - ``min_iter`` 10, ``max_iter`` 50, ``tol`` 1e-4: ``EditUncondDiffusion.run_edit_local_encoder_pullback_zt``
      (``src/modules/edit.py``) calls ``local_encoder_pullback_xt(..., min_iter=10, max_iter=50,
      convergence_threshold=1e-4)`` (``src/utils/utils.py``);
    - ``edit_t`` 1.0 (the edit timestep as a fraction of T; the basis is computed at the same x_t), and x-space
      guidance ``guidance_step`` 1, ``guidance_scale`` 0.25, ``guidance_steps`` 16:
      ``src/scripts/main_celeba_hf_local_encoder_pullback.sh`` (``--edit_t 1.0``, also 0.8 and 0.6;
      ``--x_space_guidance_edit_step 1 --x_space_guidance_scale 0.25 --x_space_guidance_num_step 16``);
    - ``location``: h is the mid-block output (``op='mid', block_idx=0`` in ``get_h_uncond``); None here means
      the model's mid block (``mid_block``, or ``network.middle_block`` for guided-diffusion UNets).

    Left out: their ``performance_boosting_t`` 0.2 (stochastic DDPM steps, eta = 1, below t = 0.2 T): every
    evaluated sample here is deterministic DDIM, so that plain and edited images differ only by the edit."""

    rank: int = 5
    min_iter: int = 10
    max_iter: int = 50
    tol: float = 1e-4
    edit_t: float = 1.0
    guidance_step: float = 1.0
    guidance_scale: float = 0.25
    guidance_steps: int = 16
    location: str | None = None


def pullback_location(model: DiffusionModel, location: str | None = None) -> str:
    """The module whose output is Park et al.'s h: ``location`` if given, else the UNet's mid block."""
    if location is not None:
        return location
    names = dict(model.unet.named_modules())
    for name in ("mid_block", "network.middle_block", "middle_block"):
        if name in names:
            return name
    raise ValueError("the model has no mid block; give the pullback location (h) explicitly")


def pullback_directions(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    rank: int = 5,
    max_iter: int = 50,
    location: str = DEFAULT_LOCATION,
    seed: int = 0,
    min_iter: int = 10,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Top ``rank`` right singular vectors (rank, *x.shape) and singular values of J = d h / d x_t for one image,
    and the number of iterations run.

    Park et al.'s ``local_encoder_pullback_xt`` (``src/utils/utils.py``): V orthonormal (random, QR); repeat
    U = J V, W = J^T U = V J^T J, V <- right singular vectors of W (sigma = sqrt of W's singular values) until
    every entry of V moves by at most ``tol`` after more than ``min_iter`` iterations, or ``max_iter``. Signs are
    aligned with the previous iterate before comparing (an SVD may flip them). J^T w is a VJP; J v the VJP of
    the linear map u -> J^T u (double backward); the ``rank`` vectors run as one batch of copies of x_t.
    """
    attentions = [m for m in model.unet.modules() if isinstance(m, Attention)]
    processors = [m.processor for m in attentions]
    for m in attentions:
        m.set_processor(AttnProcessor())  # plain ops: fused SDPA has no double backward on CPU
    g = torch.Generator().manual_seed(seed)
    n = x_t.numel()
    basis = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))[0].T
    try:
        with torch.enable_grad():
            x = x_t.detach().to(model.dtype)[None].repeat(rank, *([1] * x_t.ndim)).requires_grad_(True)
            h = hidden_at(model, location, x, t)
            u = torch.zeros_like(h, requires_grad=True)
            (jt_u,) = torch.autograd.grad(h, x, u, create_graph=True)
            iterations = 0
            for iterations in range(1, max_iter + 1):
                v = basis.to(model.dtype).view_as(x)
                ju = torch.autograd.grad(jt_u, u, v, retain_graph=True)[0]  # J v_i, per copy
                w = torch.autograd.grad(h, x, ju, retain_graph=True)[0].flatten(1).double()  # J^T J v_i
                _, s, vh = torch.linalg.svd(w, full_matrices=False)
                vh = vh * torch.sign((vh * basis).sum(1, keepdim=True) + 1e-30)
                moved = float((vh - basis).abs().max())
                basis = vh
                if moved <= tol and iterations > min_iter:
                    break
            sigmas = s.sqrt()
    finally:
        for m, p in zip(attentions, processors, strict=True):
            m.set_processor(p)
    order = torch.argsort(sigmas, descending=True)
    return basis[order].view(rank, *x_t.shape).float(), sigmas[order].float(), iterations


def ddim_steps(model: DiffusionModel, x: torch.Tensor, num_steps: int, start: int = 0, stop: int | None = None):
    """Deterministic DDIM over the schedule's steps ``start`` .. ``stop`` - 1 (indices into its timesteps)."""
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    with torch.no_grad():
        for t in sched.timesteps[start:stop]:
            x = sched.step(model.predict_eps(x, t), t, x, eta=0.0).prev_sample
    return x


def edit_index(model: DiffusionModel, num_steps: int, edit_t: float) -> int:
    """Index of the DDIM timestep nearest to ``edit_t`` * T (Park et al.'s ``edit_t_idx``)."""
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    target = edit_t * sched.config.num_train_timesteps
    return int((sched.timesteps.double() - target).abs().argmin())


@torch.no_grad()
def x_space_guidance(
    model: DiffusionModel,
    x_t: torch.Tensor,
    t: int,
    v: torch.Tensor,
    snapshots: list[int],
    step: float = 1.0,
    scale: float = 0.25,
) -> dict[int, torch.Tensor]:
    """Park et al.'s x-space guidance (``EditUncondDiffusion.x_space_guidance``, ``src/modules/edit.py``),
    repeated: x <- x + scale * (eps(x + step * v, t) - eps(x, t)). Returns x after each count in ``snapshots``."""
    out, x = {}, x_t.clone()
    if 0 in snapshots:
        out[0] = x.clone()
    for i in range(1, max(snapshots) + 1):
        eps = model.predict_eps(torch.cat([x, x + step * v]), t)
        null, edit = eps.chunk(2)
        x = x + scale * (edit - null)
        if i in snapshots:
            out[i] = x.clone()
    return out
