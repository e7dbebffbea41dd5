"""Defaults every app shares; a model folder's eigenedit.json overrides them for that model."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eigenedit.core.attention import DEFAULT_LAYER
from eigenedit.core.operators import REGISTRY

if TYPE_CHECKING:
    from eigenedit.core.model import EditableModel

DEFAULT_OPERATOR = "shift"
DEFAULT_LOCATION = "mid_block"  # Asyrp/Haas "h-space"
DEFAULT_T_EDIT = 500

GENERIC_DEFAULTS = {
    "layer": DEFAULT_LAYER,
    "decomposition": "qk",
    "location": DEFAULT_LOCATION,
    "t_edit": DEFAULT_T_EDIT,
    "alphas": list(REGISTRY[DEFAULT_OPERATOR].default_alphas),
    "steps": 50,  # DDIM steps; a model may set its own (the terrain consistency model: 1)
    "operator": DEFAULT_OPERATOR,  # how a direction acts: one of eigenedit.core.operators.REGISTRY
}


def default_alphas(edit_defaults: dict, operator: str) -> list[float]:
    """A model's alphas for ``operator``: its ``operator_alphas[operator]``, else its ``alphas`` if ``operator`` is
    its default operator, else the operator's own (``REGISTRY``)."""
    if operator in edit_defaults.get("operator_alphas", {}):
        return list(edit_defaults["operator_alphas"][operator])
    if operator == edit_defaults.get("operator", DEFAULT_OPERATOR) and "alphas" in edit_defaults:
        return list(edit_defaults["alphas"])
    return list(REGISTRY[operator].default_alphas if operator in REGISTRY else GENERIC_DEFAULTS["alphas"])


@dataclass(frozen=True)
class EditSettings:
    """Every edit setting an app needs, resolved (``resolve``); the fields are the keys of GENERIC_DEFAULTS."""

    layer: str
    decomposition: str
    location: str
    t_edit: int
    alphas: tuple[float, ...]
    steps: int
    operator: str


def resolve(model: EditableModel, **given: object) -> EditSettings:
    """Each setting: the value given (None = not given), else the model's eigenedit.json (``model.edit_defaults``,
    the only attribute read), else GENERIC_DEFAULTS; alphas from ``default_alphas`` of the resolved operator.
    A name that is not a setting is a TypeError."""
    names = [f.name for f in dataclasses.fields(EditSettings)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"resolve() got unknown settings {', '.join(unknown)}; known: {', '.join(names)}")
    model_defaults = model.edit_defaults
    values = {
        name: given[name] if given.get(name) is not None else model_defaults.get(name, GENERIC_DEFAULTS[name])
        for name in names
    }
    if given.get("alphas") is None:
        values["alphas"] = default_alphas(model_defaults, values["operator"])
    return EditSettings(**{**values, "alphas": tuple(values["alphas"])})


def read_edit_defaults(path: str | Path) -> dict:
    """A model folder's eigenedit.json, checked: a JSON object whose known keys have the right types (layer,
    location, decomposition: text; t_edit: whole number >= 0; steps: >= 1; alphas: a list of finite numbers).
    Anything else is a ValueError naming the file and the key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable JSON file: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of edit defaults, not {type(data).__name__}")

    def whole(value: object, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    checks = {
        "layer": (lambda v: isinstance(v, str) and bool(v), "a layer name"),
        "location": (lambda v: isinstance(v, str) and bool(v), "a module name"),
        "decomposition": (lambda v: isinstance(v, str) and bool(v), "a decomposition name"),
        "t_edit": (lambda v: whole(v, 0), "a whole number >= 0"),
        "steps": (lambda v: whole(v, 1), "a whole number >= 1"),
        "alphas": (
            lambda v: (
                isinstance(v, list)
                and bool(v)
                and all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in v)
            ),
            "a non-empty list of finite numbers",
        ),
        "protocol_rows": (
            lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
            "a list of the protocol's rows (JSON objects)",
        ),
    }
    for key, (ok, what) in checks.items():
        if key in data and not ok(data[key]):
            raise ValueError(f"{path}: {key!r} must be {what}, got {data[key]!r}"[:300])
    return data
