"""``defaults.resolve``: the one place an edit setting is chosen (given, else the model's, else generic)."""

import dataclasses
from types import SimpleNamespace

import pytest

from eigenedit.core import defaults
from eigenedit.core.defaults import GENERIC_DEFAULTS, EditSettings, resolve
from eigenedit.core.operators import REGISTRY

MODEL = SimpleNamespace(
    edit_defaults={
        "layer": "up_blocks.1.attentions.0",
        "t_edit": 300,
        "operator": "xspace",
        "alphas": [-7.0, 7.0],  # the alphas of its operator, xspace
        "operator_alphas": {"scale": [0.5, 1.5]},
    }
)


def test_settings_are_the_generic_keys():
    assert [f.name for f in dataclasses.fields(EditSettings)] == list(GENERIC_DEFAULTS)


def test_given_beats_model_beats_generic():
    s = resolve(MODEL, t_edit=700, location="down_blocks.1")
    assert (s.t_edit, s.location) == (700, "down_blocks.1")  # given
    assert (s.layer, s.operator) == ("up_blocks.1.attentions.0", "xspace")  # the model's
    assert (s.decomposition, s.steps) == (GENERIC_DEFAULTS["decomposition"], GENERIC_DEFAULTS["steps"])  # generic
    assert resolve(MODEL, t_edit=None).t_edit == 300  # None is "not given"
    assert resolve(MODEL, t_edit=0).t_edit == 0  # 0 is given, not "not given"
    plain = resolve(SimpleNamespace(edit_defaults={}))
    assert dataclasses.asdict(plain) == {**GENERIC_DEFAULTS, "alphas": tuple(GENERIC_DEFAULTS["alphas"])}


def test_alphas_follow_the_resolved_operator():
    assert resolve(MODEL).alphas == (-7.0, 7.0)  # the model's operator: its alphas
    assert resolve(MODEL, operator="scale").alphas == (0.5, 1.5)  # its operator_alphas
    assert resolve(MODEL, operator="shift").alphas == tuple(REGISTRY["shift"].default_alphas)  # the operator's own
    assert resolve(MODEL, operator="scale", alphas=[1, 2]).alphas == (1, 2)  # given alphas win
    for name in REGISTRY:
        assert list(resolve(MODEL, operator=name).alphas) == defaults.default_alphas(MODEL.edit_defaults, name)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve(MODEL).steps = 3


def test_an_unknown_name_is_a_type_error():
    with pytest.raises(TypeError, match="t_edits"):
        resolve(MODEL, t_edits=100)
