"""The model interface every sampler and operator works with: a UNet, its DDIM scheduler and what it predicts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDIMScheduler, UNet2DModel

from eigenedit.core import operators
from eigenedit.core.attention import (
    AttentionLayer,
    AttentionWeights,
    get_attention_module,
    list_attention_layers,
    read_attention_weights,
)
from eigenedit.core.defaults import read_edit_defaults
from eigenedit.core.factorize import DECOMPOSITIONS

EDIT_DEFAULTS_FILE = "eigenedit.json"  # optional per-model defaults: layer, decomposition, location, t_edit, alphas


@dataclass
class DiffusionModel:
    """An unconditional diffusers UNet with the DDIM scheduler built from its training scheduler's config."""

    unet: UNet2DModel
    scheduler: DDIMScheduler
    model_id: str
    prediction_type: str = "epsilon"  # what the UNet outputs; ``predict_eps`` converts it
    edit_defaults: dict = field(default_factory=dict)  # from the model folder's eigenedit.json, if any
    latent: ClassVar[bool] = False  # True where the UNet works on VAE latents (see ``encode`` / ``decode``)
    # capabilities (eigenedit.core.model.EditableModel); the adapters that have them say so
    flow_matching: ClassVar[bool] = False  # True: a velocity model (set_timesteps, predict_velocity)
    conditional: ClassVar[bool] = False  # True: takes a prompt (set_prompt)
    default_guidance: ClassVar[float | None] = None  # the guidance scale of a conditional model

    def unet_output(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The UNet's raw output on (x, t); conditional models add their conditioning (and guidance) here."""
        return self.unet(x, t).sample

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The UNet's noise prediction, converted from v or x0 prediction where needed."""
        t = torch.as_tensor(t, device=x.device)
        out = self.unet_output(x, t)[:, : x.shape[1]]  # models that also predict variances
        if self.prediction_type == "epsilon":
            return out
        abar = self.scheduler.alphas_cumprod.to(x.device)[t.long()].to(x.dtype)
        abar = abar.reshape(-1, *([1] * (x.ndim - 1)))
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        if self.prediction_type == "sample":
            return (x - abar.sqrt() * out) / (1 - abar).sqrt()
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    @property
    def train_timesteps(self) -> int:
        """The number of timesteps the model was trained on (the most DDIM steps, the largest t_edit)."""
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return (self.unet.config.in_channels, h, w)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images; ``sample_shape`` unless the UNet works on latents."""
        return self.sample_shape

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> what the UNet works on (identity here; VAE latents for latent models)."""
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The output of ``sampling.sample`` -> images in [-1, 1]."""
        return x.clamp(-1, 1)

    def set_prompt(self, prompt: str = "", negative_prompt: str = "", guidance_scale: float | None = None) -> None:
        """Conditional models take a prompt; this one does not."""
        raise ValueError(f"{self.model_id!r} is unconditional: it takes no prompt")

    def set_difficulty(self, difficulty: int) -> None:
        """The terrain model's difficulty input; other models have none."""
        raise ValueError(
            f"--difficulty needs the terrain model (terrain128); {self.model_id!r} has no difficulty input"
        )

    def attention_layers(self) -> list[AttentionLayer]:
        """Every self-attention layer with its channels, heads and (from one dry forward pass) resolution."""
        return list_attention_layers(self.unet)

    def attention_weights(self, layer: str, dtype: torch.dtype = torch.float64, copy: bool = True) -> AttentionWeights:
        """The projections of one self-attention layer (``read_attention_weights``: diffusers modules, ADM blocks)."""
        return read_attention_weights(self.unet, layer, dtype, copy)

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers layout (unet/, scheduler/) that ``load_model`` reads."""
        self.unet.save_pretrained(Path(path) / "unet")
        DDIMScheduler.from_config(self.scheduler.config, prediction_type=self.prediction_type).save_pretrained(
            Path(path) / "scheduler"
        )


def read_model_defaults(folder: str | Path, model: DiffusionModel, base: dict | None = None) -> dict:
    """``base`` overridden by ``folder``'s eigenedit.json, if it has one, checked whole at load time against
    ``model``: the types (``read_edit_defaults``), then every name (operator, decomposition, the operators of
    ``operator_alphas``, a layer and a location of this model) and t_edit and steps within its train timesteps.
    A problem is a ValueError naming the file and the key."""
    path = Path(folder) / EDIT_DEFAULTS_FILE
    try:
        present = path.is_file()
    except OSError:  # a hub id or a name too long for a path: no local file
        present = False
    if not present:
        return dict(base or {})
    data = read_edit_defaults(path)

    def refuse(key: str, why: str) -> None:
        raise ValueError(f"{path}: {key!r} {why}"[:400])

    if "operator" in data and data["operator"] not in operators.OPERATORS:
        refuse("operator", f"must be one of {', '.join(operators.OPERATORS)}, got {data['operator']!r}")
    decompositions = (*DECOMPOSITIONS, "random")
    if "decomposition" in data and data["decomposition"] not in decompositions:
        refuse("decomposition", f"must be one of {', '.join(decompositions)}, got {data['decomposition']!r}")
    per_operator = data.get("operator_alphas", {})
    if not isinstance(per_operator, dict):
        refuse("operator_alphas", f"must map operator names to lists of alphas, got {per_operator!r}")
    for name, alphas in per_operator.items():
        if name not in operators.OPERATORS:
            refuse("operator_alphas", f"names an unknown operator {name!r} ({', '.join(operators.OPERATORS)})")
        finite = isinstance(alphas, list) and bool(alphas)
        finite = finite and all(isinstance(a, int | float) and not isinstance(a, bool) for a in alphas)
        if not finite or not all(math.isfinite(a) for a in alphas):
            refuse("operator_alphas", f"of {name!r} must be a non-empty list of finite numbers, got {alphas!r}")
    for key in ("t_edit", "steps"):
        if key in data and data[key] > model.train_timesteps:
            refuse(key, f"is {data[key]}, more than this model's {model.train_timesteps} train timesteps")
    for key, find in (("layer", get_attention_module), ("location", operators.get_module)):
        if key in data:
            try:
                find(model.unet, data[key])
            except ValueError as err:
                refuse(key, f"does not fit this model: {err}")
    return {**(base or {}), **data}


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*/*.bin", "*/*.pt", "*/*.pth", "*/*.ckpt")


def pickle_refusal(source: str | Path, model_id: str) -> ValueError | None:
    """The error for a local model folder that holds only pickle weights (diffusers' ``.bin``), loaded without
    ``allow_pickle``; None where it has none (another problem)."""
    local = Path(source)
    if not local.is_dir():
        return None
    found = next((p for pattern in PICKLE_WEIGHTS for p in sorted(local.glob(pattern))), None)
    if found is None:
        return None
    return ValueError(
        f"cannot load model {model_id!r}: it has pickle weights ({found.relative_to(local)}) and no safetensors, and "
        "loading a pickle can run arbitrary code; pass --allow-pickle if you trust its source (weights_only "
        "loading), or convert it to safetensors"
    )


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' own log lines while loading (its errors become one line of ours)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
