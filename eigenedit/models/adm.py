"""The ADM UNet of openai/guided-diffusion (also used by openai/consistency_models) in plain PyTorch.

Module and parameter names follow guided-diffusion's ``unet.py`` so that its state dicts load as they are
(``input_blocks.11.1.qkv.weight``, ``middle_block.1.proj_out.bias``, ...). Every ``AttentionBlock`` is an
``eigenedit.core.attention.OwnAttention``: ``attention_weights(name)`` gives the fused qkv projection split per
head in the block's own head order, which is what eigenedit's decompositions read, and ``forward_with`` runs the
block with an edited attention (the ``spectral`` operator).

Head orders of the fused qkv projection (3C output channels, heads H, head size d = C / H):
- legacy (``QKVAttentionLegacy``, guided-diffusion's default): channels are grouped by head first; head h owns
  rows [3dh, 3dh + 3d) and splits them into q, k, v of d rows each.
- new (``QKVAttention``, ``use_new_attention_order``): q, k, v are rows [0, C), [C, 2C), [2C, 3C); head h owns
  rows [dh, dh + d) of each.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from eigenedit.core.attention import Attend, AttentionWeights

ADM_CONFIG_FILE = "adm_config.json"  # marks a guided-diffusion checkpoint folder
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


@dataclass
class ADMConfig:
    """Constructor arguments of guided-diffusion's ``UNetModel`` (same names, same meaning).

    attention_resolutions: downsampling rates (1, 2, 4, ...) at which attention blocks are used, as in
    guided-diffusion (``image_size // resolution``). label_dim: a continuous label of this many values embedded
    by Linear-SiLU-Linear (``label_emb.0`` / ``label_emb.2``); num_classes: a class label (``nn.Embedding``).
    attention_conv_dims: 1 for guided-diffusion's Conv1d qkv/proj_out weights, 2 for consistency_models' 1x1
    Conv2d weights (same computation, different weight shapes).
    """

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int = 3
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    dropout: float = 0.0
    channel_mult: tuple[float, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    num_classes: int | None = None
    label_dim: int | None = None
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    attention_conv_dims: int = 1

    def __post_init__(self) -> None:
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        self.channel_mult = tuple(self.channel_mult)
        if self.num_classes is not None and self.label_dim is not None:
            raise ValueError("give num_classes (class labels) or label_dim (continuous labels), not both")
        if self.attention_conv_dims not in (1, 2):
            raise ValueError(f"attention_conv_dims must be 1 or 2, got {self.attention_conv_dims}")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embeddings (N, dim) of (possibly fractional) timesteps (N,): [cos, sin] as in guided-diffusion."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always computes in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d}[dims](*args, **kwargs)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes the timestep embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels, self.use_conv = channels, use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling: a strided 3x3 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding (added, or FiLM with use_scale_shift_norm)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    """Attention on fused qkv (N, H*3*d, T): heads are split first, then q, k, v."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)  # scaled on both sides, as in guided-diffusion
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


class QKVAttention(nn.Module):
    """Attention on fused qkv (N, 3*H*d, T): q, k, v are split first, then heads ("new order")."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.chunk(3, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum(
            "bct,bcs->bts",
            (q * scale).reshape(bs * self.n_heads, ch, length),
            (k * scale).reshape(bs * self.n_heads, ch, length),
        )
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        return torch.einsum("bts,bcs->bct", weight, v.reshape(bs * self.n_heads, ch, length)).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection: x + proj_out(attention(qkv(norm(x))))."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
        conv_dims: int = 1,
    ):
        super().__init__()
        if num_head_channels == -1:
            if channels % num_heads:
                raise ValueError(f"channels {channels} are not divisible by num_heads {num_heads}")
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} are not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.channels = channels
        self.use_new_attention_order = use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = conv_nd(conv_dims, channels, channels * 3, 1)
        self.attention = QKVAttention(self.num_heads) if use_new_attention_order else QKVAttentionLegacy(self.num_heads)
        self.proj_out = conv_nd(conv_dims, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        h = self.norm(x)
        if isinstance(self.qkv, nn.Conv1d):
            h = h.reshape(b, c, -1)
        a = self.attention(self.qkv(h).reshape(b, 3 * c, -1))
        if isinstance(self.proj_out, nn.Conv2d):
            a = a.reshape(b, c, *spatial)
        return x + self.proj_out(a).reshape(x.shape)

    def forward_with(self, x: torch.Tensor, attend: Attend) -> torch.Tensor:
        """``forward`` with ``attend(tokens, q, k, v, heads, scale) -> (head outputs, extra)`` in place of the
        attention: tokens (B, N, C), q/k/v (B, N, C) in the block's head order, ``extra`` (B, N, C) or 0.0 added
        after proj_out (eigenedit's ``spectral`` operator runs the block this way)."""
        b, c, *spatial = x.shape
        h = self.norm(x)
        if isinstance(self.qkv, nn.Conv1d):
            h = h.reshape(b, c, -1)
        qkv = self.qkv(h).reshape(b, 3 * c, -1)
        heads, length = self.num_heads, qkv.shape[-1]
        if self.use_new_attention_order:
            q, k, v = qkv.chunk(3, dim=1)
        else:
            per_head = qkv.reshape(b, heads, 3, c // heads, length)
            q, k, v = (per_head[:, :, i].reshape(b, c, length) for i in range(3))
        tokens = h.reshape(b, c, length).transpose(1, 2)
        out, extra = attend(tokens, *(t.transpose(1, 2) for t in (q, k, v)), heads, (c // heads) ** -0.5)
        a = out.transpose(1, 2)
        if isinstance(self.proj_out, nn.Conv2d):
            a = a.reshape(b, c, *spatial)
        y = self.proj_out(a).reshape(b, c, length)
        if not isinstance(extra, float):
            y = y + extra.transpose(1, 2)
        return x + y.reshape(x.shape)

    def attention_weights(self, name: str = "") -> AttentionWeights:
        """W_q, W_k, W_v (inner, C) with head h in rows [h*d, (h+1)*d), and W_o (C, inner); float64 copies."""
        c, heads = self.channels, self.num_heads
        d = c // heads
        fused = self.qkv.weight.detach().double().reshape(3 * c, c)
        if self.use_new_attention_order:
            q, k, v = fused[:c], fused[c : 2 * c], fused[2 * c :]
        else:
            per_head = fused.reshape(heads, 3, d, c)  # head h: rows [3dh, 3dh+3d) = q, k, v
            q, k, v = (per_head[:, i].reshape(c, c) for i in range(3))
        return AttentionWeights(
            name=name,
            q=q.clone(),
            k=k.clone(),
            v=v.clone(),
            o=self.proj_out.weight.detach().double().reshape(c, c).clone(),
            heads=heads,
            norm_weight=self.norm.weight.detach().double().clone(),
        )


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel``: forward(x, timesteps, y=None) -> (N, out_channels, H, W)."""

    def __init__(self, config: ADMConfig):
        super().__init__()
        self.config = cfg = config
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        emb_dim = cfg.model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)
        elif cfg.label_dim is not None:
            self.label_emb = nn.Sequential(nn.Linear(cfg.label_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def resblock(ch_in: int, ch_out: int, **updown) -> ResBlock:
            return ResBlock(ch_in, emb_dim, cfg.dropout, ch_out, cfg.use_scale_shift_norm, **updown)

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch, heads, cfg.num_head_channels, cfg.use_new_attention_order, cfg.attention_conv_dims
            )

        ch = input_ch = int(cfg.channel_mult[0] * cfg.model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, int(mult * cfg.model_channels))]
                ch = int(mult * cfg.model_channels)
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = resblock(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(resblock(ch, ch), attention(ch, cfg.num_heads), resblock(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + skip_chans.pop(), int(cfg.model_channels * mult))]
                ch = int(cfg.model_channels * mult)
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W); timesteps (N,) (fractional allowed); y: class ids (N,) or continuous labels (N[, D])."""
        if (y is not None) != hasattr(self, "label_emb"):
            raise ValueError("give a label y if and only if the model is label-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels))
        if y is not None:
            if self.config.label_dim is not None and y.ndim == 1:
                y = y[:, None]
            emb = emb + self.label_emb(y.to(emb.dtype) if self.config.label_dim is not None else y)
        skips, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: ADMConfig, allow_pickle: bool = False) -> ADMUNet:
        """Build from ``config`` and load a guided-diffusion-style state dict (see ``load_state_dict_file``)."""
        model = cls(config)
        load_weights(model, load_state_dict_file(path, allow_pickle=allow_pickle))
        return model.eval().requires_grad_(False)


def load_state_dict_file(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict: safetensors always; pickle checkpoints (``.pt`` of the Asyrp/P2/iDDPM zoos) only with
    ``allow_pickle=True``, and then only through ``torch.load(weights_only=True)`` (never a full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path} is not a valid safetensors file: {err}") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {path.suffix!r}: give .safetensors (or a .pt pickle)")
    if not allow_pickle:
        raise ValueError(
            f"{path} is a pickle checkpoint, and loading a pickle can run arbitrary code; pass allow_pickle=True "
            "(command line: --allow-pickle) if you trust its source, or convert it to .safetensors"
        )
    try:  # weights_only: tensors and plain containers; a file that needs full unpickling is refused, never run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} cannot be read with weights_only loading ({reason[:160]}): it is not a checkpoint, or it holds "
            "more than tensors and would need full unpickling, which eigenedit refuses; convert it to .safetensors "
            "where you trust it"
        ) from None
    except Exception as err:  # an empty, truncated or garbled file: EOFError, RuntimeError, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint: {reason[:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], prefixes: Sequence[str] = ("module.",)) -> None:
    """Load ``state`` strictly (after dropping any of ``prefixes``); a mismatch raises one clear ValueError."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if items
        ]
        raise ValueError("checkpoint does not match the model config; " + "; ".join(parts))
    model.load_state_dict(state)


@dataclass
class UNetLikeConfig:
    """The few ``UNet2DModel.config`` fields eigenedit reads."""

    sample_size: int
    in_channels: int
    out_channels: int


@dataclass
class UNetLikeOutput:
    sample: torch.Tensor


class ADMDiffusionUNet(nn.Module):
    """A guided-diffusion DDPM network (epsilon prediction, optionally with learned-variance channels, which
    ``DiffusionModel.predict_eps`` drops) callable like a diffusers ``UNet2DModel``: forward(sample, t).sample."""

    def __init__(self, network: ADMUNet):
        super().__init__()
        self.network = network
        cfg = network.config
        self.config = UNetLikeConfig(cfg.image_size, cfg.in_channels, cfg.out_channels)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> UNetLikeOutput:
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        return UNetLikeOutput(self.network(sample, t))


def save_adm_folder(network: ADMUNet, folder: str | Path, beta_schedule: str = "linear") -> None:
    """Write ``adm_config.json`` + ``model.safetensors``: the folder layout ``load_adm_folder`` reads."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / "model.safetensors")
    meta = {"unet": network.config.to_dict(), "weights": "model.safetensors", "beta_schedule": beta_schedule}
    (folder / ADM_CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")


ADM_LIMITS = {"image_size": 4096, "model_channels": 2048, "num_res_blocks": 16, "num_heads": 64, "label_dim": 4096}


def read_adm_config(path: Path) -> tuple[dict, ADMConfig]:
    """``adm_config.json`` checked before any network is built: a JSON object with a "unet" object of ADMConfig
    fields (whole numbers in sane ranges, so a garbled file cannot ask for terabytes) and a "weights" file name."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable JSON file: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("unet"), dict):
        raise ValueError(f'{path} must hold a JSON object with a "unet" object of ADMConfig fields')
    meta.setdefault("weights", "model.safetensors")
    if not isinstance(meta["weights"], str) or not meta["weights"]:
        raise ValueError(f'{path}: "weights" must be a file name, got {meta["weights"]!r}')
    unet = meta["unet"]
    unknown = set(unet) - set(ADMConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown ADMConfig fields {sorted(unknown)}")
    for name, value in unet.items():
        default = ADMConfig.__dataclass_fields__[name].default
        numbers = value if isinstance(value, list | tuple) else [value]
        if value is None and name in ("num_classes", "label_dim"):
            continue
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = ok and isinstance(value, list | tuple) and 0 < len(value) <= 16 and all(0 < v <= 1024 for v in value)
        elif isinstance(value, list | tuple) or not ok:
            ok = False
        elif name == "dropout":
            ok = 0 <= value < 1
        else:
            low = -1 if name in ("num_head_channels", "num_heads_upsample") else 1
            ok = value == int(value) and (low <= value <= ADM_LIMITS.get(name, 1 << 16)) and value != 0
        if not ok:
            raise ValueError(f"{path}: unet field {name!r} has an unusable value {value!r}"[:300])
    try:
        return meta, ADMConfig(**unet)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def load_adm_folder(folder: str | Path, allow_pickle: bool = False) -> tuple[ADMDiffusionUNet, DDIMScheduler]:
    """A guided-diffusion checkpoint described by ``folder/adm_config.json``: {"unet": ADMConfig fields,
    "weights": file name (safetensors, or a .pt of the Asyrp/P2/iDDPM zoos with ``allow_pickle``),
    "beta_schedule": "linear" (guided-diffusion's, 1e-4..0.02 over 1000 steps) or "cosine"}."""
    folder = Path(folder)
    meta, config = read_adm_config(folder / ADM_CONFIG_FILE)
    schedule = meta.get("beta_schedule", "linear")
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"{folder / ADM_CONFIG_FILE}: beta_schedule must be 'linear' or 'cosine', got {schedule!r}")
    state = load_state_dict_file(folder / meta["weights"], allow_pickle=allow_pickle)
    with torch.device("meta"), warnings.catch_warnings():  # the config must fit the weights before any memory
        warnings.simplefilter("ignore")  # is allocated for it (loading into meta tensors is a no-op)
        try:
            probe = ADMUNet(config)
        except (AssertionError, ArithmeticError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{folder / ADM_CONFIG_FILE} describes no buildable network: {err}"[:300]) from None
        load_weights(probe, state)
    network = ADMUNet(config)
    load_weights(network, state)
    network.eval().requires_grad_(False)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
    )
    return ADMDiffusionUNet(network), scheduler


__all__ = [
    "ADMConfig",
    "ADMDiffusionUNet",
    "ADMUNet",
    "AttentionBlock",
    "QKVAttention",
    "QKVAttentionLegacy",
    "ResBlock",
    "load_state_dict_file",
    "load_weights",
    "timestep_embedding",
]
