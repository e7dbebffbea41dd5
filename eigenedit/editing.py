"""DDIM sampling and inversion with directions added to a UNet's hidden state.

An edit adds ``alpha * ||h|| * u`` to the output h of one module (default: the mid-block, i.e. Asyrp/Haas
"h-space") at every DDIM step with timestep t >= t_edit. u is the unit vector of the direction spread over all
positions (a C-dim direction n becomes n / sqrt(H*W) at each of the H*W positions), and ||h|| is the norm of
that sample's h at that step: alpha = 1 moves h by its own length. Several directions compose as a sum.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from eigenedit.directions import Directions
from eigenedit.models import DiffusionModel

DEFAULT_LOCATION = "mid_block"
DEFAULT_T_EDIT = 500


@dataclass
class Edit:
    """What to add: ``alphas`` (B, k) weights per sample for the k ``directions`` at module ``location``."""

    directions: Directions
    alphas: torch.Tensor
    t_edit: int = DEFAULT_T_EDIT
    location: str = DEFAULT_LOCATION
    asymmetric: bool = False

    def __post_init__(self) -> None:
        self.alphas = torch.as_tensor(self.alphas, dtype=torch.float32)
        if self.alphas.ndim == 1:
            self.alphas = self.alphas[:, None]
        if self.alphas.ndim != 2 or self.alphas.shape[1] != len(self.directions):
            raise ValueError(f"alphas must be (batch, {len(self.directions)}); got {tuple(self.alphas.shape)}")
        if not torch.isfinite(self.alphas).all():
            raise ValueError("alpha must be a finite number (got NaN or inf)")


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


def noise_from_seeds(model: DiffusionModel, seeds: Sequence[int]) -> torch.Tensor:
    """x_T for each seed, independent of how seeds are batched."""
    shape = model.sample_shape
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _alpha_bar(model: DiffusionModel, t: int) -> torch.Tensor:
    sched = model.scheduler
    return sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod


def _step_ratio(model: DiffusionModel) -> int:
    return model.scheduler.config.num_train_timesteps // model.scheduler.num_inference_steps


@torch.no_grad()
def sample(
    model: DiffusionModel,
    x_t: torch.Tensor,
    num_steps: int = 50,
    edit: Edit | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM (eta=0) from noise ``x_t`` to images in [-1, 1], optionally with an edit.

    Latent models (``model.latent``) return latents: ``model.decode`` turns them into images.
    """
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    x = x_t.to(model.device, model.dtype)
    shift = contextlib.nullcontext()
    if edit is not None:
        if edit.alphas.shape[0] != x.shape[0]:
            raise ValueError(f"edit has {edit.alphas.shape[0]} rows of alphas for a batch of {x.shape[0]}")
        module = get_module(model.unet, edit.location)
        shift = HiddenShift(module, edit.directions.vectors, edit.alphas)
    with shift:
        for t in tqdm(sched.timesteps, desc="DDIM", disable=not progress, leave=False):
            on = edit is not None and int(t) >= edit.t_edit
            if on:
                shift.active = True
            eps = model.predict_eps(x, t)
            if on:
                shift.active = False
            if on and edit.asymmetric:
                eps_plain = model.predict_eps(x, t)
                x = asymmetric_step(model, eps, eps_plain, int(t), x)
            else:
                x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x if model.latent else x.clamp(-1, 1)


def asymmetric_step(model: DiffusionModel, eps_edit, eps_plain, t: int, x: torch.Tensor) -> torch.Tensor:
    """Asyrp's asymmetric reverse process: x0 from the edited eps, the noise direction from the plain eps."""
    a_t, a_prev = _alpha_bar(model, t), _alpha_bar(model, t - _step_ratio(model))
    x0 = (x - (1 - a_t).sqrt() * eps_edit) / a_t.sqrt()
    if model.scheduler.config.clip_sample:
        x0 = x0.clamp(-1, 1)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps_plain


@torch.no_grad()
def invert(model: DiffusionModel, images: torch.Tensor, num_steps: int = 50, progress: bool = False) -> torch.Tensor:
    """DDIM inversion: images in [-1, 1] (latents, ``model.encode(images)``, for latent models) -> x_T that
    ``sample`` maps back to (approximately) the input."""
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    x = images.to(model.device, model.dtype)
    ratio = _step_ratio(model)
    for t in tqdm(list(reversed(sched.timesteps)), desc="invert", disable=not progress, leave=False):
        t = int(t)
        a_cur, a_next = _alpha_bar(model, t - ratio), _alpha_bar(model, t)
        eps = model.predict_eps(x, t)
        x0 = (x - (1 - a_cur).sqrt() * eps) / a_cur.sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def sweep_alphas(num_directions: int, alphas: Sequence[float]) -> torch.Tensor:
    """(k * len(alphas), k) alpha matrix: row r*len(alphas)+c applies alphas[c] to direction r alone."""
    k, a = num_directions, len(alphas)
    out = torch.zeros(k * a, k)
    for r in range(k):
        out[r * a : (r + 1) * a, r] = torch.tensor(list(alphas), dtype=torch.float32)
    return out


def batched(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def edit_images(
    model: DiffusionModel,
    x_t: torch.Tensor,
    directions: Directions,
    alphas: torch.Tensor,
    num_steps: int = 50,
    t_edit: int = DEFAULT_T_EDIT,
    location: str = DEFAULT_LOCATION,
    asymmetric: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Edit many (x_T, alphas) pairs in batches; row i of ``alphas`` (B, k) edits ``x_t[i]``."""
    alphas = torch.as_tensor(alphas, dtype=torch.float32)
    out = []
    chunks = list(batched(len(x_t), batch_size))
    for sl in tqdm(chunks, desc="edit", disable=not progress or len(chunks) == 1):
        edit = Edit(directions, alphas[sl], t_edit=t_edit, location=location, asymmetric=asymmetric)
        out.append(sample(model, x_t[sl], num_steps, edit, progress=progress and len(chunks) == 1))
    return torch.cat(out)
