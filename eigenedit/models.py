"""Load a diffusion model (UNet + DDIM scheduler) from a shipped short name, a local folder or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
SHIPPED_MODELS = {"shapes32": PRETRAINED_DIR / "shapes32"}
DEFAULT_MODEL = "shapes32"
EDIT_DEFAULTS_FILE = "eigenedit.json"  # optional per-model defaults: layer, decomposition, location, t_edit, alphas


@dataclass
class DiffusionModel:
    """An unconditional diffusers UNet with the DDIM scheduler built from its training scheduler's config."""

    unet: UNet2DModel
    scheduler: DDIMScheduler
    model_id: str
    prediction_type: str = "epsilon"  # what the UNet outputs; ``predict_eps`` converts it
    edit_defaults: dict = field(default_factory=dict)  # from the model folder's eigenedit.json, if any

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The UNet's noise prediction, converted from v or x0 prediction where needed."""
        t = torch.as_tensor(t, device=x.device)
        out = self.unet(x, t).sample[:, : x.shape[1]]  # models that also predict variances
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

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers layout (unet/, scheduler/) that ``load_model`` reads."""
        self.unet.save_pretrained(Path(path) / "unet")
        DDIMScheduler.from_config(self.scheduler.config, prediction_type=self.prediction_type).save_pretrained(
            Path(path) / "scheduler"
        )


def resolve_model_path(id_or_path: str) -> str:
    """A shipped short name -> its folder; anything else is returned unchanged (local folder or hub id)."""
    if id_or_path in SHIPPED_MODELS:
        return str(SHIPPED_MODELS[id_or_path])
    return id_or_path


def load_model(id_or_path: str = DEFAULT_MODEL, device: str = "cpu") -> DiffusionModel:
    """Load ``unet/`` and ``scheduler/`` of a DDPM-style pipeline (e.g. google/ddpm-ema-celebahq-256).

    A folder holding just a UNet (config.json + weights) gets a default DDPM scheduler.
    """
    source = resolve_model_path(id_or_path)
    local = Path(source)
    if not local.exists() and source.count("/") != 1:
        raise ValueError(
            f"unknown model {id_or_path!r}: not a shipped model ({', '.join(SHIPPED_MODELS)}), "
            "an existing local folder, or a hub id of the form owner/name"
        )
    try:
        if local.is_dir() and (local / "config.json").is_file() and not (local / "unet").is_dir():
            unet = UNet2DModel.from_pretrained(source)
            scheduler = DDIMScheduler(num_train_timesteps=1000)
            prediction_type = "epsilon"
        else:
            unet = UNet2DModel.from_pretrained(source, subfolder="unet")
            scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
            prediction_type = scheduler.config.prediction_type
    except (OSError, ValueError) as err:
        shipped = ", ".join(SHIPPED_MODELS)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot load model {id_or_path!r}: {first} (shipped models: {shipped}; "
            "otherwise give a local diffusers folder, or a hub id on a machine with internet)"
        ) from None
    unet.eval().requires_grad_(False).to(device)
    # every sampler here works on epsilon: the UNet's own output type is converted by DiffusionModel.predict_eps
    scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="epsilon")
    defaults_file = local / EDIT_DEFAULTS_FILE
    edit_defaults = json.loads(defaults_file.read_text()) if defaults_file.is_file() else {}
    return DiffusionModel(unet, scheduler, id_or_path, prediction_type, edit_defaults)
