"""Edit operators: how a direction acts on the model during sampling.

One module per family: ``hidden`` (``shift``, ``scale``: a module's output h), ``spectral`` (the attention layer
the directions came from) and ``xspace`` (x_t, along J^T of a shift); ``registry`` holds what each operator is
(``REGISTRY``: name, default alphas, flow-matching and asymmetric support, builder) and drives it
(``make_operator``, ``predict_step``).
"""

from eigenedit.core.operators.hidden import (
    HiddenShift,
    batch_alphas,
    direction_field,
    get_module,
    hidden_at,
    location_dims,
    scale_hidden,
    shift_hidden,
)
from eigenedit.core.operators.registry import (
    OPERATORS,
    REGISTRY,
    OperatorSpec,
    check_batch,
    check_finite,
    make_operator,
    operator_names,
    operator_spec,
    predict_step,
)
from eigenedit.core.operators.spectral import Modes, Spectral, layer_modes, random_modes
from eigenedit.core.operators.xspace import XSpace, hidden_prefix

__all__ = [
    "OPERATORS",
    "REGISTRY",
    "HiddenShift",
    "Modes",
    "OperatorSpec",
    "Spectral",
    "XSpace",
    "batch_alphas",
    "check_batch",
    "check_finite",
    "direction_field",
    "get_module",
    "hidden_at",
    "hidden_prefix",
    "layer_modes",
    "location_dims",
    "make_operator",
    "operator_names",
    "operator_spec",
    "predict_step",
    "random_modes",
    "scale_hidden",
    "shift_hidden",
]
