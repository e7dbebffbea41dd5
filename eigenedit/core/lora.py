"""LoRA files: eigenedit's weight edits written as standard LoRAs, and LoRA files applied to any eigenedit model.

Export. The ``spectral`` operator adds ``alpha * s_h * l r^T`` to head h's share of one matrix of an attention
layer (``operators.layer_modes``). Where that is a change of one projection's weights, it is a rank-one LoRA,
``W + alpha * up @ down`` with ``down = r^T``, and a loader's adapter weight w is the operator's alpha (w = 1:
alpha 1, active at every sampling step; negative weights remove the mode):

- ``qkv``: A (I + alpha u u^T) is ``alpha (W u) u^T`` on each of to_q, to_k and to_v: always exact.
- ``ov``: ``W_o^h dV^h = s_h l r^T`` on to_v, solved per head by least squares (``dV^h = pinv(W_o^h) s_h l
  r^T``): exact where l lies in the column space of every W_o^h with s_h != 0, i.e. for per-head directions
  (there ``dV^h = (W_v^h r) r^T``) and single-head layers.
- ``qk``: ``scale [W_q^h; b_q^h]^T dK^h = [s_h l; 0] r^T`` on to_k, the same way (the query bias, if any, adds a
  per-key logit term): exact only where W_q^h spans the channels, i.e. one head as wide as the layer.

``relative_error`` is ||realised - intended change of the decomposed matrices||_F / ||intended||_F over all
heads (0 up to rounding where exact). Inexact sliders are refused unless ``approximate=True``; their metadata
then names the error. Operators that change no weights, and edits limited to steps t >= t_edit, are refused
(``check_static``).

Formats (``FORMATS``): ``diffusers`` (``<prefix>.<module>.lora_A.weight`` (r, in) and ``lora_B.weight`` (out, r),
prefix ``unet`` or ``transformer``; no alphas: scale 1), the layout ``pipe.load_lora_weights`` reads, and
``kohya`` (diffusers' own ``convert_state_dict_to_kohya``: ``lora_unet_<path>.lora_down.weight``,
``lora_up.weight`` and ``alpha`` = rank), which A1111, Forge and ComfyUI read. A file holds its sliders as one
adapter (one rank-k LoRA), or as a pack: k adapters, keys ``<adapter>/<key>``, loaded by ``load_sliders``.
The safetensors metadata ``eigenedit_lora`` (JSON) names the model, each layer's weight hash, decomposition,
head, direction, unit strength and error.

Reading (``read_lora``) accepts these files and foreign PEFT/diffusers or kohya LoRAs of linear layers; kohya
names go through diffusers' converter. ``merged`` adds ``w * up @ down`` to the weights (and restores them): the
same path for every model, UNet2DModel included, which has no LoRA loader in diffusers.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from eigenedit.core.attention import AttentionWeights, get_attention_module, read_attention_weights
from eigenedit.core.cache import weights_digest
from eigenedit.core.directions import Directions
from eigenedit.core.io import atomic_write
from eigenedit.core.operators import layer_modes

Reader = Callable[..., AttentionWeights]  # (layer, dtype, copy) -> a layer's weights: a model's attention_weights
FORMAT = "eigenedit.lora/1"
METADATA_KEY = "eigenedit_lora"
FORMATS = ("diffusers", "kohya")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
EXACT_TOLERANCE = 1e-6  # relative error below which a slider is exact (float32 directions leave ~1e-8)
UNIT_STRENGTH = "adapter weight w = eigenedit spectral alpha w, active at every step"
PACK_SEPARATOR = "/"
NOT_STATIC = {
    "shift": "shift adds alpha * ||h|| * u, an offset scaled by each sample's own hidden-state norm at each step",
    "scale": "scale multiplies the hidden state at its edit location, which is no layer's weight",
    "xspace": "xspace moves x_t along a Jacobian direction recomputed at every step",
}


def check_static(operator: str | None, t_edit: int | None) -> None:
    """Refuse (ValueError, one line) what no static weight change expresses: an operator other than spectral, or
    an edit limited to steps t >= t_edit > 0 (a LoRA acts at every step)."""
    if operator not in (None, "spectral") and operator in NOT_STATIC:
        raise ValueError(f"--operator {operator} cannot be exported as a LoRA: {NOT_STATIC[operator]}; use spectral")
    if operator not in (None, "spectral"):
        raise ValueError(f"unknown operator {operator!r}; a LoRA holds spectral edits")
    if t_edit is not None and t_edit > 0:
        raise ValueError(
            f"--t-edit {t_edit} edits only steps t >= {t_edit}, but a LoRA changes the weights at every step; "
            "drop --t-edit (or give 0)"
        )


def denoiser_prefix(denoiser: torch.nn.Module) -> str:
    """The key prefix diffusers' loaders use for a denoiser: ``unet`` for UNets, ``transformer`` otherwise."""
    return "unet" if "UNet" in type(denoiser).__name__ else "transformer"


@dataclass
class Slider:
    """One direction's weight change at unit strength: ``deltas`` maps a module path (``<layer>.to_v``) to
    (down (1, in), up (out, 1)), float64; ``error`` is the relative error of the realised change."""

    name: str
    layer: str
    decomposition: str
    head: int | None
    direction: int
    value: float
    label: str
    layer_sha256: str
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]
    error: float

    @property
    def exact(self) -> bool:
        return self.error <= EXACT_TOLERANCE

    def describe(self) -> dict:
        """The slider's entry in a file's metadata."""
        return {
            "adapter": self.name,
            "layer": self.layer,
            "layer_sha256": self.layer_sha256,
            "decomposition": self.decomposition,
            "head": self.head,
            "direction": self.direction,
            "value": self.value,
            "label": self.label,
            "modules": sorted(self.deltas),
            "exact": self.exact,
            "relative_error": self.error,
        }


def adapter_name(layer: str, decomposition: str, head: int | None, direction: int) -> str:
    """A PEFT-safe adapter name (letters, digits, underscores) naming a slider's origin."""
    text = f"{layer}_{decomposition}" + ("" if head is None else f"_head{head}") + f"_{direction}"
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _solve(systems: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Least squares per head, G_h c_h = t_h: (c stacked over heads, relative residual over all heads)."""
    parts, residual, norm = [], 0.0, 0.0
    for g, t in zip(systems, targets, strict=True):
        c = torch.zeros(g.shape[1], dtype=g.dtype) if not t.any() else torch.linalg.pinv(g) @ t
        parts.append(c)
        residual += float((g @ c - t).pow(2).sum())
        norm += float(t.pow(2).sum())
    return torch.cat(parts), math.sqrt(residual / norm) if norm > 0 else 0.0


def weight_edits(unet: torch.nn.Module, directions: Directions, read: Reader | None = None) -> list[Slider]:
    """The unit-strength weight change of every direction of ``directions`` in its own layer of ``unet`` (see
    the module docstring); ``read(layer, dtype, copy)``: how the model reads a layer's weights (default
    ``read_attention_weights``); each slider's ``layer_sha256`` is ``cache.weights_digest`` of the layer's float32
    weights. Raises ValueError where the layer or the directions cannot be a LoRA."""
    meta = directions.metadata
    layer = meta.get("layer")
    if not layer:
        raise ValueError("the directions name no attention layer (metadata 'layer'), so no weights to change")
    module = get_attention_module(unet, layer)
    names = ("to_q", "to_k", "to_v")
    if not all(isinstance(getattr(module, n, None), torch.nn.Linear) for n in names):
        raise ValueError(
            f"layer {layer!r} ({type(module).__name__}) has no to_q/to_k/to_v linear projections (ADM blocks fuse "
            "them in one convolution): LoRA export supports diffusers attention layers"
        )
    # float32 as the model holds it (shared, not copied): the hash the directions cache uses, and the fold check
    native = (
        read_attention_weights(unet, layer, torch.float32, False) if read is None else read(layer, torch.float32, False)
    )
    weights = native.to(torch.float64)
    modes = layer_modes(directions, weights)  # refuses what spectral refuses (fold-norm, random, qkv per head)
    projections = [getattr(module, n).weight.detach() for n in names]
    folded = not all(torch.equal(w, p.float()) for w, p in zip((native.q, native.k), projections, strict=False))
    raw = [p.double() for p in projections] if folded else [weights.q, weights.k, weights.v]
    if folded and (modes.kind == "qk" or (modes.kind == "qkv" and directions.partners is not None)):
        raise ValueError(
            f"layer {layer!r} normalises q and k per token (RMS/LayerNorm): a change of to_k is renormalised, so "
            f"no static weight change gives this {meta.get('decomposition')} edit; export qkv or ov directions"
        )
    digest = weights_digest(native)
    heads, d, inner = weights.heads, weights.head_dim, weights.q.shape[0]
    scale = float(getattr(module, "scale", d**-0.5))
    q_bias = getattr(module.to_q, "bias", None)
    indices = meta.get("indices") or list(range(len(directions)))
    out = []
    for i in range(len(directions)):
        right, left, s = modes.right[i], modes.left[i], modes.strengths[i]
        down = right[None]
        if modes.kind == "qkv":
            if directions.partners is None:  # s * left = A u: the raw weights (qk norm scales are not in them)
                ups = [w @ right for w in raw]
            else:
                ups = list((s[0] * left).split(inner))
            deltas = {f"{layer}.{n}": (down, up[:, None]) for n, up in zip(names, ups, strict=True)}
            error = 0.0
        elif modes.kind == "ov":
            systems = [weights.o[:, h * d : (h + 1) * d] for h in range(heads)]
            up, error = _solve(systems, [s[h] * left for h in range(heads)])
            deltas = {f"{layer}.to_v": (down, up[:, None])}
        else:
            bias = torch.zeros(inner, dtype=torch.float64) if q_bias is None else q_bias.detach().double()
            rows = [slice(h * d, (h + 1) * d) for h in range(heads)]
            systems = [scale * torch.cat([weights.q[r].T, bias[r][None]]) for r in rows]
            zero = torch.zeros(1, dtype=torch.float64)
            up, error = _solve(systems, [torch.cat([s[h] * left, zero]) for h in range(heads)])
            deltas = {f"{layer}.to_k": (down, up[:, None])}
        head, decomposition, index = meta.get("head"), str(meta.get("decomposition")), int(indices[i])
        out.append(
            Slider(
                adapter_name(layer, decomposition, head, index),
                layer,
                decomposition,
                head,
                index,
                float(directions.values[i]),
                directions.labels[i],
                digest,
                deltas,
                error,
            )
        )
    return out


def check_exact(sliders: Sequence[Slider], approximate: bool = False) -> None:
    """Refuse inexact sliders (one line naming the worst and its measured error) unless ``approximate``."""
    worst = max(sliders, key=lambda s: s.error, default=None)
    if worst is None or worst.exact or approximate:
        return
    hint = "--head N or qkv give exact ov edits" if worst.decomposition.startswith("ov") else "qkv is always exact"
    raise ValueError(
        f"{worst.decomposition} direction {worst.direction} of {worst.layer} is no exact weight change "
        f"(relative error {worst.error:.1%}: {'merged heads' if worst.head is None else 'this head'} cannot carry it "
        f"through one projection); {hint}, or --approximate exports it anyway"
    )


def peft_state_dict(sliders: Sequence[Slider], prefix: str, dtype: torch.dtype = torch.float32) -> dict:
    """One adapter holding every slider: per module, lora_A (r, in) and lora_B (out, r), diffusers keys."""
    downs, ups = defaultdict(list), defaultdict(list)
    for slider in sliders:
        for module, (down, up) in slider.deltas.items():
            downs[module].append(down)
            ups[module].append(up)
    tensors = {}
    for module in downs:
        tensors[f"{prefix}.{module}.lora_A.weight"] = torch.cat(downs[module]).to(dtype).contiguous()
        tensors[f"{prefix}.{module}.lora_B.weight"] = torch.cat(ups[module], dim=1).to(dtype).contiguous()
    return tensors


def lora_tensors(sliders: Sequence[Slider], fmt: str, prefix: str, pack: bool, dtype: torch.dtype) -> dict:
    """The tensors of a LoRA file of ``sliders`` (``FORMATS``; a pack prefixes each slider's keys with its name)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown LoRA format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "kohya" and prefix != "unet":
        raise ValueError(
            "kohya files of SD3/Flux/DiT transformers use the original checkpoints' block names, not diffusers'; "
            "export --format diffusers for this model"
        )
    names = [s.name for s in sliders]
    if len(set(names)) != len(names):
        raise ValueError(f"a slider is given twice: {sorted(n for n in names if names.count(n) > 1)[0]}")

    def convert(tensors: dict) -> dict:
        if fmt == "diffusers":
            return tensors
        from diffusers.utils import convert_state_dict_to_kohya

        return {k: v.contiguous() for k, v in convert_state_dict_to_kohya(tensors).items()}

    if not pack:
        return convert(peft_state_dict(sliders, prefix, dtype))
    return {
        f"{s.name}{PACK_SEPARATOR}{k}": v
        for s in sliders
        for k, v in convert(peft_state_dict([s], prefix, dtype)).items()
    }


def save_lora(
    sliders: Sequence[Slider],
    path: str | Path,
    fmt: str = "diffusers",
    prefix: str = "unet",
    pack: bool = False,
    dtype: torch.dtype = torch.float32,
    model_id: str = "",
) -> dict:
    """Write ``sliders`` as one LoRA file, atomically; returns the metadata written (``METADATA_KEY``)."""
    if not sliders:
        raise ValueError("no directions to export")
    tensors = lora_tensors(sliders, fmt, prefix, pack, dtype)
    meta = {
        "format": FORMAT,
        "lora_format": fmt,
        "prefix": prefix,
        "pack": pack,
        "model": model_id,
        "unit_strength": UNIT_STRENGTH,
        "dtype": str(dtype).removeprefix("torch."),
        "sliders": [s.describe() for s in sliders],
    }
    header = {"format": "pt", METADATA_KEY: json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return meta


def to_lora(
    unet: torch.nn.Module,
    directions: Directions | Sequence[Directions],
    path: str | Path,
    fmt: str = "diffusers",
    pack: bool = False,
    dtype: torch.dtype = torch.float32,
    model_id: str = "",
    approximate: bool = False,
    read: Reader | None = None,
) -> list[Slider]:
    """Export every direction of ``directions`` (one set, or several: e.g. one per layer) as a LoRA file of the
    denoiser ``unet``; returns the sliders written."""
    sets = [directions] if isinstance(directions, Directions) else list(directions)
    sliders = [s for d in sets for s in weight_edits(unet, d, read)]
    check_exact(sliders, approximate)
    save_lora(sliders, path, fmt, denoiser_prefix(unet), pack, dtype, model_id)
    return sliders


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class LoraFile:
    """A LoRA file read for one denoiser: ``adapters`` maps an adapter name to {module path: (down (r, in), up
    (out, r))} with each module's alpha / r already in ``up``; ``metadata``: eigenedit's, or {} (foreign files)."""

    path: Path
    adapters: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]
    metadata: dict

    def labels(self) -> dict[str, str]:
        """A short label per adapter: its slider's decomposition and direction, or the file's name."""
        described = {s.get("adapter"): s for s in self.metadata.get("sliders", []) if isinstance(s, dict)}
        out = {}
        for name in self.adapters:
            s = described.get(name)
            if s and len(self.adapters) > 1:
                head = "" if s.get("head") is None else f" head {s['head']}"
                out[name] = f"{s.get('decomposition')}{head} {s.get('direction')} {s.get('label') or ''}".strip()
            else:
                out[name] = self.path.stem
        return out


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"{path} is not a LoRA file: it cannot be read as safetensors ({first})") from None
    return tensors, header


def _fold_kohya_alphas(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya keys with each ``alpha`` / rank multiplied into ``lora_up`` (and the alphas dropped)."""
    out = {k: v for k, v in tensors.items() if not k.endswith(".alpha")}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            base = key.removesuffix(".lora_down.weight")
            alpha = tensors.get(f"{base}.alpha")
            up = f"{base}.lora_up.weight"
            if alpha is not None and up in out:
                out[up] = out[up] * (float(alpha) / down.shape[0])
    return out


def _peft_scales(header: dict[str, str], prefix: str) -> tuple[float | None, dict, bool]:
    """(lora_alpha, alpha_pattern, use_rslora) of diffusers' ``lora_adapter_metadata``, where a file has it."""
    raw = header.get("lora_adapter_metadata")
    if not raw:
        return None, {}, False
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        return None, {}, False
    config = {k.removeprefix(f"{prefix}."): v for k, v in config.items()} if isinstance(config, dict) else {}
    alpha = config.get("lora_alpha")
    return (
        (float(alpha) if isinstance(alpha, int | float) else None),
        config.get("alpha_pattern") or {},
        bool(config.get("use_rslora")),
    )


KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")


def _to_modules(
    tensors: dict[str, torch.Tensor], header: dict[str, str], prefix: str, source: Path, config
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One adapter's tensors (diffusers/PEFT or kohya keys) -> {module: (down, up)} with alpha / r in up."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    if any("dora_scale" in k or "lora_magnitude_vector" in k for k in tensors):
        raise ValueError(f"{source} is a DoRA file; --lora applies plain LoRAs")
    if any(k.startswith(("lora_te", "text_encoder")) for k in tensors):
        raise ValueError(f"{source} also changes the text encoder, which --lora does not apply (denoiser LoRAs only)")
    kohya = any(k.startswith("lora_unet_") for k in tensors)
    if kohya:
        from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

        try:
            tensors, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(_fold_kohya_alphas(tensors), unet_config=config)
        except (ValueError, KeyError, IndexError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"{source}: diffusers cannot convert its kohya keys ({first})") from None
        prefix = "unet"
    stripped = {}
    for key, value in tensors.items():
        for head in (f"{prefix}.", "base_model.model."):
            key = key.removeprefix(head)
        stripped[key] = value
    if stripped and not all(".lora_A." in k or ".lora_B." in k for k in stripped):
        stripped = convert_unet_state_dict_to_peft(stripped)
    alpha, pattern, rslora = (None, {}, False) if kohya else _peft_scales(header, prefix)
    pairs: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in stripped.items():
        match = KEY.match(key)
        if match is None:
            raise ValueError(f"{source} holds {key!r}, which is no LoRA weight (lora_A/lora_B or lora_down/lora_up)")
        pairs[match["module"]][match["side"]] = value
    modules = {}
    for module, sides in pairs.items():
        if set(sides) != {"A", "B"}:
            raise ValueError(f"{source}: module {module!r} has lora_{next(iter(sides))} without its partner")
        down, up = sides["A"], sides["B"]
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise ValueError(
                f"{source}: module {module!r} has lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)}; --lora "
                "applies LoRAs of linear layers (2-D, rank-matched)"
            )
        if not (down.is_floating_point() and up.is_floating_point()):
            raise ValueError(f"{source}: module {module!r} holds non-float LoRA weights")
        rank = down.shape[0]
        module_alpha = pattern.get(module, alpha)
        factor = 1.0 if module_alpha is None else module_alpha / (math.sqrt(rank) if rslora else rank)
        modules[module] = (down.double(), up.double() * factor)
    if not modules:
        raise ValueError(f"{source} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)")
    return modules


def read_lora(path: str | Path, denoiser: torch.nn.Module) -> LoraFile:
    """Read and check a LoRA file for ``denoiser``: ValueError (one line naming the file) where it is missing,
    no safetensors, no LoRA, or a LoRA of modules or shapes this denoiser does not have."""
    path = Path(path)
    tensors, header = _read_file(path)
    metadata = {}
    if METADATA_KEY in header:
        try:
            metadata = json.loads(header[METADATA_KEY])
        except json.JSONDecodeError:
            raise ValueError(f"{path} has corrupt eigenedit metadata ({METADATA_KEY} is not JSON)") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise ValueError(f"{path} has corrupt eigenedit metadata (expected format {FORMAT})")
    prefix = denoiser_prefix(denoiser)
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    if metadata.get("pack"):
        for key, value in tensors.items():
            name, sep, rest = key.partition(PACK_SEPARATOR)
            if not sep:
                raise ValueError(f"{path} is a slider pack, but its key {key!r} names no slider")
            groups[name][rest] = value
    else:
        groups[re.sub(r"[^A-Za-z0-9_]", "_", path.stem)] = tensors
    config = getattr(denoiser, "config", None)
    adapters = {name: _to_modules(group, header, prefix, path, config) for name, group in groups.items()}
    for modules in adapters.values():
        check_modules(modules, denoiser, path)
    return LoraFile(path, adapters, metadata)


def check_modules(modules: dict[str, tuple[torch.Tensor, torch.Tensor]], denoiser: torch.nn.Module, source) -> None:
    """Every module is a linear layer of ``denoiser`` of the LoRA's shape, and every value is finite."""
    for module, (down, up) in modules.items():
        try:
            layer = denoiser.get_submodule(module)
        except AttributeError:
            raise ValueError(
                f"{source} changes module {module!r}, which this {type(denoiser).__name__} does not have (a LoRA "
                "for another model?)"
            ) from None
        if not isinstance(layer, torch.nn.Linear):
            raise ValueError(
                f"{source} changes {module!r}, a {type(layer).__name__}: --lora applies LoRAs of linear layers"
            )
        if (up.shape[0], down.shape[1]) != (layer.out_features, layer.in_features):
            raise ValueError(
                f"{source} changes {module!r} as a {down.shape[1]} -> {up.shape[0]} map, but it is "
                f"{layer.in_features} -> {layer.out_features} here (a LoRA for another model?)"
            )
        if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise ValueError(f"{source} holds non-finite LoRA weights (NaN or inf) for {module!r}")


def lora_deltas(parts: Sequence[tuple[dict, float]]) -> dict[str, torch.Tensor]:
    """sum of w * up @ down per module (float64) over (modules, w) pairs."""
    total: dict[str, torch.Tensor] = {}
    for modules, weight in parts:
        for module, (down, up) in modules.items():
            delta = float(weight) * (up @ down)
            total[module] = total[module] + delta if module in total else delta
    return total


@contextmanager
def merged(denoiser: torch.nn.Module, parts: Sequence[tuple[dict, float]]) -> Iterator[None]:
    """Inside: every module's weight is W + sum w * up @ down (computed in float64, rounded once); the original
    weights are restored on exit. ``parts``: ({module: (down, up)}, w) pairs, e.g. a LoraFile's adapters."""
    saved = {}
    try:
        with torch.no_grad():
            for module, delta in lora_deltas(parts).items():
                weight = denoiser.get_submodule(module).weight
                saved[module] = weight.detach().clone()
                weight.copy_((weight.double() + delta.to(weight.device)).to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for module, original in saved.items():
                denoiser.get_submodule(module).weight.copy_(original)


def load_sliders(pipe, path: str | Path) -> list[str]:
    """Load an eigenedit LoRA file into a diffusers pipeline with its own ``load_lora_weights``: a pack as one
    adapter per slider, any other file as one adapter named after the file. Returns the adapter names."""
    path = Path(path)
    tensors, header = _read_file(path)
    metadata = json.loads(header.get(METADATA_KEY, "{}"))
    if not metadata.get("pack"):
        name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
        pipe.load_lora_weights(str(path), adapter_name=name)
        return [name]
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in tensors.items():
        name, _, rest = key.partition(PACK_SEPARATOR)
        groups[name][rest] = value
    for name, group in groups.items():
        pipe.load_lora_weights(group, adapter_name=name)
    return list(groups)
