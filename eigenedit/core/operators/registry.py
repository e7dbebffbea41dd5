"""The operator registry: every fact about an edit operator in one table (``REGISTRY``), and the loop that drives
one (``make_operator``, ``predict_step``).

An operator is a context manager with ``active`` (set during the denoiser call of an edited step) and
``move(x, t)`` (called before that call); ``OperatorSpec.build`` makes one for a model and an edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from eigenedit.core.operators.hidden import build_scale, build_shift
from eigenedit.core.operators.spectral import build_spectral
from eigenedit.core.operators.xspace import build_xspace

if TYPE_CHECKING:
    from eigenedit.core.directions import Directions
    from eigenedit.core.model import EditableModel


@dataclass(frozen=True)
class OperatorSpec:
    """One operator: its name, the alphas an edit uses where neither the user nor the model give any, whether it
    runs on flow-matching models (SD3, Flux) and under Asyrp's asymmetric process (it must edit the denoiser's
    prediction, not x_t), and ``build(model, directions, alphas, location, cg_steps)``."""

    name: str
    default_alphas: tuple[float, ...]
    flow: bool
    asymmetric: bool
    build: Callable[..., Any]


UNIT = (-1.0, -0.5, 0.0, 0.5, 1.0)
REGISTRY: dict[str, OperatorSpec] = {
    spec.name: spec
    for spec in (  # spectral and xspace are untested on flow models, so refused there
        OperatorSpec("shift", UNIT, flow=True, asymmetric=True, build=build_shift),
        OperatorSpec("scale", UNIT, flow=True, asymmetric=True, build=build_scale),
        OperatorSpec("spectral", UNIT, flow=False, asymmetric=True, build=build_spectral),
        OperatorSpec("xspace", (-0.02, -0.01, 0.0, 0.01, 0.02), flow=False, asymmetric=False, build=build_xspace),
    )
}
OPERATORS = tuple(REGISTRY)  # the names, in the order the apps list them


def operator_spec(name: str) -> OperatorSpec:
    """The registry entry of ``name``; a ValueError naming the choices for anything else."""
    if name not in REGISTRY:
        raise ValueError(f"unknown operator {name!r}; choose one of {', '.join(OPERATORS)}")
    return REGISTRY[name]


def operator_names(**facts: bool) -> tuple[str, ...]:
    """The operators with the given facts, e.g. ``operator_names(flow=True)``."""
    return tuple(s.name for s in REGISTRY.values() if all(getattr(s, k) == v for k, v in facts.items()))


def check_batch(alphas: torch.Tensor, x: torch.Tensor) -> None:
    """An edit needs one row of alphas per sample of the batch it edits."""
    if alphas.shape[0] != x.shape[0]:
        raise ValueError(f"edit has {alphas.shape[0]} rows of alphas for a batch of {x.shape[0]}")


def check_finite(x: torch.Tensor, alphas: torch.Tensor | None) -> None:
    """Refuse a sample holding NaN or inf (it would be written as a black image); ``alphas``: the edit's, if any."""
    if torch.isfinite(x).all():
        return
    if alphas is None:
        raise ValueError("sampling produced non-finite values (NaN or inf): the model's output is broken")
    raise ValueError(
        f"sampling produced non-finite values (NaN or inf) (largest |alpha| {alphas.abs().max().item():g}): the edit "
        "is far too strong for this model; use a smaller alpha"
    )


def make_operator(
    model: EditableModel, operator: str, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
):
    """The operator object ``sampling.sample`` drives (see the module docstring)."""
    return operator_spec(operator).build(model, directions, alphas, location, cg_steps)


def predict_step(op, t_edit: float | None, x: torch.Tensor, t, predict) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One denoiser call of a sampling loop: at steps t >= t_edit (``t_edit`` None: no edit) the operator moves x
    (``move``) and is active for that call only. Returns (x, prediction, whether the step was edited)."""
    if t_edit is None or float(t) < t_edit:
        return x, predict(x, t), False
    x = op.move(x, int(t))
    op.active = True
    try:
        return x, predict(x, t), True
    finally:
        op.active = False
