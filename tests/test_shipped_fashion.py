"""The shipped Fashion-MNIST model and its probe classifier. Thresholds sit below what benchmarks/fashion.py
measured (numbers.json beside the model)."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from eigenedit.core import operators, sampling
from eigenedit.core.attention import list_attention_layers, read_attention_weights
from eigenedit.core.factorize import factorize
from eigenedit.data import fashion
from eigenedit.evaluation.metrics import psnr, ssim
from eigenedit.models import SHIPPED_MODELS, load_model
from eigenedit.training import default_unet_config

FOLDER = SHIPPED_MODELS["fashion32"]
needs_data = pytest.mark.skipif(
    not fashion.available(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
MIN_CLASSIFIER_ACCURACY = 0.86  # measured: see numbers.json "classifier_test_accuracy"
MIN_SAMPLE_CONFIDENCE = 0.70  # measured 0.839 (500 samples, 50 steps)
MIN_INVERSION_PSNR_DB = 25.0  # measured median 28.99 dB (32 real test photos)
MIN_INVERSION_SSIM = 0.80  # measured median 0.883


@pytest.fixture(scope="module")
def model():
    return load_model("fashion32")


@pytest.fixture(scope="module")
def classifier():
    return fashion.FashionClassifier.from_pretrained(FOLDER / "classifier")


def test_shipped_files_are_safetensors_and_configs():
    assert (FOLDER / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (FOLDER / "classifier" / "model.safetensors").is_file()
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.pt"))


@needs_data
def test_probe_classifier_accuracy(classifier):
    images, labels = fashion.load("test")
    assert fashion.accuracy(classifier, images, labels) >= MIN_CLASSIFIER_ACCURACY


def test_samples_look_like_clothes_of_many_classes(model, classifier):
    x = sampling.noise_from_seeds(model, range(2000, 2032))
    probs = classifier(sampling.sample(model, x, 20)).softmax(1)
    assert probs.max(1).values.mean() >= MIN_SAMPLE_CONFIDENCE
    assert len(set(probs.argmax(1).tolist())) >= 6


@needs_data
def test_inversion_reconstructs_real_photos(model):
    images = fashion.load("test")[0][:8]
    recon = sampling.sample(model, sampling.invert(model, images, 50), 50)
    assert psnr(recon, images).median() >= MIN_INVERSION_PSNR_DB
    assert ssim(recon, images).median() >= MIN_INVERSION_SSIM


def test_attention_spectra_are_structured(model):
    torch.manual_seed(0)  # training.train() builds its initial UNet exactly like this
    init = UNet2DModel(**default_unet_config(channels=1))
    for layer in ("mid_block.attentions.0", "up_blocks.0.attentions.1"):
        ranks = []
        for unet in (model.unet, init):
            values = factorize(read_attention_weights(unet, layer), "qk")[0].abs()
            energy = values**2 / (values**2).sum()
            ranks.append(float(torch.exp(-(energy * energy.clamp_min(1e-12).log()).sum())))
        assert ranks[0] < 0.6 * ranks[1], (layer, ranks)


def test_edit_defaults_name_real_modules(model):
    defaults = json.loads((FOLDER / "eigenedit.json").read_text())
    assert defaults == model.edit_defaults
    assert defaults["layer"] in {layer.name for layer in list_attention_layers(model.unet)}
    operators.get_module(model.unet, defaults["location"])
