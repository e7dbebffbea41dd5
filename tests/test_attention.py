import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from eigenedit.core.attention import list_attention_layers, read_attention_weights
from eigenedit.core.directions import compute_directions

from .conftest import tiny_unet

CONFIGS = Path(__file__).parent / "configs"


def unet_from_config(name: str) -> UNet2DModel:
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    torch.manual_seed(0)
    return UNet2DModel.from_config(config).eval()


def test_tiny_unet_layers_and_head_split():
    unet = tiny_unet()
    layers = {layer.name: layer for layer in list_attention_layers(unet)}
    assert set(layers) == {
        "down_blocks.1.attentions.0",
        "up_blocks.0.attentions.0",
        "up_blocks.0.attentions.1",
        "mid_block.attentions.0",
    }
    mid = layers["mid_block.attentions.0"]
    assert (mid.channels, mid.heads, mid.head_dim, mid.resolution) == (16, 2, 8, (8, 8))
    w = read_attention_weights(unet, "mid_block.attentions.0")
    module = unet.mid_block.attentions[0]
    head1 = w.head(1)
    assert torch.equal(head1.q, module.to_q.weight[8:].double())
    assert torch.equal(head1.o, module.to_out[0].weight[:, 8:].double())


def test_head_split_matches_the_attention_computation():
    """Per-head logits from our split equal the logits diffusers computes for that head."""
    unet = tiny_unet()
    module = unet.mid_block.attentions[0]
    w = read_attention_weights(unet, "mid_block.attentions.0")
    x = torch.randn(5, 16, dtype=torch.float64)
    q = torch.nn.functional.linear(x, module.to_q.weight.double(), module.to_q.bias.double())
    k = torch.nn.functional.linear(x, module.to_k.weight.double(), module.to_k.bias.double())
    q_heads, k_heads = q.view(5, 2, 8), k.view(5, 2, 8)
    for h in range(2):
        hw = w.head(h)
        qh = x @ hw.q.T + module.to_q.bias.double()[h * 8 : (h + 1) * 8]
        kh = x @ hw.k.T + module.to_k.bias.double()[h * 8 : (h + 1) * 8]
        assert torch.allclose(qh @ kh.T, q_heads[:, h] @ k_heads[:, h].T)


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "ddpm-cifar10-32",
            {
                "down_blocks.1.attentions.0": (256, 16),
                "down_blocks.1.attentions.1": (256, 16),
                "up_blocks.2.attentions.0": (256, 16),
                "up_blocks.2.attentions.1": (256, 16),
                "up_blocks.2.attentions.2": (256, 16),
                "mid_block.attentions.0": (256, 4),
            },
        ),
        (
            "ddpm-ema-celebahq-256",
            {
                "down_blocks.4.attentions.0": (512, 16),
                "down_blocks.4.attentions.1": (512, 16),
                "up_blocks.1.attentions.0": (512, 16),
                "up_blocks.1.attentions.1": (512, 16),
                "up_blocks.1.attentions.2": (512, 16),
                "mid_block.attentions.0": (512, 8),
            },
        ),
    ],
)
def test_real_model_configs(name, expected):
    unet = unet_from_config(name)
    layers = list_attention_layers(unet)
    assert {la.name: (la.channels, la.resolution[0]) for la in layers} == expected
    assert all(la.heads == 1 for la in layers)  # attention_head_dim null -> one head of all channels
    dirs = compute_directions(unet, "mid_block.attentions.0", "qk", model_id=name)
    assert dirs.dim == expected["mid_block.attentions.0"][0]
    assert torch.allclose(dirs.vectors.norm(dim=1), torch.ones(len(dirs)), atol=1e-5)


def test_unknown_layer_lists_the_real_ones():
    with pytest.raises(ValueError, match="mid_block.attentions.0"):
        read_attention_weights(tiny_unet(), "mid_block.nope")
