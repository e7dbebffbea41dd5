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
    dirs = compute_directions(model.unet, "transformer_blocks.0.attn", "qk", read=model.attention_weights).top(1)
    x = sampling.noise_from_seeds(model, [0])
    with pytest.raises(ValueError, match="starts with the text stream"):
        sampling.edit_images(model, x, sampling.Edit(dirs, torch.ones(1, 1), location="transformer_blocks.0"), 2)
    at_attention = {"location": "transformer_blocks.0.attn"}
    with pytest.raises(ValueError, match="asymmetric"):
        sampling.edit_images(model, x, sampling.Edit(dirs, torch.ones(1, 1), asymmetric=True, **at_attention), 2)
    with pytest.raises(ValueError, match="not supported yet on flow-matching"):
        sampling.edit_images(model, x, sampling.Edit(dirs, torch.ones(1, 1), operator="spectral", **at_attention), 2)
    model.set_prompt("a cat", "a dog")
    with pytest.raises(ValueError, match="no negative prompt"):
        sampling.sample(model, x, 2)


def test_the_adapter_reads_what_the_generic_reader_refuses(tmp_path_factory):
    """Flux's quirks live in its adapter: the per-head q/k norm scales fold into W_q and W_k, and a single-stream
    block's W_o is the attention part of its proj_out; core's generic reader refuses both layers."""
    from eigenedit.core.attention import read_attention_weights

    model = open_model("flux", str(save("flux", tmp_path_factory.mktemp("flux-weights"))))
    attn = model.unet.transformer_blocks[0].attn
    with torch.no_grad():
        attn.norm_q.weight.copy_(torch.linspace(0.5, 2.0, attn.norm_q.weight.numel()))
    w = model.attention_weights("transformer_blocks.0.attn")
    scale = attn.norm_q.weight.double().repeat(attn.heads)[:, None]
    assert torch.equal(w.q, attn.to_q.weight.double() * scale) and not torch.equal(w.q, attn.to_q.weight.double())
    assert torch.equal(w.k, attn.to_k.weight.double())  # norm_k's scales are still 1
    with pytest.raises(ValueError, match="learned scales: read it with its model"):
        read_attention_weights(model.unet, "transformer_blocks.0.attn")
    with pytest.raises(ValueError, match="no output projection of its own"):
        read_attention_weights(model.unet, "single_transformer_blocks.0.attn")
    dirs = compute_directions(model.unet, "transformer_blocks.0.attn", "qk", read=model.attention_weights)
    assert dirs.metadata["layer"] == "transformer_blocks.0.attn" and len(dirs) > 0
