"""Find the self-attention layers of a diffusers UNet and read their projection weights per head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_processor import Attention

DEFAULT_LAYER = "mid_block.attentions.0"  # the mid-block attention: the one attention layer of an h-space UNet


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

    def to(self, dtype: torch.dtype) -> AttentionWeights:
        """The same weights in ``dtype``."""
        norm = None if self.norm_weight is None else self.norm_weight.to(dtype)
        q, k, v, o = (m.to(dtype) for m in (self.q, self.k, self.v, self.o))
        return AttentionWeights(self.name, q, k, v, o, self.heads, norm)

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
    """A self-attention layer: its module name, sizes, (if known) the spatial resolution or image token grid it
    runs at, and which projections the decompositions read (``projections``)."""

    name: str
    channels: int
    heads: int
    head_dim: int
    resolution: tuple[int, int] | None
    projections: str = "q,k,v,o"  # an adapter names others (SD3/Flux: "image q,k,v,o", ...)


WeightReader = Callable[..., AttentionWeights]  # (layer, dtype=float64, copy=True): a model's attention_weights


@runtime_checkable
class OwnAttention(Protocol):
    """An attention module that reads its own weights and runs with an edited attention: what a diffusers
    ``Attention`` gets from this module's generic reader and from the spectral operator's processor. eigenedit's
    ADM ``AttentionBlock`` (``eigenedit.models.adm``) is one."""

    def attention_weights(self, name: str = "") -> AttentionWeights:
        """W_q, W_k, W_v, W_o (float64) of this layer (``name``: what to call it)."""
        ...

    def forward_with(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        """The module's forward, with ``attend(tokens, q, k, v, heads, scale) -> (head outputs, extra)`` in place
        of its attention (``extra``: a term added after the output projection, or 0.0)."""
        ...


Attend = Callable[..., tuple[torch.Tensor, torch.Tensor | float]]


def is_self_attention(module: torch.nn.Module) -> bool:
    """A diffusers ``Attention`` without cross-attention, a newer attention class (``FluxAttention``) whose keys
    read the queries' width, or an ``OwnAttention`` module (eigenedit's ADM blocks)."""
    if isinstance(module, Attention):
        return not module.is_cross_attention
    if isinstance(module, AttentionModuleMixin):
        to_q, to_k = (getattr(module, name, None) for name in ("to_q", "to_k"))
        if not isinstance(to_q, torch.nn.Linear) or not isinstance(to_k, torch.nn.Linear):
            return False
        return not (getattr(module, "is_cross_attention", False) or to_k.in_features != to_q.in_features)
    return isinstance(module, OwnAttention)


def self_attention_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Name -> module of every self-attention layer (``is_self_attention``)."""
    return {name: module for name, module in unet.named_modules() if is_self_attention(module)}


def default_layer(unet: torch.nn.Module) -> str:
    """DEFAULT_LAYER where the UNet has it, else its first mid-block self-attention layer (Stable Diffusion:
    ``mid_block.attentions.0.transformer_blocks.0.attn1``), else its first self-attention layer."""
    names = list(self_attention_modules(unet))
    if DEFAULT_LAYER in names or not names:
        return DEFAULT_LAYER
    return next((n for n in names if n.startswith("mid_block.")), names[0])


def get_attention_module(unet: torch.nn.Module, layer: str = DEFAULT_LAYER) -> torch.nn.Module:
    try:  # direct lookup: listing every module of a large model costs milliseconds per call
        module = unet.get_submodule(layer) if layer else None
    except AttributeError:
        module = None
    if module is not None and is_self_attention(module):
        return module
    modules = self_attention_modules(unet)
    if layer not in modules:
        listing = ", ".join(modules) or "none"
        raise ValueError(f"unknown self-attention layer {layer!r}; this model has: {listing}")
    return modules[layer]


def read_attention_weights(
    unet: torch.nn.Module, layer: str = DEFAULT_LAYER, dtype: torch.dtype = torch.float64, copy: bool = True
) -> AttentionWeights:
    """W_q, W_k, W_v, W_o (copies in ``dtype``, float64 by default) of a self-attention layer, read the generic
    way: an ``OwnAttention`` module's own reading (ADM), else a diffusers attention module's projections
    (``diffusers_weights``). A layer whose logits or output need more than its own projections (per-head q/k norms
    with a scale, as in SD3.5 and Flux; an output projection outside the module, as in Flux's single-stream
    blocks) is a ValueError here: its model's ``attention_weights`` reads it.

    copy=False: where the weights already have ``dtype``, the tensors share the model's memory (read-only use:
    the fast discovery path saves copying hundreds of megabytes)."""
    module = get_attention_module(unet, layer)
    if isinstance(module, OwnAttention):
        return module.attention_weights(layer).to(dtype)
    if getattr(module, "to_out", None) is None:
        raise ValueError(f"layer {layer!r} has no output projection of its own: read it with its model's weights")
    if qk_norm_scales(module) != (None, None):
        raise ValueError(f"layer {layer!r} normalises q and k with learned scales: read it with its model's weights")
    return diffusers_weights(unet, layer, dtype, copy)


def qk_norm_scales(module: torch.nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The learned scales of a diffusers attention module's per-head q and k norms (``norm_q``/``norm_k``), each
    None where it has no such norm or the norm has no scale."""
    scales = (getattr(getattr(module, name, None), "weight", None) for name in ("norm_q", "norm_k"))
    return tuple(s if isinstance(s, torch.Tensor) else None for s in scales)


def diffusers_weights(
    unet: torch.nn.Module,
    layer: str,
    dtype: torch.dtype = torch.float64,
    copy: bool = True,
    o: torch.Tensor | None = None,
) -> AttentionWeights:
    """A diffusers attention module's to_q, to_k, to_v and to_out[0] (``o`` instead where given) as they are,
    and the norm its input passes: its group_norm, or for a transformer block's ``attn1`` the block's norm1."""
    module = get_attention_module(unet, layer)
    norm = getattr(module, "group_norm", None)
    parent, _, attr = layer.rpartition(".")
    if norm is None and attr == "attn1":  # a transformer block's self-attention reads norm1(x) (a LayerNorm)
        norm = getattr(unet.get_submodule(parent), "norm1", None) if parent else None
        norm = norm if isinstance(norm, torch.nn.LayerNorm) else None

    def read(weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().to(dtype=dtype, copy=copy)

    return AttentionWeights(
        name=layer,
        q=read(module.to_q.weight),
        k=read(module.to_k.weight),
        v=read(module.to_v.weight),
        o=read(module.to_out[0].weight if o is None else o),
        heads=module.heads,
        norm_weight=None if norm is None or norm.weight is None else read(norm.weight),
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


def list_attention_layers(
    unet: torch.nn.Module,
    forward: Callable[[], object] | None = None,
    grid: tuple[int, int] | None = None,
    read: WeightReader | None = None,
) -> list[AttentionLayer]:
    """Every self-attention layer with its channels, heads and resolution.

    The resolution is read from one dry forward pass: ``forward()`` where given (models with more inputs, such
    as SDXL), else one at ``config.sample_size`` (cross-attention UNets get one dummy text token); it is None where
    that pass is not possible. ``grid``: the image token grid (h, w) of a transformer backbone, given to every
    layer whose resolution the pass does not tell. ``read(layer)``: how the model reads a layer's weights (its
    ``attention_weights``; default ``read_attention_weights``).
    """
    modules = self_attention_modules(unet)
    shapes: dict[str, tuple[int, ...]] = {}
    size = getattr(getattr(unet, "config", None), "sample_size", None)
    generic = size is not None and forward is None and grid is None  # transformers: the grid is given
    inputs = _dry_forward_inputs(unet) if generic else None
    if inputs is not None or forward is not None:
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
            with torch.no_grad():
                if forward is not None:
                    forward()
                else:
                    param = next(unet.parameters())
                    sample = torch.zeros(1, unet.config.in_channels, *size, dtype=param.dtype, device=param.device)
                    unet(sample, torch.tensor([0], device=param.device), **inputs)
        except Exception:  # best effort: a backbone this generic pass cannot run lists no resolutions
            shapes.clear()
        finally:
            for h in handles:
                h.remove()
    layers = []
    for name, module in modules.items():
        w = read_attention_weights(unet, name) if read is None else read(name)
        res = _resolution(name, shapes, isinstance(module, Attention)) or grid
        layers.append(AttentionLayer(name, w.channels, w.heads, w.head_dim, res))
    return layers
