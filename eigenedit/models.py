"""Load a diffusion model (UNet + DDIM scheduler) from a shipped short name, a local folder or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDIMScheduler, UNet2DModel

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
SHIPPED_MODELS = {"shapes32": PRETRAINED_DIR / "shapes32", "fashion32": PRETRAINED_DIR / "fashion32"}
DEFAULT_MODEL = "shapes32"
TERRAIN_MODEL = "terrain128"  # read from the adaptive-terrain-diffusion package by eigenedit.terrain
ADM_CONFIG_FILE = "adm_config.json"  # a guided-diffusion checkpoint folder (eigenedit.adm)
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
        """The output of ``editing.sample`` -> images in [-1, 1]."""
        return x.clamp(-1, 1)

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


def load_model(id_or_path: str = DEFAULT_MODEL, device: str = "cpu", allow_pickle: bool = False) -> DiffusionModel:
    """Load ``unet/`` and ``scheduler/`` of a DDPM-style pipeline (e.g. google/ddpm-ema-celebahq-256).

    ``terrain128`` (or a path to an exported consistency-model ``.onnx``) gives the terrain model of
    adaptive-terrain-diffusion (``eigenedit.terrain``).
    A folder with ``adm_config.json`` gives a guided-diffusion (ADM) UNet (``eigenedit.adm.load_adm_folder``; its
    pickle ``.pt`` weights load only with ``allow_pickle=True``).
    A folder holding just a UNet (config.json + weights) gets a default DDPM scheduler. A StableDiffusionPipeline
    folder or hub id (its model_index.json lists a text encoder and a VAE) gives a ``StableDiffusionModel``.
    """
    if id_or_path == TERRAIN_MODEL or id_or_path.endswith(".onnx"):
        from eigenedit.terrain import load_terrain_model  # imported here: it builds on this module

        return load_terrain_model(None if id_or_path == TERRAIN_MODEL else id_or_path, device)
    source = resolve_model_path(id_or_path)
    local = Path(source)
    if not local.exists() and source.count("/") != 1:
        raise ValueError(
            f"unknown model {id_or_path!r}: not a shipped model ({', '.join([*SHIPPED_MODELS, TERRAIN_MODEL])}), "
            "an existing local folder, or a hub id of the form owner/name"
        )
    from eigenedit import stable_diffusion  # imported here: it builds on this module

    index = stable_diffusion.pipeline_index(source)
    if stable_diffusion.is_text_to_image(index):
        return stable_diffusion.load_stable_diffusion(source, id_or_path, index, device)
    try:
        if local.is_dir() and (local / ADM_CONFIG_FILE).is_file():
            from eigenedit.adm import load_adm_folder  # imported here: it builds on eigenedit.attention

            unet, scheduler = load_adm_folder(local, allow_pickle=allow_pickle)
            prediction_type = "epsilon"
        elif local.is_dir() and (local / "config.json").is_file() and not (local / "unet").is_dir():
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
