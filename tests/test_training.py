import json

import torch
from diffusers import UNet2DModel

from eigenedit.training import TrainConfig, export_pipeline, train

from .conftest import TINY_CONFIG

TINY = {**TINY_CONFIG, "sample_size": 32}  # the shapes dataset is 32x32


def config(tmp_path, name, steps):
    return TrainConfig(
        output_dir=str(tmp_path / name),
        max_steps=steps,
        batch_size=4,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=1,
        num_threads=1,
        unet=TINY,
    )


def test_resumed_training_equals_uninterrupted(tmp_path):
    train(config(tmp_path, "straight", 4))
    train(config(tmp_path, "resumed", 2))
    ckpt = train(config(tmp_path, "resumed", 4))
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 4 and len(state["log"]) == 4
    a = UNet2DModel.from_pretrained(tmp_path / "straight" / "checkpoint" / "unet_ema")
    b = UNet2DModel.from_pretrained(ckpt / "unet_ema")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    init = UNet2DModel.from_pretrained(tmp_path / "straight" / "init" / "unet")
    assert any(not torch.equal(pa, pi) for pa, pi in zip(a.parameters(), init.parameters(), strict=True))


def test_export_is_a_loadable_pipeline(tmp_path):
    from eigenedit.models import load_model

    ckpt = train(config(tmp_path, "run", 2))
    export_pipeline(ckpt, tmp_path / "pipe")
    model = load_model(str(tmp_path / "pipe"))
    assert model.sample_shape == (3, 32, 32)
    assert model.scheduler.config.beta_schedule == "squaredcos_cap_v2"
