"""The shipped default model: loads offline by name, samples clean shapes, inverts real data, and its attention
weights have moved far from their initialisation. Thresholds sit below what benchmarks/model_card.py measured."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from eigenedit.core import sampling
from eigenedit.core.attention import list_attention_layers, read_attention_weights
from eigenedit.data import shapes
from eigenedit.evaluation.metrics import psnr
from eigenedit.models import SHIPPED_MODELS
from eigenedit.training import default_unet_config

MIN_VALID_SAMPLE_RATE = 0.85  # measured 0.99 (256 samples, 50 steps)
MIN_INVERSION_PSNR_DB = 28.0  # measured median 32.4 dB (32 held-out images)


def test_shipped_files_are_safetensors_and_configs():
    folder = SHIPPED_MODELS["shapes32"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["beta_schedule"]


def test_layers_of_the_shipped_model(shapes_model):
    layers = {layer.name: layer for layer in list_attention_layers(shapes_model.unet)}
    mid = layers["mid_block.attentions.0"]
    assert (mid.channels, mid.heads, mid.resolution) == (128, 4, (4, 4))


def test_samples_are_clean_shapes(shapes_model):
    x = sampling.noise_from_seeds(shapes_model, range(1000, 1032))
    est = shapes.estimate_factors(sampling.sample(shapes_model, x, 20))
    assert est.valid.float().mean() >= MIN_VALID_SAMPLE_RATE
    assert len(set(est.kind[est.valid].tolist())) == 3  # all three kinds appear


def test_inversion_reconstructs_dataset_images(shapes_model):
    images, _ = shapes.make_batch(8, seed=424242)
    x_t = sampling.invert(shapes_model, images, 50)
    recon = sampling.sample(shapes_model, x_t, 50)
    assert psnr(recon, images).median() >= MIN_INVERSION_PSNR_DB


def test_attention_weights_left_their_initialisation(shapes_model):
    torch.manual_seed(0)  # training.train() builds its initial UNet exactly like this
    init = UNet2DModel(**default_unet_config())
    trained = read_attention_weights(shapes_model.unet)
    start = read_attention_weights(init)
    for name in "qkvo":
        change = (getattr(trained, name) - getattr(start, name)).norm() / getattr(start, name).norm()
        assert change > 0.4, name  # measured 0.52 to 0.73


@pytest.mark.slow
def test_shipped_model_sweep_end_to_end(tmp_path):
    from eigenedit.apps.cli import main

    assert main(["sweep", "-o", str(tmp_path / "sweep.png")]) == 0


def test_shipped_edit_defaults_name_real_modules(shapes_model):
    from eigenedit.core.factorize import DECOMPOSITIONS
    from eigenedit.core.operators import get_module

    defaults = shapes_model.edit_defaults
    assert defaults["layer"] in {layer.name for layer in list_attention_layers(shapes_model.unet)}
    get_module(shapes_model.unet, defaults["location"])
    assert defaults["decomposition"] in DECOMPOSITIONS and 0 in defaults["alphas"]
