"""SDXL, DiT and PixArt-alpha on tiny random pipelines (``tests/backbones.py``): layers, sampling equal to the
diffusers pipeline, edits, inversion, CLI. The same tests run on SD3 and Flux in ``test_flow_backbones.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DiTPipeline,
    FluxPipeline,
    PixArtAlphaPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
)

from eigenedit.core import operators, sampling  # noqa: E402
from eigenedit.core.directions import compute_directions  # noqa: E402
from eigenedit.models import load_model  # noqa: E402
from eigenedit.models.pipelines import PipelineModel  # noqa: E402
from tests.backbones import MAX_SEQUENCE_LENGTH, save  # noqa: E402

from .conftest import run  # noqa: E402

PROMPT = {"dit": "1"}  # DiT's "prompt" is a class index
GUIDANCE = {"sdxl": 5.0, "dit": 4.0, "pixart": 4.5, "sd3": 7.0, "flux": 3.5}  # each pipeline's default
LAYERS = {
    "sdxl": {
        **{f"down_blocks.1.attentions.0.transformer_blocks.{b}.attn1": (16, (4, 4), "q,k,v,o") for b in (0, 1)},
        **{
            f"up_blocks.0.attentions.{a}.transformer_blocks.{b}.attn1": (16, (4, 4), "q,k,v,o")
            for a in (0, 1)
            for b in (0, 1)
        },
        **{f"mid_block.attentions.0.transformer_blocks.{b}.attn1": (16, (4, 4), "q,k,v,o") for b in (0, 1)},
    },
    "dit": {f"transformer_blocks.{b}.attn1": (16, (4, 4), "q,k,v,o") for b in (0, 1)},
    "pixart": {f"transformer_blocks.{b}.attn1": (24, (4, 4), "q,k,v,o") for b in (0, 1)},
    "sd3": {f"transformer_blocks.{b}.attn": (16, (4, 4), "image q,k,v,o") for b in (0, 1)},
    "flux": {
        **{f"transformer_blocks.{b}.attn": (16, (4, 4), "image q,k,v,o") for b in (0, 1)},
        **{f"single_transformer_blocks.{b}.attn": (16, (4, 4), "joint q,k,v; o=proj_out") for b in (0, 1)},
    },
}


@pytest.fixture(scope="module", params=["sdxl", "dit", "pixart"])
def family_dir(request, tmp_path_factory) -> tuple[str, str]:
    """(family, saved pipeline folder); test_flow_backbones.py defines it for SD3 and Flux."""
    return request.param, str(save(request.param, tmp_path_factory.mktemp(request.param)))


def open_model(family: str, path: str, guidance: float | None = None) -> PipelineModel:
    model = load_model(path)
    model.max_sequence_length = MAX_SEQUENCE_LENGTH
    model.set_prompt(PROMPT.get(family, "a cat"), guidance_scale=GUIDANCE[family] if guidance is None else guidance)
    return model


def test_layers_grids_and_projections(family_dir):
    family, path = family_dir
    model = open_model(family, path)
    assert model.sample_shape == (4, 8, 8) and model.image_shape == (3, 16, 16) and model.latent
    layers = {la.name: (la.channels, la.resolution, la.projections) for la in model.attention_layers()}
    assert layers == LAYERS[family]
    assert model.edit_defaults["layer"] in layers
    if family == "flux":  # single-stream blocks: o is the attention part of the block's proj_out
        block = model.unet.single_transformer_blocks[0]
        w = model.attention_weights("single_transformer_blocks.0.attn")
        assert torch.equal(w.o, block.proj_out.weight[:, :16].double())
        assert torch.equal(w.q, block.attn.to_q.weight.double())  # qk RMSNorm scales are 1 at initialisation
    if family in ("sd3", "flux"):  # joint attention: the image stream's projections, not the text stream's
        attn = model.unet.transformer_blocks[0].attn
        w = model.attention_weights("transformer_blocks.0.attn")
        assert torch.equal(w.v, attn.to_v.weight.double()) and not torch.equal(w.v, attn.add_v_proj.weight.double())
        assert torch.equal(w.o, attn.to_out[0].weight.double())


def pipeline_latents(family: str, path: str, model: PipelineModel, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The diffusers pipeline's own output latents from the same starting noise."""
    common = {"num_inference_steps": steps, "guidance_scale": GUIDANCE[family]}
    size = {"height": 16, "width": 16, "output_type": "latent"}
    with torch.no_grad():
        if family == "sdxl":
            pipe = StableDiffusionXLPipeline.from_pretrained(path)
            return pipe("a cat", latents=x.clone(), **common, **size).images
        if family == "dit":  # DiTPipeline draws its own noise and always decodes: catch what it decodes
            pipe, seen = DiTPipeline.from_pretrained(path), {}
            decode = pipe.vae.decode
            pipe.vae.decode = lambda z, *a, **k: (seen.update(z=z), decode(z, *a, **k))[1]
            pipe(class_labels=[1], generator=torch.Generator().manual_seed(0), output_type="np", **common)
            return seen["z"]  # 1 / scaling_factor * latents
        t5 = {"max_sequence_length": MAX_SEQUENCE_LENGTH}
        if family == "pixart":
            pipe = PixArtAlphaPipeline.from_pretrained(path)
            extra = {"use_resolution_binning": False, "clean_caption": False}
            return pipe("a cat", latents=x.clone(), **common, **size, **t5, **extra).images
        if family == "sd3":
            pipe = StableDiffusion3Pipeline.from_pretrained(path)
            return pipe("a cat", latents=x.clone(), **common, **size, **t5).images
        pipe = FluxPipeline.from_pretrained(path)
        return model.unpack(pipe("a cat", latents=model.pack(x), **common, **size, **t5).images)


def test_sample_equals_the_diffusers_pipeline(family_dir):
    family, path = family_dir
    model = open_model(family, path)
    x = sampling.noise_from_seeds(model, [0])
    ours = sampling.sample(model, x, 4)
    ref = pipeline_latents(family, path, model, x, 4)
    if family == "dit":  # what DiTPipeline decodes, computed its way
        ours = 1 / model.vae.config.scaling_factor * ours
    assert ours.shape == ref.shape
    assert torch.equal(ours, ref), (ours - ref).abs().max()


def test_alpha_zero_is_the_unedited_sample_and_edits_move(family_dir):
    family, path = family_dir
    model = open_model(family, path)
    layer, location = model.edit_defaults["layer"], model.edit_defaults.get("location", "mid_block")
    dirs = compute_directions(model.unet, layer, "ov-left", model_id=path, read=model.attention_weights).top(2)
    x = sampling.noise_from_seeds(model, [0, 1])
    plain = sampling.sample(model, x, 4)
    alphas = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    edited = sampling.edit_images(model, x, sampling.Edit(dirs, alphas, t_edit=0, location=location), 4)
    assert torch.equal(edited[0], plain[0])
    assert (edited[1] - plain[1]).abs().max() > 1e-3
    assert model.decode(edited).shape == (2, 3, 16, 16)
    assert len(operators.get_module(model.unet, location)._forward_hooks) == 0


def test_inversion_round_trip(family_dir):
    """Inversion (DDIM; the reverse Euler ODE for SD3/Flux) without guidance, then sampling, gives back the latents
    of an encoded image. Both are first-order discretisations of one ODE, so the round-trip error is their
    discretisation error: under 8% of the latents' norm at 20 steps, and smaller than at 10 steps (measured here:
    0.5% to 6% at 20 steps, 0.6 to 0.7 times the 10-step error; 50 steps halve it again). The noise found is far
    from the latents."""
    family, path = family_dir
    model = open_model(family, path, guidance=1.0)
    torch.manual_seed(0)
    latents = model.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    errors = []
    for steps in (10, 20):
        x_t = sampling.invert(model, latents, steps)
        recon = sampling.sample(model, x_t, steps)
        errors.append(((recon - latents).norm() / latents.norm()).item())
    moved = ((x_t - latents).norm() / latents.norm()).item()
    assert errors[1] < 0.08 and errors[1] < 0.8 * errors[0] and moved > 0.3, (errors, moved)


def test_cli_layers_and_sweep(family_dir, tmp_path, capsys):
    family, path = family_dir
    assert run("layers", "--model", path) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LAYERS[family]) and "4x4" in out
    sweep = tmp_path / "sweep.png"
    prompt = ["--prompt", PROMPT.get(family, "a cat"), "--guidance", "2", "--steps", "2"]
    assert run("sweep", "--model", path, *prompt, "-k", "2", "--alphas=-1,0,1", "-o", sweep) == 0
    assert Image.open(sweep).height == 18 + 2 * 16
    real = tmp_path / "real.png"
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(real)
    edit = tmp_path / "edit.png"
    assert run("edit", "--model", path, "--steps", "2", "--image", real, "--compare", "-o", edit) == 0
    assert Image.open(edit).size == (3 * 16, 16)


def test_dit_class_prompts(tmp_path_factory):
    model = open_model("dit", str(save("dit", tmp_path_factory.mktemp("dit-errors"))))
    for prompt, message in [("a cat", "unknown DiT class"), ("1000", "out of range")]:
        model.set_prompt(prompt)
        with pytest.raises(ValueError, match=message):
            sampling.sample(model, sampling.noise_from_seeds(model, [0]), 2)


def test_unsupported_pipeline_is_one_clear_error(tmp_path, capsys):
    index = {"_class_name": "PixArtSigmaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert run("layers", "--model", tmp_path) == 2
    err = capsys.readouterr().err
    assert "PixArtSigmaPipeline is not supported" in err and "FluxPipeline" in err and err.count("\n") == 1
