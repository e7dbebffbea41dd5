"""SD3 and Flux (flow matching) on tiny random pipelines: the tests of ``test_backbones.py`` (layers, sampling
equal to the diffusers pipeline, edits, reverse-Euler inversion, CLI), and what flow models refuse."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from eigenedit.core import sampling  # noqa: E402
from eigenedit.core.directions import compute_directions  # noqa: E402
from eigenedit.models.pipelines import FlowMatchingModel  # noqa: E402
from tests.backbones import save  # noqa: E402
from tests.test_backbones import (  # noqa: E402, F401  (collected here too, with this module's family_dir)
    open_model,
    test_alpha_zero_is_the_unedited_sample_and_edits_move,
    test_cli_layers_and_sweep,
    test_inversion_round_trip,
    test_layers_grids_and_projections,
    test_sample_equals_the_diffusers_pipeline,
)


@pytest.fixture(scope="module", params=["sd3", "flux"])
def family_dir(request, tmp_path_factory) -> tuple[str, str]:
    return request.param, str(save(request.param, tmp_path_factory.mktemp(request.param)))


def test_flow_models_refuse_asymmetric_and_text_first_locations(tmp_path_factory):
    model = open_model("flux", str(save("flux", tmp_path_factory.mktemp("flux-errors"))))
    assert isinstance(model, FlowMatchingModel)
    dirs = compute_directions(model.unet, "transformer_blocks.0.attn", "qk").top(1)
    x = sampling.noise_from_seeds(model, [0])
    with pytest.raises(ValueError, match="starts with the text stream"):
        sampling.edit_images(model, x, dirs, torch.ones(1, 1), 2, location="transformer_blocks.0")
    at_attention = {"location": "transformer_blocks.0.attn"}
    with pytest.raises(ValueError, match="asymmetric"):
        sampling.edit_images(model, x, dirs, torch.ones(1, 1), 2, asymmetric=True, **at_attention)
    with pytest.raises(ValueError, match="not supported yet on flow-matching"):
        sampling.edit_images(model, x, dirs, torch.ones(1, 1), 2, operator="spectral", **at_attention)
    model.set_prompt("a cat", "a dog")
    with pytest.raises(ValueError, match="no negative prompt"):
        sampling.sample(model, x, 2)
