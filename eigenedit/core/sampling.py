"""DDIM sampling and inversion, with an edit (``Edit``: directions, strengths, operator) active at every step
with timestep t >= t_edit (see ``eigenedit.core.operators`` for how a direction acts)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from eigenedit.core import flow
from eigenedit.core.defaults import DEFAULT_LOCATION, DEFAULT_OPERATOR, DEFAULT_T_EDIT
from eigenedit.core.directions import Directions
from eigenedit.core.operators import (
    check_batch,
    check_finite,
    make_operator,
    operator_names,
    operator_spec,
    predict_step,
)

if TYPE_CHECKING:
    from eigenedit.core.model import EditableModel


@dataclass
class Edit:
    """What to apply: ``alphas`` (B, k) weights per sample for the k ``directions``, by ``operator`` (shift,
    scale, xspace: at module ``location``; spectral: in the directions' own attention layer)."""

    directions: Directions
    alphas: torch.Tensor
    t_edit: int = DEFAULT_T_EDIT
    location: str = DEFAULT_LOCATION
    asymmetric: bool = False
    operator: str = DEFAULT_OPERATOR
    cg_steps: int = 0  # xspace only: conjugate-gradient refinement steps

    def __post_init__(self) -> None:
        if self.asymmetric and not operator_spec(self.operator).asymmetric:  # an unknown name: a ValueError here
            edits_unet = ", ".join(operator_names(asymmetric=True))
            raise ValueError(f"--asymmetric needs an operator that edits the UNet ({edits_unet}), not {self.operator}")
        operator_spec(self.operator)  # also without --asymmetric
        self.alphas = torch.as_tensor(self.alphas, dtype=torch.float32)
        if self.alphas.ndim == 1:
            self.alphas = self.alphas[:, None]
        if self.alphas.ndim != 2 or self.alphas.shape[1] != len(self.directions):
            raise ValueError(f"alphas must be (batch, {len(self.directions)}); got {tuple(self.alphas.shape)}")
        if not torch.isfinite(self.alphas).all():
            raise ValueError("alpha must be a finite number (got NaN or inf)")


def noise_from_seeds(model: EditableModel, seeds: Sequence[int]) -> torch.Tensor:
    """x_T for each seed, independent of how seeds are batched."""
    shape = model.sample_shape
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _alpha_bar(model: EditableModel, t: int) -> torch.Tensor:
    sched = model.scheduler
    return sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod


def _step_ratio(model: EditableModel) -> int:
    return model.scheduler.config.num_train_timesteps // model.scheduler.num_inference_steps


@torch.no_grad()
def sample(
    model: EditableModel,
    x_t: torch.Tensor,
    num_steps: int = 50,
    edit: Edit | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM (eta=0) from noise ``x_t`` to images in [-1, 1], optionally with an edit.

    Latent models (``model.latent``) return latents: ``model.decode`` turns them into images. Flow-matching
    models (SD3, Flux) take Euler steps on their velocity instead (``eigenedit.core.flow``).
    """
    if model.flow_matching:
        return flow.sample(model, x_t, num_steps, edit, progress)
    sched = model.scheduler
    sched.set_timesteps(num_steps)
    x = x_t.to(model.device, model.dtype)
    op = contextlib.nullcontext()
    if edit is not None:
        check_batch(edit.alphas, x)
        op = make_operator(model, edit.operator, edit.directions, edit.alphas, edit.location, edit.cg_steps)
    with op:
        for t in tqdm(sched.timesteps, desc="DDIM", disable=not progress, leave=False):
            x, eps, on = predict_step(op, None if edit is None else edit.t_edit, x, t, model.predict_eps)
            if on and edit.asymmetric:
                eps_plain = model.predict_eps(x, t)
                x = asymmetric_step(model, eps, eps_plain, int(t), x)
            else:
                x = sched.step(eps, t, x, eta=0.0).prev_sample
    check_finite(x, edit.alphas if edit is not None else None)
    return x if model.latent else x.clamp(-1, 1)


def asymmetric_step(model: EditableModel, eps_edit, eps_plain, t: int, x: torch.Tensor) -> torch.Tensor:
    """Asyrp's asymmetric reverse process: x0 from the edited eps, the noise direction from the plain eps."""
    a_t, a_prev = _alpha_bar(model, t), _alpha_bar(model, t - _step_ratio(model))
    x0 = (x - (1 - a_t).sqrt() * eps_edit) / a_t.sqrt()
    if model.scheduler.config.clip_sample:
        x0 = x0.clamp(-1, 1)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps_plain


@torch.no_grad()
def invert(model: EditableModel, images: torch.Tensor, num_steps: int = 50, progress: bool = False) -> torch.Tensor:
    """DDIM inversion: images in [-1, 1] (latents, ``model.encode(images)``, for latent models) -> x_T that
    ``sample`` maps back to (approximately) the input. Flow-matching models: the reverse Euler ODE."""
    if model.flow_matching:
        return flow.invert(model, images, num_steps, progress)
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
    model: EditableModel,
    x_t: torch.Tensor,
    edit: Edit,
    num_steps: int = 50,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Edit many (x_T, alphas) pairs in batches; row i of ``edit.alphas`` (B, k) edits ``x_t[i]``."""
    check_batch(edit.alphas, x_t)  # before any batch is sampled
    out = []
    chunks = list(batched(len(x_t), batch_size))
    for sl in tqdm(chunks, desc="edit", disable=not progress or len(chunks) == 1):
        part = dataclasses.replace(edit, alphas=edit.alphas[sl])
        out.append(sample(model, x_t[sl], num_steps, part, progress=progress and len(chunks) == 1))
    return torch.cat(out)
