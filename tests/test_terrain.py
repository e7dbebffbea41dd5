"""The terrain model (terrain128): DDPM view of the consistency model, and the port checked against onnxruntime."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from eigenedit.apps.cli import main
from eigenedit.core import sampling
from eigenedit.core.attention import list_attention_layers
from eigenedit.models import DiffusionModel, load_model
from eigenedit.models.adm import ADMConfig, ADMUNet
from eigenedit.models.terrain import (
    HEIGHT_RANGE,
    SIGMA_MAX,
    ConsistencyPreconditioning,
    EDMConsistencyUNet,
    karras_sigmas,
    read_onnx_model,
    terrain_scheduler,
    to_heights,
)

EXPECTED_CONFIG = ADMConfig(
    image_size=128,
    in_channels=1,
    model_channels=32,
    out_channels=1,
    num_res_blocks=4,
    attention_resolutions=(4, 8, 16),
    channel_mult=(1, 1, 2, 3, 4),
    label_dim=1,
    num_head_channels=32,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=True,
    attention_conv_dims=2,
)


def tiny_terrain_model() -> DiffusionModel:
    torch.manual_seed(0)
    cfg = ADMConfig(
        image_size=16, in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1,
        attention_resolutions=(2,), channel_mult=(1, 2), label_dim=1, num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True,
    )  # fmt: skip
    unet = EDMConsistencyUNet(ADMUNet(cfg).eval(), ConsistencyPreconditioning())
    return DiffusionModel(unet, terrain_scheduler(unet), "tiny-terrain", "sample")


def test_sigma_grid_and_scheduler() -> None:
    sigmas = karras_sigmas(1000, 0.002, 80.0)
    assert sigmas[0].item() == pytest.approx(0.002) and sigmas[-1].item() == pytest.approx(80.0)
    assert (sigmas.diff() > 0).all()
    model = tiny_terrain_model()
    abar = model.scheduler.alphas_cumprod
    torch.testing.assert_close(((1 - abar.double()) / abar.double()).sqrt()[[0, -1]].float(), sigmas[[0, -1]].float())
    model.scheduler.set_timesteps(1)
    assert model.scheduler.timesteps.tolist() == [999]


def test_one_ddim_step_is_the_consistency_one_step_sample() -> None:
    model = tiny_terrain_model()
    z = sampling.noise_from_seeds(model, [0, 1])
    label = model.unet.difficulty_label(2)
    with torch.no_grad():
        # x_T / sqrt(abar_T) = sqrt(1 + sigma_max^2) z at sigma_max ...
        direct = model.unet.denoise(z * (1 + SIGMA_MAX**2) ** 0.5, torch.full((2,), SIGMA_MAX), label)
        # ... which is the package's D(sigma_max z, sigma_max) up to a (1 + 1/sigma_max^2)^(1/2) noise scale
        package = model.unet.denoise(z * SIGMA_MAX, torch.full((2,), SIGMA_MAX), label)
    one_step = sampling.sample(model, z, 1)
    assert (one_step - direct).abs().max() < 5e-5
    assert (one_step - package).abs().max() < 5e-4
    assert (sampling.sample(model, z, 2) - one_step).abs().max() > 1e-3  # the second step does something


def test_difficulty_conditions_and_is_checked() -> None:
    model = tiny_terrain_model()
    z = sampling.noise_from_seeds(model, [0])
    easy = sampling.sample(model, z, 1)
    model.unet.difficulty = 100
    assert (sampling.sample(model, z, 1) - easy).abs().max() > 1e-4
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="difficulty"):
            model.unet.difficulty = bad


def test_heights_follow_the_package_mapping() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 2, 2)
    heights = to_heights(x, zero_floor=False)
    normalizer = np.arcsinh(HEIGHT_RANGE / 0.1)
    expected = 0.1 * np.sinh((x.numpy()[:, 0] + 1) / 2 * normalizer)
    np.testing.assert_allclose(heights.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert to_heights(x).amin() == 0


def test_missing_package_gives_install_hint(monkeypatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name == "terrain_diffusion" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ValueError, match=r'pip install "eigenedit\[terrain\]"'):
        load_model("terrain128")


def test_missing_onnx_file(capsys) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_onnx_model("/nonexistent/model.onnx")
    assert main(["layers", "--model", "/nonexistent/model.onnx"]) == 2
    assert capsys.readouterr().err.strip() == "eigenedit: error: ONNX model not found: /nonexistent/model.onnx"


# ------------------------------------------------------------------ against the real model (skipped without it)


@pytest.fixture(scope="module")
def terrain_model() -> DiffusionModel:
    pytest.importorskip("onnx", reason="reading the terrain model needs onnx (eigenedit[terrain])")
    if importlib.util.find_spec("terrain_diffusion") is None:
        pytest.skip("adaptive-terrain-diffusion is not installed (eigenedit[terrain])")
    return load_model("terrain128")


@pytest.fixture(scope="module")
def onnx_session(terrain_model):
    ort = pytest.importorskip("onnxruntime", reason="the parity check needs onnxruntime")
    from eigenedit.models.terrain import bundled_onnx_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(bundled_onnx_path()), options, providers=["CPUExecutionProvider"])


def test_inferred_config(terrain_model) -> None:
    assert terrain_model.unet.network.config == EXPECTED_CONFIG
    pre = terrain_model.unet.preconditioning
    assert (pre.sigma_min, pre.sigma_data, pre.noise_scale, pre.clip) == (pytest.approx(0.002), 0.5, 250.0, (-1, 1))


def test_port_matches_onnxruntime(terrain_model, onnx_session) -> None:
    """D on three noise levels and difficulties, and one DDIM step vs the package's one-step sample D(80 z, 80)."""
    g = torch.Generator().manual_seed(0)
    sigmas = torch.tensor([SIGMA_MAX, 2.0, 0.01])
    labels = torch.tensor([0.0, 0.5, 1.0])  # difficulties 1, 50.5, 100
    noisy = torch.rand(3, 1, 128, 128, generator=g) * 2 - 1
    noisy = noisy + sigmas.view(-1, 1, 1, 1) * torch.randn(3, 1, 128, 128, generator=g)
    z = sampling.noise_from_seeds(terrain_model, [0])
    feeds = {
        "noisy": torch.cat([noisy, SIGMA_MAX * z]).numpy(),
        "sigma": np.array([*sigmas.tolist(), SIGMA_MAX], np.float32),
        "difficulty": torch.cat([labels, terrain_model.unet.difficulty_label(1)]).numpy(),
    }
    expected = torch.from_numpy(onnx_session.run(["denoised"], feeds)[0])
    with torch.no_grad():
        actual = terrain_model.unet.denoise(noisy, sigmas, labels)
    assert expected.std() > 0.1  # not a trivial output
    assert (actual - expected[:3]).abs().max() < 1e-4
    assert (sampling.sample(terrain_model, z, 1) - expected[3:]).abs().max() < 5e-4


def test_attention_layers_of_the_terrain_model(terrain_model) -> None:
    layers = list_attention_layers(terrain_model.unet)
    assert len(layers) == 28
    by_name = {la.name: la for la in layers}
    assert by_name["network.input_blocks.11.1"].resolution == (32, 32)
    assert (by_name["network.middle_block.1"].channels, by_name["network.middle_block.1"].heads) == (128, 4)


def test_cli_runs_the_terrain_model(terrain_model, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("eigenedit.apps.cli.load_model", lambda name, *args, **kwargs: terrain_model)  # loaded once
    out = tmp_path / "sweep.png"
    assert main(["sweep", "--model", "terrain128", "-k", "1", "--alphas=-1,1", "-o", str(out)]) == 0
    assert out.is_file()
    assert "directions of network." in capsys.readouterr().out
    try:
        args = ["sweep", "--model", "terrain128", "-k", "1", "--alphas=0", "--difficulty", "90", "-o", str(out)]
        assert main(args) == 0 and terrain_model.unet.difficulty == 90
        assert main([*args[:-4], "--difficulty", "101", "-o", str(tmp_path / "bad.png")]) == 2
        assert not (tmp_path / "bad.png").exists()
    finally:
        terrain_model.unet.difficulty = 50
    monkeypatch.undo()
    assert main(["sweep", "--difficulty", "5", "-o", str(tmp_path / "shapes.png")]) == 2  # shapes: no difficulty
    assert not (tmp_path / "shapes.png").exists()
