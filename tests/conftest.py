"""Shared fixtures: a tiny random-init UNet (fast), its saved folder, the shipped shapes model, and ``run`` (the
command line's exit code)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from eigenedit.models import DiffusionModel, load_model

TINY_CONFIG = dict(
    sample_size=16,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=4,
)


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**TINY_CONFIG).eval()


@pytest.fixture
def tiny_model() -> DiffusionModel:
    return DiffusionModel(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), "tiny")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    """The tiny model saved as a diffusers folder (command-line tests load it by path; none writes into it)."""
    path = tmp_path_factory.mktemp("model")
    DiffusionModel(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), "tiny").save_pretrained(path)
    return str(path)


def run(*args) -> int:
    """Exit code of ``eigenedit ARGS`` (argparse errors exit through SystemExit)."""
    from eigenedit.apps.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="session")
def shapes_model() -> DiffusionModel:
    return load_model("shapes32")
