"""Sampling and inversion for flow-matching models (SD3, Flux): Euler on the velocity, reverse Euler ODE.

A flow-matching model (``model.flow_matching``; ``eigenedit.core.model.FlowModel``) predicts the velocity
v = noise - x0 of x_sigma = (1 - sigma) x0 + sigma noise, with timesteps t = 1000 sigma; it provides
``set_timesteps(num_steps)`` (the sigmas its pipeline uses, e.g. Flux's resolution-dependent shift) and
``predict_velocity(x, t)`` (with guidance). ``sample`` takes the Euler steps of the model's own
FlowMatchEulerDiscreteScheduler, x <- x + (sigma_next - sigma) v, so it reproduces the diffusers pipeline; an edit
is active at steps with t >= t_edit (t_edit = 500: sigma >= 0.5), as for DDIM. ``invert`` runs the same ODE
backwards from the clean latents (sigma = 0) to noise (sigma = 1): x_{i} = x_{i+1} + (sigma_i - sigma_{i+1})
v(x_{i+1}, t_i), the velocity taken at the target step's timestep and the current point (the flow analogue of DDIM
inversion); its error shrinks with the step size. ``eigenedit.core.sampling.sample`` and ``invert`` dispatch here.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from eigenedit.core.operators import (
    check_batch,
    check_finite,
    get_module,
    make_operator,
    operator_names,
    operator_spec,
    predict_step,
)

if TYPE_CHECKING:
    from eigenedit.core.model import FlowModel


@torch.no_grad()
def sample(
    model: FlowModel, x_t: torch.Tensor, num_steps: int = 28, edit: Any = None, progress: bool = False
) -> torch.Tensor:
    """Euler sampling from noise ``x_t`` (sigma = 1) to latents, optionally with an ``sampling.Edit``."""
    timesteps = model.set_timesteps(num_steps)
    x = x_t.to(model.device, model.dtype)
    op = contextlib.nullcontext()
    if edit is not None:
        if edit.asymmetric:
            raise ValueError("--asymmetric is Asyrp's DDIM process; flow-matching models (SD3, Flux) have no eps step")
        check_batch(edit.alphas, x)
        if not operator_spec(edit.operator).flow:
            raise ValueError(
                f"the {edit.operator} operator is not supported yet on flow-matching models (SD3, Flux); "
                f"use {' or '.join(operator_names(flow=True))}"
            )
        get_module(model.unet, edit.location)
        model.check_edit_location(edit.location)  # the backbone's own refusals (joint blocks)
        op = make_operator(model, edit.operator, edit.directions, edit.alphas, edit.location, edit.cg_steps)
    with op:
        for t in tqdm(timesteps, desc="Euler", disable=not progress, leave=False):
            x, v, _ = predict_step(op, None if edit is None else edit.t_edit, x, t, model.predict_velocity)
            x = model.scheduler.step(v, t, x, return_dict=False)[0]
    check_finite(x, edit.alphas if edit is not None else None)
    return x


@torch.no_grad()
def invert(model: FlowModel, latents: torch.Tensor, num_steps: int = 28, progress: bool = False) -> torch.Tensor:
    """Reverse Euler ODE: clean latents (sigma = 0) -> noise (sigma = 1) that ``sample`` maps back to them."""
    timesteps = model.set_timesteps(num_steps)
    sigmas = model.scheduler.sigmas.to(model.device)
    x = latents.to(model.device, model.dtype)
    for i in tqdm(reversed(range(len(timesteps))), desc="invert", disable=not progress, leave=False):
        v = model.predict_velocity(x, timesteps[i])
        x = (x.float() + (sigmas[i] - sigmas[i + 1]) * v.float()).to(x.dtype)
    return x
