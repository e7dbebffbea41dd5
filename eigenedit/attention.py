"""Find the self-attention layers of a diffusers UNet and read their projection weights per head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention

DEFAULT_LAYER = "mid_block.attentions.0"


@dataclass
class AttentionWeights:
    """Projection weights of one attention layer, as ``y = W x`` matrices.

    q, k, v: (inner, channels); o: (channels, inner); inner = heads * head_dim.
    """

    name: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    heads: int
    norm_weight: torch.Tensor | None = None  # GroupNorm scale applied to the input, if any

    @property
    def channels(self) -> int:
        return self.q.shape[1]

    @property
    def head_dim(self) -> int:
        return self.q.shape[0] // self.heads

    def head(self, index: int) -> AttentionWeights:
        """The weights of one head (rows of q, k, v and columns of o)."""
        if not 0 <= index < self.heads:
            raise ValueError(f"head {index} out of range: layer {self.name!r} has {self.heads} heads")
        rows = slice(index * self.head_dim, (index + 1) * self.head_dim)
        return AttentionWeights(
            f"{self.name}#head{index}", self.q[rows], self.k[rows], self.v[rows], self.o[:, rows], 1, self.norm_weight
        )


@dataclass
class AttentionLayer:
    """A self-attention layer: its module name, sizes and (if known) the spatial resolution it runs at."""

    name: str
    channels: int
    heads: int
    head_dim: int
    resolution: tuple[int, int] | None


def self_attention_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Name -> module of every self-attention layer (diffusers ``Attention`` without cross-attention,
    plus any module that exposes ``attention_weights()``, such as eigenedit's ADM blocks)."""
    found = {}
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and not module.is_cross_attention:
            found[name] = module
        elif hasattr(module, "attention_weights"):
            found[name] = module
    return found


def get_attention_module(unet: torch.nn.Module, layer: str = DEFAULT_LAYER) -> torch.nn.Module:
    modules = self_attention_modules(unet)
    if layer not in modules:
        listing = ", ".join(modules) or "none"
        raise ValueError(f"unknown self-attention layer {layer!r}; this model has: {listing}")
    return modules[layer]


def read_attention_weights(unet: torch.nn.Module, layer: str = DEFAULT_LAYER) -> AttentionWeights:
    """W_q, W_k, W_v, W_o (float64 copies) of a self-attention layer."""
    module = get_attention_module(unet, layer)
    if hasattr(module, "attention_weights"):
        return module.attention_weights(layer)
    norm = getattr(module, "group_norm", None)
    return AttentionWeights(
        name=layer,
        q=module.to_q.weight.detach().double().clone(),
        k=module.to_k.weight.detach().double().clone(),
        v=module.to_v.weight.detach().double().clone(),
        o=module.to_out[0].weight.detach().double().clone(),
        heads=module.heads,
        norm_weight=None if norm is None or norm.weight is None else norm.weight.detach().double().clone(),
    )


def list_attention_layers(unet: torch.nn.Module) -> list[AttentionLayer]:
    """Every self-attention layer with its channels, heads and resolution.

    For an unconditional UNet the resolution is read from one dry forward pass at ``config.sample_size``.
    """
    modules = self_attention_modules(unet)
    resolutions: dict[str, tuple[int, int]] = {}
    size = getattr(getattr(unet, "config", None), "sample_size", None)
    if size is not None and getattr(unet.config, "cross_attention_dim", None) is None:
        size = (size, size) if isinstance(size, int) else tuple(size)

        def record(name):
            def hook(module, args):
                if args and args[0].ndim == 4:
                    resolutions[name] = tuple(args[0].shape[-2:])

            return hook

        handles = [m.register_forward_pre_hook(record(n)) for n, m in modules.items()]
        try:
            param = next(unet.parameters())
            sample = torch.zeros(1, unet.config.in_channels, *size, dtype=param.dtype, device=param.device)
            with torch.no_grad():
                unet(sample, torch.tensor([0], device=param.device))
        finally:
            for h in handles:
                h.remove()
    layers = []
    for name in modules:
        w = read_attention_weights(unet, name)
        layers.append(AttentionLayer(name, w.channels, w.heads, w.head_dim, resolutions.get(name)))
    return layers
