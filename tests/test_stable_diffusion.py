"""Stable Diffusion support on a tiny random-initialised pipeline built offline from configs (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from eigenedit.core import operators, sampling  # noqa: E402
from eigenedit.core.attention import list_attention_layers, read_attention_weights  # noqa: E402
from eigenedit.core.directions import compute_directions  # noqa: E402
from eigenedit.models import load_model  # noqa: E402
from eigenedit.models.stable_diffusion import StableDiffusionModel  # noqa: E402

from .backbones import clip_tokenizer, ddim  # noqa: E402
from .conftest import run  # noqa: E402

MID = "mid_block.attentions.0.transformer_blocks.0.attn1"
UP = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> str:
    """A StableDiffusionPipeline folder: 8x8x4 latents, 16x16 RGB images, 16-dim text."""
    path = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    with torch.no_grad():  # a calmer random UNet, so that DDIM inversion is accurate
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=10.0,  # latents of about unit scale, as SD's are (values beyond [-1, 1])
    )
    tokenizer = clip_tokenizer(path / "tokenizer-source")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    scheduler = ddim()  # SD's settings
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(config).eval(),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path / "pipeline")
    return str(path / "pipeline")


@pytest.fixture
def sd(sd_dir) -> StableDiffusionModel:
    model = load_model(sd_dir)
    model.set_prompt("a cat", guidance_scale=7.5)
    return model


def test_loads_a_pipeline_folder_and_saves_one(sd, tmp_path):
    assert isinstance(sd, StableDiffusionModel) and sd.latent
    assert sd.sample_shape == (4, 8, 8) and sd.image_shape == (3, 16, 16)
    assert sd.edit_defaults["layer"] == MID
    sd.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    again.set_prompt("a cat", guidance_scale=7.5)
    x = sampling.noise_from_seeds(sd, [2])
    assert torch.equal(sampling.sample(again, x, 3), sampling.sample(sd, x, 3))


def test_layers_are_the_self_attention_attn1_with_resolutions(sd):
    layers = {la.name: la for la in list_attention_layers(sd.unet)}
    assert {n: (la.channels, la.resolution) for n, la in layers.items()} == {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1": (8, (8, 8)),
        UP: (8, (8, 8)),
        "up_blocks.1.attentions.1.transformer_blocks.0.attn1": (8, (8, 8)),
        MID: (16, (4, 4)),
    }
    assert (layers[MID].heads, layers[MID].head_dim) == (4, 4)
    block = sd.unet.mid_block.attentions[0].transformer_blocks[0]
    assert torch.equal(read_attention_weights(sd.unet, MID).norm_weight, block.norm1.weight.double())
    with pytest.raises(ValueError, match="unknown self-attention layer"):
        read_attention_weights(sd.unet, MID.replace("attn1", "attn2"))


def test_guidance_equals_the_diffusers_pipeline(sd, sd_dir):
    x = sampling.noise_from_seeds(sd, [0])
    ours = sampling.sample(sd, x, 4)
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe("a cat", num_inference_steps=4, guidance_scale=7.5, latents=x.clone(), output_type="latent").images
    assert ours.abs().max() > 1  # latents are not clamped to [-1, 1]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_prompt_guidance_and_seed(sd):
    x = sampling.noise_from_seeds(sd, [0])
    guided = sampling.sample(sd, x, 4)
    assert torch.equal(guided, sampling.sample(sd, sampling.noise_from_seeds(sd, [0]), 4))
    assert not torch.allclose(guided, sampling.sample(sd, sampling.noise_from_seeds(sd, [1]), 4))
    outputs = [guided]
    for prompt, negative, scale in [("a cat", "", 1.0), ("a dog", "", 7.5), ("a cat", "dog", 7.5)]:
        sd.set_prompt(prompt, negative, scale)
        outputs.append(sampling.sample(sd, x, 4))
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="finite"):
        sd.set_prompt("a cat", guidance_scale=float("nan"))


@pytest.mark.parametrize("layer, location", [(MID, "mid_block"), (UP, UP)])
def test_edits_under_guidance(sd, layer, location):
    """An edit shifts both halves of the guidance batch with the sample's own alphas; alpha 0 changes nothing."""
    dirs = compute_directions(sd.unet, layer, "ov-left", model_id=sd.model_id).top(2)
    assert dirs.dim == read_attention_weights(sd.unet, layer).channels
    x = sampling.noise_from_seeds(sd, [0, 1])
    plain = sampling.sample(sd, x, 4)
    edited = sampling.edit_images(
        sd, x, sampling.Edit(dirs, torch.tensor([[0.0, 0.0], [3.0, 0.0]]), t_edit=0, location=location), 4
    )
    assert edited.shape == (2, 4, 8, 8)
    assert torch.equal(edited[0], plain[0])  # a wrong pairing of alphas and guidance halves would move it
    assert (edited[1] - plain[1]).abs().max() > 1e-3
    assert sd.decode(edited).shape == (2, 3, 16, 16)
    module = operators.get_module(sd.unet, location)
    assert len(module._forward_hooks) == 0


def test_shift_tiles_alphas_over_the_guidance_copies():
    h = torch.randn(4, 6, 3)  # [uncond0, uncond1, cond0, cond1] tokens
    module = torch.nn.Identity()
    with operators.HiddenShift(module, torch.eye(3)[:1], torch.tensor([[0.0], [1.0]])) as shift:
        shift.active = True
        out = module(h)
    assert torch.equal(out[[0, 2]], h[[0, 2]])
    assert torch.allclose((out - h)[[1, 3]].norm(dim=(1, 2)), h[[1, 3]].norm(dim=(1, 2)))


def test_vae_inversion_round_trip(sd):
    sd.set_prompt("a cat", guidance_scale=1.0)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = sd.encode(images)
    assert latents.shape == (2, 4, 8, 8) and latents.abs().max() > 1
    x_t = sampling.invert(sd, latents, 10)
    recon = sampling.sample(sd, x_t, 10)
    assert ((recon - latents).norm() / latents.norm()) < 0.1
    assert sd.decode(recon).shape == images.shape
    hidden = operators.hidden_at(sd, "mid_block", latents, 500)
    assert hidden.shape == (2, 16, 4, 4)


def test_cli_with_a_prompt(sd_dir, tmp_path, capsys):
    assert run("layers", "--model", sd_dir) == 0
    assert MID in capsys.readouterr().out
    out = tmp_path / "sweep.png"
    args = ["--prompt", "a cat", "--guidance", "5", "--steps", "3"]
    assert run("sweep", "--model", sd_dir, *args, "-k", "2", "--alphas=-1,0,1", "-o", out) == 0
    assert Image.open(out).height == 18 + 2 * 16  # decoded 16x16 images, not upscaled
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", sd_dir, "-k", "3", "-o", dfile) == 0
    real = tmp_path / "real.png"
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(real)
    edit = tmp_path / "edit.png"
    assert run("edit", "--model", sd_dir, *args, "--directions", dfile, "--image", real, "--compare", "-o", edit) == 0
    assert Image.open(edit).size == (3 * 16, 16)
    assert run("invert", "--model", sd_dir, *args, "--image", real, "-o", tmp_path / "inv.png") == 0
    assert "reconstruction PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--prompt", "a cat"], ["--guidance", "3"]])
def test_prompt_on_an_unconditional_model_is_one_clear_error(tmp_path, capsys, flag):
    out = tmp_path / "out.png"
    assert run("sweep", "--model", "shapes32", *flag, "--steps", "2", "-o", out) == 2
    err = capsys.readouterr().err
    assert "needs a text-conditioned (Stable Diffusion) model" in err and err.count("\n") == 1
    assert not out.exists()


def test_unsupported_pipelines_are_one_clear_error(tmp_path):
    index = {"_class_name": "StableDiffusionXLInpaintPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    index.update({name: ["transformers", "CLIPTextModel"] for name in ("text_encoder", "text_encoder_2")})
    index["vae"] = ["diffusers", "AutoencoderKL"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="StableDiffusionXLInpaintPipeline is not supported"):
        load_model(str(tmp_path))
