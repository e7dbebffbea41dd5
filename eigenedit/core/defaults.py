"""Defaults every app shares; a model folder's eigenedit.json overrides them for that model."""

from __future__ import annotations

DEFAULT_LAYER = "mid_block.attentions.0"  # the mid-block attention: the one attention layer of an h-space UNet
DEFAULT_LOCATION = "mid_block"  # Asyrp/Haas "h-space"
DEFAULT_T_EDIT = 500

GENERIC_DEFAULTS = {
    "layer": DEFAULT_LAYER,
    "decomposition": "qk",
    "location": DEFAULT_LOCATION,
    "t_edit": DEFAULT_T_EDIT,
    "alphas": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "steps": 50,  # DDIM steps; a model may set its own (the terrain consistency model: 1)
}
