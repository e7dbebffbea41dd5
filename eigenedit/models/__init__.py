"""Model adapters: diffusers DDPM UNets (``base``), guided-diffusion ADM (``adm``), the terrain consistency model
(``terrain``), Stable Diffusion (``stable_diffusion``), SDXL, DiT, PixArt-alpha, SD3 and Flux (``pipelines``);
``registry`` loads any of them by name, folder or hub id."""

from eigenedit.models.base import EDIT_DEFAULTS_FILE, DiffusionModel
from eigenedit.models.registry import (
    DEFAULT_MODEL,
    PRETRAINED_DIR,
    SHIPPED_MODELS,
    TERRAIN_MODEL,
    load_model,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "EDIT_DEFAULTS_FILE",
    "PRETRAINED_DIR",
    "SHIPPED_MODELS",
    "TERRAIN_MODEL",
    "DiffusionModel",
    "load_model",
    "resolve_model_path",
]
