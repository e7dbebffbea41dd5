"""The ADM (guided-diffusion) UNet: per-head qkv split, decompositions, key names, checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from eigenedit.core.attention import AttentionWeights, list_attention_layers, self_attention_modules
from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, factorize
from eigenedit.models.adm import ADMConfig, ADMUNet, AttentionBlock, load_state_dict_file

TINY = dict(
    image_size=16,
    in_channels=1,
    model_channels=32,
    out_channels=1,
    num_res_blocks=1,
    attention_resolutions=(2,),
    channel_mult=(1, 2),
    num_head_channels=16,
)


def explicit_attention(x: torch.Tensor, w: AttentionWeights, block: AttentionBlock) -> torch.Tensor:
    """x + sum_h W_o[:, h] V_h softmax((Q_h^T K_h) / sqrt(d)) from the per-head matrices (qkv bias zero)."""
    b, c, *spatial = x.shape
    n = block.norm(x).reshape(b, c, -1).double()
    out = torch.zeros_like(n)
    for h in range(w.heads):
        head = w.head(h)
        q, k, v = head.q @ n, head.k @ n, head.v @ n  # (B, d, T)
        weights = torch.softmax(q.transpose(1, 2) @ k / head.head_dim**0.5, dim=-1)  # (B, T_query, T_key)
        out = out + head.o @ (v @ weights.transpose(1, 2))
    out = out + block.proj_out.bias.double()[None, :, None]
    return x + out.reshape(x.shape).to(x.dtype)


@pytest.mark.parametrize("conv_dims", [1, 2])
@pytest.mark.parametrize("new_order", [False, True])
def test_per_head_split_reproduces_the_block(new_order: bool, conv_dims: int) -> None:
    torch.manual_seed(0)
    block = AttentionBlock(64, num_head_channels=16, use_new_attention_order=new_order, conv_dims=conv_dims).eval()
    torch.nn.init.normal_(block.norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(block.proj_out.bias)
    torch.nn.init.zeros_(block.qkv.bias)  # biases are not part of AttentionWeights
    x = torch.randn(2, 64, 4, 5)
    with torch.no_grad():
        actual = block(x)
        w = block.attention_weights("block")
        assert (w.heads, w.head_dim, w.channels) == (4, 16, 64)
        torch.testing.assert_close(explicit_attention(x, w, block), actual, atol=1e-5, rtol=1e-5)
        # the other head order's split does not reproduce it: the test can tell the orders apart
        block.use_new_attention_order = not new_order
        wrong = block.attention_weights("block")
        assert (explicit_attention(x, wrong, block) - actual).abs().max() > 1e-2


def test_all_decompositions_run_on_every_layer() -> None:
    torch.manual_seed(0)
    cfg = ADMConfig(**TINY, use_new_attention_order=True, use_scale_shift_norm=True, resblock_updown=True)
    unet = ADMUNet(cfg).eval()
    layers = list(self_attention_modules(unet))
    assert layers == ["input_blocks.3.1", "middle_block.1", "output_blocks.0.1", "output_blocks.1.1"]
    assert [(la.channels, la.heads) for la in list_attention_layers(unet)] == [(64, 4)] * len(layers)
    for layer in layers:
        for decomposition in (*DECOMPOSITIONS, "random"):
            dirs = compute_directions(unet, layer, decomposition)
            assert dirs.dim == 64 and len(dirs) >= 16
            torch.testing.assert_close(dirs.vectors.norm(dim=1), torch.ones(len(dirs)))
        values, vectors = factorize(unet.get_submodule(layer).attention_weights(layer), "ov-left", head=3)
        assert vectors.shape == (16, 64) and (values > 0).all()


def test_forward_shapes_and_labels() -> None:
    torch.manual_seed(0)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 500.0])
    plain = ADMUNet(ADMConfig(**TINY)).eval()
    classes = ADMUNet(ADMConfig(**TINY, num_classes=10, resblock_updown=True, conv_resample=False)).eval()
    continuous = ADMUNet(ADMConfig(**TINY, label_dim=1)).eval()
    with torch.no_grad():
        assert plain(x, t).shape == (2, 1, 16, 16)
        assert classes(x, t, torch.tensor([1, 7])).shape == (2, 1, 16, 16)
        assert continuous(x, t, torch.tensor([0.0, 1.0])).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="label"):
        continuous(x, t)


def test_state_dict_names_follow_guided_diffusion() -> None:
    keys = ADMUNet(ADMConfig(**TINY)).state_dict()
    expected = {
        "time_embed.0.weight": (128, 32),
        "input_blocks.0.0.weight": (32, 1, 3, 3),
        "input_blocks.1.0.in_layers.0.weight": (32,),
        "input_blocks.2.0.op.weight": (32, 32, 3, 3),  # Downsample conv
        "input_blocks.3.0.skip_connection.weight": (64, 32, 1, 1),
        "input_blocks.3.1.qkv.weight": (192, 64, 1),  # guided-diffusion: Conv1d
        "middle_block.1.proj_out.weight": (64, 64, 1),
        "middle_block.2.emb_layers.1.weight": (64, 128),
        "output_blocks.1.2.conv.weight": (64, 64, 3, 3),  # Upsample conv
        "out.0.weight": (32,),
        "out.2.weight": (1, 32, 3, 3),
    }
    assert {k: tuple(keys[k].shape) for k in expected} == expected


def test_checkpoint_loading(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = ADMConfig(**TINY)
    unet = ADMUNet(cfg).eval()
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([10.0])
    save_file(unet.state_dict(), tmp_path / "model.safetensors")
    loaded = ADMUNet.from_checkpoint(tmp_path / "model.safetensors", cfg)
    torch.testing.assert_close(loaded(x, t), unet(x, t).detach())

    torch.save({f"module.{k}": v for k, v in unet.state_dict().items()}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        ADMUNet.from_checkpoint(tmp_path / "model.pt", cfg)
    from_pickle = ADMUNet.from_checkpoint(tmp_path / "model.pt", cfg, allow_pickle=True)
    torch.testing.assert_close(from_pickle(x, t), unet(x, t).detach())

    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="does not match the model config.*wrong shape"):
        ADMUNet.from_checkpoint(tmp_path / "model.safetensors", ADMConfig(**{**TINY, "model_channels": 64}))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_state_dict_file(tmp_path / "bad.safetensors")


def test_guided_diffusion_folder_loads_samples_and_edits(tmp_path) -> None:
    """A guided-diffusion checkpoint folder (adm_config.json + weights) runs through load_model and the CLI."""
    from eigenedit.apps.cli import main
    from eigenedit.core import sampling
    from eigenedit.models import load_model
    from eigenedit.models.adm import save_adm_folder

    torch.manual_seed(0)
    network = ADMUNet(ADMConfig(**{**TINY, "out_channels": 2})).eval()  # learned variance: eps + 1 extra channel
    save_adm_folder(network, tmp_path / "adm")
    model = load_model(str(tmp_path / "adm"))
    assert model.sample_shape == (1, 16, 16)
    layer = next(iter(self_attention_modules(model.unet)))
    assert layer.startswith("network.") and list_attention_layers(model.unet)[0].resolution == (8, 8)
    x = sampling.noise_from_seeds(model, [0, 1])
    dirs = compute_directions(model.unet, layer, "qk").top(1)
    plain = sampling.sample(model, x, 4)
    edited = sampling.edit_images(
        model, x, sampling.Edit(dirs, torch.tensor([[0.0], [2.0]]), t_edit=0, location=layer), 4
    )
    assert torch.equal(edited[0], plain[0]) and not torch.allclose(edited[1], plain[1])

    # pickle weights need the explicit opt-in, from Python and from the command line
    torch.save(network.state_dict(), tmp_path / "adm" / "model.pt")
    meta = (tmp_path / "adm" / "adm_config.json").read_text().replace("model.safetensors", "model.pt")
    (tmp_path / "adm" / "adm_config.json").write_text(meta)
    with pytest.raises(ValueError, match="allow-pickle"):
        load_model(str(tmp_path / "adm"))
    assert main(["layers", "--model", str(tmp_path / "adm")]) == 2
    assert main(["layers", "--model", str(tmp_path / "adm"), "--allow-pickle"]) == 0
