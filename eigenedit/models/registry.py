"""Load a diffusion model (UNet + DDIM scheduler) from a shipped short name, a local folder or a hub id."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDIMScheduler, UNet2DModel

from eigenedit.models.adm import ADM_CONFIG_FILE, load_adm_folder
from eigenedit.models.base import DiffusionModel, pickle_refusal, quiet_diffusers, read_model_defaults
from eigenedit.models.pipelines import FAMILIES, load_pipeline_model
from eigenedit.models.stable_diffusion import is_text_to_image, load_stable_diffusion, pipeline_index

PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"
SHIPPED_MODELS = {name: PRETRAINED_DIR / name for name in ("shapes32", "fashion32", "faces64")}
DEFAULT_MODEL = "faces64"
TERRAIN_MODEL = "terrain128"  # read from the adaptive-terrain-diffusion package by eigenedit.terrain


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
    Weights load from safetensors only; ``allow_pickle=True`` also reads pickle weights (diffusers' ``.bin``, with
    ``weights_only``). A folder holding just a UNet (config.json + weights) gets a default DDPM scheduler. A
    StableDiffusionPipeline folder or hub id (its model_index.json lists a text encoder and a VAE) gives a
    ``StableDiffusionModel``; StableDiffusionXLPipeline, DiTPipeline, PixArtAlphaPipeline, StableDiffusion3Pipeline
    and FluxPipeline folders give the ``eigenedit.models.pipelines`` models; other pipelines are one clear error.
    """
    if id_or_path == TERRAIN_MODEL or id_or_path.endswith(".onnx"):
        from eigenedit.models.terrain import load_terrain_model  # imported here: it reads onnx, an optional extra

        return load_terrain_model(None if id_or_path == TERRAIN_MODEL else id_or_path, device)
    source = resolve_model_path(id_or_path)
    local = Path(source)
    try:
        exists = local.exists()
    except OSError as err:  # e.g. a name too long for a path
        raise ValueError(f"unknown model {id_or_path[:80]!r}: {err.strerror or err}") from None
    if not exists and source.count("/") != 1:
        raise ValueError(
            f"unknown model {id_or_path!r}: not a shipped model ({', '.join([*SHIPPED_MODELS, TERRAIN_MODEL])}), "
            "an existing local folder, or a hub id of the form owner/name"
        )
    index = pipeline_index(source)
    if index is not None and index.get("_class_name") in FAMILIES:  # SDXL, DiT, PixArt-alpha, SD3, Flux
        return load_pipeline_model(source, id_or_path, index, device, allow_pickle)
    if is_text_to_image(index) or (index is not None and "transformer" in index):
        return load_stable_diffusion(source, id_or_path, index, device, allow_pickle)
    # safetensors only, unless allow_pickle: then diffusers prefers safetensors and reads a .bin with weights_only
    weights = {"use_safetensors": None if allow_pickle else True}
    try:
        with quiet_diffusers():
            if local.is_dir() and (local / ADM_CONFIG_FILE).is_file():
                unet, scheduler = load_adm_folder(local, allow_pickle=allow_pickle)
                prediction_type = "epsilon"
            elif local.is_dir() and (local / "config.json").is_file() and not (local / "unet").is_dir():
                unet = UNet2DModel.from_pretrained(source, **weights)
                scheduler = DDIMScheduler(num_train_timesteps=1000)
                prediction_type = "epsilon"
            else:
                unet = UNet2DModel.from_pretrained(source, subfolder="unet", **weights)
                scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
                prediction_type = scheduler.config.prediction_type
    except (OSError, ValueError) as err:
        refusal = None if allow_pickle else pickle_refusal(local, id_or_path)
        if refusal is not None:
            raise refusal from None
        shipped = ", ".join(SHIPPED_MODELS)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot load model {id_or_path!r}: {first} (shipped models: {shipped}; "
            "otherwise give a local diffusers folder, or a hub id on a machine with internet)"
        ) from None
    unet.eval().requires_grad_(False).to(device)
    # every sampler here works on epsilon: the UNet's own output type is converted by DiffusionModel.predict_eps
    scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="epsilon")
    model = DiffusionModel(unet, scheduler, id_or_path, prediction_type)
    model.edit_defaults = read_model_defaults(local, model)
    return model
