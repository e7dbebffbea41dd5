"""Find the self-attention layers of a diffusers UNet and read their projection weights per head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention

from eigenedit.core.defaults import DEFAULT_LAYER


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


def default_layer(unet: torch.nn.Module) -> str:
    """DEFAULT_LAYER where the UNet has it, else its first mid-block self-attention layer (Stable Diffusion:
    ``mid_block.attentions.0.transformer_blocks.0.attn1``), else its first self-attention layer."""
    names = list(self_attention_modules(unet))
    if DEFAULT_LAYER in names or not names:
        return DEFAULT_LAYER
    return next((n for n in names if n.startswith("mid_block.")), names[0])


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
    parent, _, attr = layer.rpartition(".")
    if norm is None and attr == "attn1":  # a transformer block's self-attention reads norm1(x) (a LayerNorm)
        norm = getattr(unet.get_submodule(parent), "norm1", None) if parent else None
        norm = norm if isinstance(norm, torch.nn.LayerNorm) else None
    return AttentionWeights(
        name=layer,
        q=module.to_q.weight.detach().double().clone(),
        k=module.to_k.weight.detach().double().clone(),
        v=module.to_v.weight.detach().double().clone(),
        o=module.to_out[0].weight.detach().double().clone(),
        heads=module.heads,
        norm_weight=None if norm is None or norm.weight is None else norm.weight.detach().double().clone(),
    )


def _dry_forward_inputs(unet: torch.nn.Module) -> dict | None:
    """Extra UNet inputs for a dry forward pass: one dummy text token for a cross-attention UNet (Stable
    Diffusion); None where more is needed (added text/time or class embeddings, as in SDXL)."""
    config = unet.config
    dim = getattr(config, "encoder_hid_dim", None) or getattr(config, "cross_attention_dim", None)
    if dim is None:
        return {}
    extra = ("addition_embed_type", "class_embed_type")
    if not isinstance(dim, int) or any(getattr(config, name, None) is not None for name in extra):
        return None
    param = next(unet.parameters())
    return {"encoder_hidden_states": torch.zeros(1, 1, dim, dtype=param.dtype, device=param.device)}


def _resolution(name: str, shapes: dict[str, tuple[int, ...]], tokens: bool) -> tuple[int, int] | None:
    """The spatial size a layer ran at: its (B, C, H, W) input, or for (B, N, C) tokens (``tokens``: a diffusers
    Attention in a transformer block) the H x W of the nearest enclosing module whose input had N positions."""
    shape = shapes.get(name)
    if shape is not None and len(shape) == 4:
        return shape[2], shape[3]
    if shape is None or len(shape) != 3 or not tokens:
        return None
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        outer = shapes.get(".".join(parts[:end]))
        if outer is not None and len(outer) == 4 and outer[2] * outer[3] == shape[1]:
            return outer[2], outer[3]
    return None


def list_attention_layers(unet: torch.nn.Module) -> list[AttentionLayer]:
    """Every self-attention layer with its channels, heads and resolution.

    The resolution is read from one dry forward pass at ``config.sample_size`` (cross-attention UNets get one
    dummy text token); it is None where that pass is not possible.
    """
    modules = self_attention_modules(unet)
    shapes: dict[str, tuple[int, ...]] = {}
    size = getattr(getattr(unet, "config", None), "sample_size", None)
    inputs = _dry_forward_inputs(unet) if size is not None else None
    if inputs is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        outer = {".".join(n.split(".")[:end]) for n in modules for end in range(1, n.count(".") + 1)}

        def record(name):
            def hook(module, args, kwargs):
                x = args[0] if args else kwargs.get("hidden_states")
                if isinstance(x, torch.Tensor):
                    shapes[name] = tuple(x.shape)

            return hook

        handles = [
            m.register_forward_pre_hook(record(n), with_kwargs=True)
            for n, m in unet.named_modules()
            if n in modules or n in outer
        ]
        try:
            param = next(unet.parameters())
            sample = torch.zeros(1, unet.config.in_channels, *size, dtype=param.dtype, device=param.device)
            with torch.no_grad():
                unet(sample, torch.tensor([0], device=param.device), **inputs)
        finally:
            for h in handles:
                h.remove()
    layers = []
    for name, module in modules.items():
        w = read_attention_weights(unet, name)
        res = _resolution(name, shapes, isinstance(module, Attention))
        layers.append(AttentionLayer(name, w.channels, w.heads, w.head_dim, res))
    return layers
