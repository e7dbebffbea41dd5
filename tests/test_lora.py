"""LoRA export (``core.lora``, ``eigenedit export-lora``) and LoRA application (``--lora``) on tiny random models.

Exactness: a file loaded by diffusers' own ``load_lora_weights`` at adapter weight w gives the latents of
eigenedit's spectral edit at alpha = w, active at every step, within ``ATOL`` (float32 sampling in two different
attention orders; measured: at most 1.5e-6 on latents of size ~1, while the edits move them by 1e-2 or more).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

pytest.importorskip("peft")
pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    FluxPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DModel,
)

from eigenedit.core import lora, sampling  # noqa: E402
from eigenedit.core.cache import weights_digest  # noqa: E402
from eigenedit.core.directions import compute_directions  # noqa: E402
from eigenedit.models import DiffusionModel, load_model  # noqa: E402
from tests.backbones import MAX_SEQUENCE_LENGTH, save  # noqa: E402
from tests.test_backbones import GUIDANCE, open_model  # noqa: E402

from .conftest import TINY_CONFIG, run  # noqa: E402
from .test_stable_diffusion import MID, UP, sd_dir  # noqa: E402, F401  (the tiny SD pipeline fixture)

ATOL = 1e-5  # latents, float32: the LoRA (diffusers' attention) against the spectral processor
WEIGHTS = (-1.0, 0.5, 2.0)
STEPS = 3
TINY_LAYER = "mid_block.attentions.0"


@pytest.fixture
def sd(sd_dir):  # noqa: F811
    model = load_model(sd_dir)
    model.set_prompt("a cat", guidance_scale=7.5)
    return model


def diffusers_pipe(cls, path: str):
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_latents(pipe, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pipe(
            "a cat", num_inference_steps=STEPS, guidance_scale=7.5, latents=x.clone(), output_type="latent"
        ).images


def spectral(model, dirs, x: torch.Tensor, w: float, index: int = 0) -> torch.Tensor:
    """eigenedit's spectral edit of direction ``index`` at alpha = w, active at every step (t_edit 0)."""
    alphas = torch.zeros(1, len(dirs))
    alphas[0, index] = w
    return sampling.edit_images(model, x, sampling.Edit(dirs, alphas, t_edit=0, operator="spectral"), STEPS)


@pytest.mark.parametrize(("layer", "decomposition", "head"), [(MID, "qkv", None), (UP, "ov-left", 0)])
def test_sd_lora_loaded_by_diffusers_equals_the_spectral_edit(sd, sd_dir, tmp_path, layer, decomposition, head):  # noqa: F811
    dirs = compute_directions(sd.unet, layer, decomposition, head=head, model_id=sd_dir).top(1)
    path = tmp_path / "slider.safetensors"
    (slider,) = lora.to_lora(sd.unet, dirs, path, model_id=sd_dir)
    assert slider.exact and set(slider.deltas) <= {f"{layer}.{p}" for p in ("to_q", "to_k", "to_v")}
    pipe = diffusers_pipe(StableDiffusionPipeline, sd_dir)
    pipe.load_lora_weights(str(path), adapter_name="slider")
    x = sampling.noise_from_seeds(sd, [0])
    plain = sampling.sample(sd, x, STEPS)
    for w in WEIGHTS:
        pipe.set_adapters(["slider"], adapter_weights=[w])
        ours = spectral(sd, dirs, x, w)
        theirs = sd_latents(pipe, x)
        assert torch.allclose(theirs, ours, atol=ATOL), (w, (theirs - ours).abs().max())
        assert (ours - plain).abs().max() > 100 * ATOL  # the edit itself is far larger than the tolerance


def test_kohya_file_through_diffusers_converter_gives_the_same(sd, sd_dir, tmp_path):  # noqa: F811
    dirs = compute_directions(sd.unet, MID, "qkv").top(1)
    path = tmp_path / "kohya.safetensors"
    lora.to_lora(sd.unet, dirs, path, fmt="kohya")
    keys = set(load_file(path))
    base = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{base}.lora_down.weight", f"{base}.lora_up.weight", f"{base}.alpha"} <= keys
    pipe = diffusers_pipe(StableDiffusionPipeline, sd_dir)
    pipe.load_lora_weights(str(path), adapter_name="kohya")  # lora_state_dict -> _convert_non_diffusers_lora...
    x = sampling.noise_from_seeds(sd, [1])
    for w in WEIGHTS:
        pipe.set_adapters(["kohya"], adapter_weights=[w])
        theirs = sd_latents(pipe, x)
        assert torch.allclose(theirs, spectral(sd, dirs, x, w), atol=ATOL)
    with lora.merged(sd.unet, [(modules, 0.5) for modules in lora.read_lora(path, sd.unet).adapters.values()]):
        ours = sampling.sample(sd, x, STEPS)  # eigenedit's own reading of the kohya file
    assert torch.allclose(ours, spectral(sd, dirs, x, 0.5), atol=ATOL)


def test_weight_zero_is_the_unedited_sample_exactly(sd, sd_dir, tmp_path):  # noqa: F811
    dirs = compute_directions(sd.unet, MID, "qkv").top(1)
    path = tmp_path / "slider.safetensors"
    lora.to_lora(sd.unet, dirs, path)
    pipe = diffusers_pipe(StableDiffusionPipeline, sd_dir)
    x = sampling.noise_from_seeds(sd, [0])
    before = sd_latents(pipe, x)
    pipe.load_lora_weights(str(path), adapter_name="slider")
    pipe.set_adapters(["slider"], adapter_weights=[0.0])
    assert torch.equal(sd_latents(pipe, x), before)
    plain = sampling.sample(sd, x, STEPS)
    with lora.merged(sd.unet, [(m, 0.0) for m in lora.read_lora(path, sd.unet).adapters.values()]):
        assert torch.equal(sampling.sample(sd, x, STEPS), plain)
    assert torch.equal(sampling.sample(sd, x, STEPS), plain)  # the weights are restored


def test_a_pack_of_four_directions_loads_as_four_adapters(sd, sd_dir, tmp_path):  # noqa: F811
    dirs = compute_directions(sd.unet, MID, "qkv").top(4)
    path = tmp_path / "pack.safetensors"
    sliders = lora.to_lora(sd.unet, dirs, path, pack=True)
    pipe = diffusers_pipe(StableDiffusionPipeline, sd_dir)
    names = lora.load_sliders(pipe, path)
    assert names == [s.name for s in sliders] and len(set(names)) == 4
    assert set(pipe.get_list_adapters()["unet"]) == set(names)
    x = sampling.noise_from_seeds(sd, [0])
    pipe.set_adapters([names[2]], adapter_weights=[-1.0])  # one slider of the pack, alone
    assert torch.allclose(sd_latents(pipe, x), spectral(sd, dirs, x, -1.0, index=2), atol=ATOL)
    read = lora.read_lora(path, sd.unet)
    assert list(read.adapters) == names and read.metadata["pack"]


def test_sdxl_lora_equals_the_spectral_edit(tmp_path_factory):
    path = str(save("sdxl", tmp_path_factory.mktemp("sdxl")))
    model = open_model("sdxl", path)
    layer = model.edit_defaults["layer"]
    dirs = compute_directions(model.unet, layer, "qkv").top(1)
    file = tmp_path_factory.mktemp("sdxl-lora") / "slider.safetensors"
    lora.to_lora(model.unet, dirs, file)
    pipe = diffusers_pipe(StableDiffusionXLPipeline, path)
    pipe.load_lora_weights(str(file), adapter_name="slider")
    x = sampling.noise_from_seeds(model, [0])
    common = {"num_inference_steps": STEPS, "guidance_scale": GUIDANCE["sdxl"], "height": 16, "width": 16}
    plain = sampling.sample(model, x, STEPS)
    for w in WEIGHTS:
        pipe.set_adapters(["slider"], adapter_weights=[w])
        with torch.no_grad():
            theirs = pipe("a cat", latents=x.clone(), output_type="latent", **common).images
        ours = spectral(model, dirs, x, w)
        assert torch.allclose(theirs, ours, atol=ATOL), (w, (theirs - ours).abs().max())
        assert (ours - plain).abs().max() > 100 * ATOL


def test_flux_lora_is_the_weight_edit(tmp_path_factory):
    """Flux: spectral does not run on flow-matching models yet, so the reference is the weight edit itself,
    W (I + w u u^T) on to_q, to_k and to_v (their raw weights: the qk RMSNorm scales stay outside)."""
    path = str(save("flux", tmp_path_factory.mktemp("flux")))
    model = open_model("flux", path)
    layer = "single_transformer_blocks.0.attn"
    dirs = compute_directions(model.unet, layer, "qkv", read=model.attention_weights).top(1)
    file = tmp_path_factory.mktemp("flux-lora") / "slider.safetensors"
    lora.to_lora(model.unet, dirs, file, read=model.attention_weights)
    assert all(k.startswith(f"transformer.{layer}.to_") for k in load_file(file))
    pipe, ref = diffusers_pipe(FluxPipeline, path), diffusers_pipe(FluxPipeline, path)
    pipe.load_lora_weights(str(file), adapter_name="slider")
    u = dirs.vectors[0].double()
    projections = [getattr(ref.transformer.get_submodule(layer), p) for p in ("to_q", "to_k", "to_v")]
    originals = [p.weight.detach().clone() for p in projections]
    common = {"num_inference_steps": 2, "guidance_scale": GUIDANCE["flux"], "height": 16, "width": 16}
    common["max_sequence_length"] = MAX_SEQUENCE_LENGTH
    latents = model.pack(sampling.noise_from_seeds(model, [0]))
    for w in WEIGHTS:
        pipe.set_adapters(["slider"], adapter_weights=[w])
        with torch.no_grad():
            for proj, weight in zip(projections, originals, strict=True):
                edit = weight.double() + w * torch.outer(weight.double() @ u, u)
                proj.weight.copy_(edit.float())
            theirs = pipe("a cat", latents=latents.clone(), output_type="latent", **common).images
            expected = ref("a cat", latents=latents.clone(), output_type="latent", **common).images
        assert torch.allclose(theirs, expected, atol=ATOL), (w, (theirs - expected).abs().max())


def tiny(attention_head_dim: int = 8) -> DiffusionModel:
    torch.manual_seed(0)
    unet = UNet2DModel(**dict(TINY_CONFIG, attention_head_dim=attention_head_dim)).eval()
    return DiffusionModel(unet, DDIMScheduler(num_train_timesteps=1000), "tiny")


def applied(model, path, w: float) -> torch.Tensor:
    """eigenedit's own path (UNet2DModel has no LoRA loader in diffusers): the file merged at weight w."""
    file = lora.read_lora(path, model.unet)
    with lora.merged(model.unet, [(m, w) for m in file.adapters.values()]):
        return sampling.sample(model, sampling.noise_from_seeds(model, [0]), STEPS)


@pytest.mark.parametrize(("decomposition", "head"), [("qkv", None), ("ov-right", 0)])
def test_unet2d_lora_applied_by_eigenedit_equals_the_spectral_edit(tmp_path, decomposition, head):
    model = tiny()
    dirs = compute_directions(model.unet, TINY_LAYER, decomposition, head=head).top(1)
    path = tmp_path / "slider.safetensors"
    lora.to_lora(model.unet, dirs, path)
    x = sampling.noise_from_seeds(model, [0])
    for w in WEIGHTS:
        ours = spectral(model, dirs, x, w)
        assert torch.allclose(applied(model, path, w), ours, atol=ATOL)
        assert (ours - sampling.sample(model, x, STEPS)).abs().max() > 100 * ATOL


def test_qk_is_exact_on_a_single_head_layer_without_query_bias(tmp_path):
    """qk lands on to_k through W_q: exact where one head spans the channels and to_q adds no bias."""
    model = tiny(attention_head_dim=16)  # the mid-block's 16 channels in one head
    dirs = compute_directions(model.unet, TINY_LAYER, "qk").top(1)
    (biased,) = lora.weight_edits(model.unet, dirs)
    assert not biased.exact  # the query bias adds a per-key logit term no change of to_k removes
    with torch.no_grad():
        model.unet.get_submodule(TINY_LAYER).to_q.bias.zero_()
    path = tmp_path / "qk.safetensors"
    (slider,) = lora.to_lora(model.unet, dirs, path)
    assert slider.error < 1e-9
    x = sampling.noise_from_seeds(model, [0])
    for w in WEIGHTS:
        assert torch.allclose(applied(model, path, w), spectral(model, dirs, x, w), atol=ATOL)


def test_inexact_edits_are_refused_or_exported_with_their_measured_error(sd, tmp_path):
    dirs = compute_directions(sd.unet, MID, "ov-left").top(1)  # merged heads: no single to_v change carries it
    path = tmp_path / "approx.safetensors"
    with pytest.raises(ValueError, match=r"relative error \d+\.\d%.*--approximate"):
        lora.to_lora(sd.unet, dirs, path)
    assert not path.exists()
    (slider,) = lora.to_lora(sd.unet, dirs, path, approximate=True)
    (described,) = json.loads(load_file_metadata(path)[lora.METADATA_KEY])["sliders"]
    assert not described["exact"] and described["relative_error"] == slider.error
    # the error, recomputed from the file: each head's realised W_o^h dV^h against its share s_h l r^T
    weights = sd.attention_weights(MID)
    tensors = load_file(path)
    up = tensors[f"unet.{MID}.to_v.lora_B.weight"].double()[:, 0]
    left = dirs.vectors[0].double()
    right = left @ weights.o @ weights.v
    right = right / right.norm()
    residual = intended = 0.0
    for h in range(weights.heads):
        part = weights.head(h)
        s_h = left @ part.o @ part.v @ right
        residual += (part.o @ up[h * part.head_dim : (h + 1) * part.head_dim] - s_h * left).pow(2).sum()
        intended += s_h**2
    assert abs((residual / intended).sqrt().item() - slider.error) < 1e-4  # float32 file against float64


def load_file_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_metadata_names_model_layer_hash_decomposition_direction_and_strength(sd, sd_dir, tmp_path):  # noqa: F811
    dirs = compute_directions(sd.unet, MID, "qkv", model_id=sd_dir).select([1, 3])
    path = tmp_path / "two.safetensors"
    lora.to_lora(sd.unet, dirs, path, model_id=sd_dir, dtype=torch.float16)
    meta = json.loads(load_file_metadata(path)[lora.METADATA_KEY])
    assert meta["model"] == sd_dir and meta["unit_strength"] == lora.UNIT_STRENGTH and meta["dtype"] == "float16"
    assert [s["direction"] for s in meta["sliders"]] == [1, 3]
    for s in meta["sliders"]:
        assert s["layer"] == MID and s["decomposition"] == "qkv" and s["head"] is None and s["exact"]
        assert s["layer_sha256"] == weights_digest(sd.attention_weights(MID, torch.float32, False))
    tensors = load_file(path)
    assert tensors[f"unet.{MID}.to_v.lora_A.weight"].shape == (2, 16)  # one adapter of rank 2
    assert all(t.dtype == torch.float16 for t in tensors.values())


@pytest.mark.parametrize(
    ("operator", "t_edit", "message"),
    [
        ("shift", None, "shift cannot be exported as a LoRA: shift adds alpha"),
        ("scale", None, "scale cannot be exported"),
        ("xspace", None, "xspace cannot be exported"),
        (None, 500, "--t-edit 500 edits only steps t >= 500"),
    ],
)
def test_what_no_static_weight_change_expresses_is_refused(tmp_path, capsys, operator, t_edit, message):
    out = tmp_path / "x.safetensors"
    flags = (["--operator", operator] if operator else []) + (["--t-edit", str(t_edit)] if t_edit else [])
    assert run("export-lora", "--model", "shapes32", "--decomposition", "qkv", *flags, "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def foreign_files(folder, sd_unet) -> dict:
    """Files --lora must refuse with one line: corrupt, not a LoRA, for other modules or shapes, non-finite."""
    files = {}
    files["corrupt"] = folder / "corrupt.safetensors"
    files["corrupt"].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json" + bytes(range(64)))
    files["not a LoRA"] = folder / "weights.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, 2)}, files["not a LoRA"])
    files["text encoder"] = folder / "te.safetensors"
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    save_file(
        {f"{te}.lora_down.weight": torch.zeros(1, 4), f"{te}.lora_up.weight": torch.zeros(4, 1)}, files["text encoder"]
    )
    files["other model"] = folder / "sd.safetensors"  # an SD LoRA: modules shapes32 does not have
    lora.to_lora(sd_unet, compute_directions(sd_unet, MID, "qkv").top(1), files["other model"])
    files["other shapes"] = folder / "tiny.safetensors"  # same module names, 16 channels instead of 128
    tiny_model = tiny()
    lora.to_lora(tiny_model.unet, compute_directions(tiny_model.unet, TINY_LAYER, "qkv").top(1), files["other shapes"])
    files["non-finite"] = folder / "nan.safetensors"
    key = "unet.mid_block.attentions.0.to_q"
    save_file(
        {f"{key}.lora_A.weight": torch.full((1, 128), float("nan")), f"{key}.lora_B.weight": torch.ones(128, 1)},
        files["non-finite"],
    )
    files["missing"] = folder / "missing.safetensors"
    return files


def test_corrupt_and_foreign_lora_files_are_one_error_line(sd, tmp_path, capsys):
    messages = {
        "corrupt": "is not a LoRA file: it cannot be read as safetensors",
        "not a LoRA": "which is no LoRA weight",
        "text encoder": "also changes the text encoder",
        "other model": "which this UNet2DModel does not have",
        "other shapes": "as a 16 -> 16 map, but it is 128 -> 128 here",
        "non-finite": "non-finite LoRA weights",
        "missing": "LoRA file not found",
    }
    for kind, path in foreign_files(tmp_path, sd.unet).items():
        for command in ("edit", "sweep"):
            out = tmp_path / f"{command}.png"
            assert run(command, "--model", "shapes32", "--lora", f"{path}:1", "--steps", "2", "-o", out) == 2, kind
            err = capsys.readouterr().err
            assert messages[kind] in err and err.count("\n") == 1, (kind, err)
            assert not out.exists()


def test_a_foreign_peft_lora_with_its_own_alpha_applies_as_diffusers_applies_it(sd, sd_dir, tmp_path):  # noqa: F811
    """Any PEFT LoRA of attention layers goes through the same path: lora_alpha / r from diffusers' own
    metadata, and the same adapter converted to kohya keys with alpha = 4 (scale 4 / rank)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = diffusers_pipe(StableDiffusionPipeline, sd_dir)
    config = LoraConfig(r=2, lora_alpha=3, target_modules=["to_q", "to_v"], init_lora_weights=False)
    torch.manual_seed(3)
    pipe.unet.add_adapter(config)
    state = get_peft_model_state_dict(pipe.unet)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=state, unet_lora_adapter_metadata=config.to_dict(), weight_name="peft.safetensors"
    )
    x = sampling.noise_from_seeds(sd, [0])
    reference = sd_latents(pipe, x)  # the adapter as PEFT runs it: scale 3 / 2
    file = lora.read_lora(tmp_path / "peft.safetensors", sd.unet)
    with lora.merged(sd.unet, [(m, 1.0) for m in file.adapters.values()]):
        ours = sampling.sample(sd, x, STEPS)
    assert torch.allclose(ours, reference, atol=ATOL) and (ours - sampling.sample(sd, x, STEPS)).abs().max() > 1e-3
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in state.items()})
    kohya = {k: (torch.tensor(3.0) if k.endswith(".alpha") else v.contiguous()) for k, v in kohya.items()}
    save_file(kohya, tmp_path / "kohya.safetensors")
    file = lora.read_lora(tmp_path / "kohya.safetensors", sd.unet)
    with lora.merged(sd.unet, [(m, 1.0) for m in file.adapters.values()]):
        assert torch.allclose(sampling.sample(sd, x, STEPS), reference, atol=ATOL)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.parametrize("where", ["shapes32", "sd"])
def test_cli_exports_loads_back_and_sweeps_a_slider(where, sd_dir, tmp_path, capsys):  # noqa: F811
    model = "shapes32" if where == "shapes32" else sd_dir
    prompt = [] if where == "shapes32" else ["--prompt", "a cat"]
    layer = [] if where == "shapes32" else ["--layer", UP]  # the tiny SD's mid-block edit barely shows in pixels
    slider = tmp_path / "slider.safetensors"
    export = ["export-lora", "--model", model, *layer, "--decomposition", "qkv"]
    assert run(*export, "-k", "2", "--pack", "-o", slider) == 0
    out = capsys.readouterr().out
    assert "unit strength: adapter weight w = eigenedit spectral alpha w" in out and "sha256" in out
    assert "qkv direction 1" in out and "2 sliders as 2 adapters (a slider pack)" in out
    # loads back: the file at weight 4 is the spectral edit at alpha 4 (the same PNG up to one level of rounding)
    one = tmp_path / "one.safetensors"
    assert run(*export, "-o", one) == 0
    common = ["--model", model, *prompt, "--steps", "3", "--seed", "4"]
    assert run("edit", *common, "--lora", f"{one}:4", "-o", tmp_path / "lora.png") == 0
    spectral_edit = [*layer, "--decomposition", "qkv", "--operator", "spectral", "--t-edit", "0", "--edit", "0:4"]
    assert run("edit", *common, *spectral_edit, "-o", tmp_path / "spectral.png") == 0
    assert run("edit", *common, "--edit", "0:0", "-o", tmp_path / "plain.png") == 0
    with_lora, with_spectral, plain = (png(tmp_path / f"{n}.png") for n in ("lora", "spectral", "plain"))
    assert np.abs(with_lora - with_spectral).max() <= 1
    assert (with_lora != plain).mean() > 0.1  # the slider visibly changes the image
    # sweeps it: one row per slider of the pack, one column per weight
    grid = tmp_path / "sweep.png"
    assert run("sweep", *common, "--lora", slider, "--alphas=-2,0,2", "--scale", "1", "-o", grid) == 0
    size = 32 if where == "shapes32" else 16
    assert Image.open(grid).size[1] == 18 + 2 * size
    assert "2 LoRA sliders x 3 weights" in capsys.readouterr().out


def test_all_layers_exports_the_top_k_of_every_self_attention_layer(sd, sd_dir, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "all.safetensors"
    assert run("export-lora", "--model", sd_dir, "--all-layers", "--decomposition", "qkv", "--pack", "-o", path) == 0
    assert "4 sliders as 4 adapters" in capsys.readouterr().out
    layers = {s["layer"] for s in json.loads(load_file_metadata(path)[lora.METADATA_KEY])["sliders"]}
    assert layers == {layer.name for layer in sd.attention_layers()} and len(layers) == 4
