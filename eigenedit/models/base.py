"""The model interface every sampler and operator works with: a UNet, its DDIM scheduler and what it predicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDIMScheduler, UNet2DModel

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

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers layout (unet/, scheduler/) that ``load_model`` reads."""
        self.unet.save_pretrained(Path(path) / "unet")
        DDIMScheduler.from_config(self.scheduler.config, prediction_type=self.prediction_type).save_pretrained(
            Path(path) / "scheduler"
        )
