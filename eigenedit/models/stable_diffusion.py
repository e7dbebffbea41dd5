"""Stable Diffusion (text-conditioned latent diffusion, diffusers ``UNet2DConditionModel``) for eigenedit.

``StableDiffusionModel`` is a ``DiffusionModel`` whose UNet works on VAE latents: ``sampling.sample``,
``edit_images`` and ``invert`` run unchanged in latent space, ``decode`` maps latents to images in [-1, 1] and
``encode`` images to latents (VAE mean times its scaling factor). ``predict_eps`` does classifier-free guidance
with the prompt of ``set_prompt``: one UNet pass on the batch stacked as [unconditional; conditional].

Edits and guidance: an edit shifts the module's output in *both* halves of that stacked batch, each sample's
alphas on its unconditional and its conditional copy (``operators.HiddenShift``): the edit changes the model, and
guidance steers the edited model as usual. (Shifting the conditional half alone would multiply the edit's effect
on eps by the guidance scale.)

The self-attention layers are the ``attn1`` of the transformer blocks (``attn2`` is the cross-attention to the
text); the default layer is the mid-block's, ``mid_block.attentions.0.transformer_blocks.0.attn1``, and the
default edit location the mid-block output (h-space), as for the unconditional models.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from eigenedit.core.attention import default_layer
from eigenedit.models.base import DiffusionModel, pickle_refusal, quiet_diffusers, read_model_defaults

DEFAULT_GUIDANCE = 7.5
PIPELINE_INDEX = "model_index.json"


@dataclass
class StableDiffusionModel(DiffusionModel):
    """UNet2DConditionModel + AutoencoderKL + text encoder and tokenizer + DDIM scheduler (SD 1.x / 2.x layout)."""

    vae: AutoencoderKL | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = DEFAULT_GUIDANCE
    latent: ClassVar[bool] = True
    conditional: ClassVar[bool] = True
    default_guidance: ClassVar[float] = DEFAULT_GUIDANCE
    _embeddings: torch.Tensor | None = field(default=None, repr=False)  # (2, L, D): [negative; prompt]

    def __post_init__(self) -> None:
        if self.vae is None or self.text_encoder is None or self.tokenizer is None:
            raise ValueError("a Stable Diffusion model needs a VAE, a text encoder and a tokenizer")

    def set_prompt(self, prompt: str = "", negative_prompt: str = "", guidance_scale: float | None = None) -> None:
        """The text every later ``predict_eps`` is conditioned on; guidance_scale <= 1 turns guidance off (None:
        DEFAULT_GUIDANCE)."""
        guidance_scale = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale
        if not isinstance(guidance_scale, int | float) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance scale must be a finite number, got {guidance_scale!r}")
        self.prompt, self.negative_prompt, self.guidance_scale = prompt, negative_prompt, float(guidance_scale)
        self._embeddings = None

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), L, D) text-encoder hidden states, padded to the tokenizer's length as diffusers does."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        ids = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return self.text_encoder(ids.input_ids.to(self.device))[0].to(self.dtype)

    def text_embeddings(self) -> torch.Tensor:
        """(2, L, D): the negative prompt's and the prompt's embeddings (computed once per ``set_prompt``)."""
        if self._embeddings is None:
            self._embeddings = self.encode_text([self.negative_prompt, self.prompt])
        return self._embeddings

    def unet_output(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The guided UNet output: uncond + scale * (cond - uncond), from one pass on [uncond; cond]."""
        emb = self.text_embeddings().to(x.device)
        batch = x.shape[0]
        if self.guidance_scale <= 1:
            return self.unet(x, t, encoder_hidden_states=emb[1:].expand(batch, -1, -1)).sample
        states = torch.cat([emb[:1].expand(batch, -1, -1), emb[1:].expand(batch, -1, -1)])
        uncond, cond = self.unet(torch.cat([x, x]), t, encoder_hidden_states=states).sample.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, h, w = self.sample_shape
        return (self.vae.config.out_channels, h * self.vae_scale_factor, w * self.vae_scale_factor)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> latents (the VAE posterior mean, times the VAE's scaling factor)."""
        images = images.to(self.device, self.vae.dtype)
        latents = self.vae.encode(images).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
        """Latents -> images in [-1, 1], a few at a time (VAE decoding at full resolution is memory-hungry)."""
        latents = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        parts = [self.vae.decode(latents[i : i + batch_size]).sample for i in range(0, len(latents), batch_size)]
        return torch.cat(parts).clamp(-1, 1).float()

    def save_pretrained(self, path: str | Path) -> None:
        """Write the StableDiffusionPipeline folder layout that ``load_model`` reads."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        DDIMScheduler.from_config(self.scheduler.config, prediction_type=self.prediction_type).save_pretrained(
            path / "scheduler"
        )
        index = {
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }
        (path / PIPELINE_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def pipeline_index(source: str) -> dict | None:
    """The model_index.json of a local folder or hub repo; None where there is none (a bare UNet folder/repo)."""
    local = Path(source)
    if local.exists():
        file = local / PIPELINE_INDEX
        return json.loads(file.read_text()) if file.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(source, PIPELINE_INDEX)).read_text())
    except EntryNotFoundError:  # a bare-UNet repo, or offline and not cached: the UNet loader takes over
        return None
    except OSError as err:  # unknown or gated repo, network errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load model {source!r}: {first}") from None


def is_text_to_image(index: dict | None) -> bool:
    """Whether a pipeline index describes a text-conditioned latent diffusion pipeline (text encoder + VAE)."""
    return index is not None and "text_encoder" in index and "vae" in index


def load_stable_diffusion(
    source: str, model_id: str, index: dict, device: str = "cpu", allow_pickle: bool = False
) -> StableDiffusionModel:
    """Load unet/, vae/, text_encoder/, tokenizer/ and scheduler/ of a StableDiffusionPipeline folder or hub id
    (safetensors weights only, unless ``allow_pickle``: then pickle weights too, read with ``weights_only``)."""
    if "text_encoder_2" in index or index.get("unet", [None, None])[1] != "UNet2DConditionModel":
        raise ValueError(
            f"cannot load model {model_id!r}: {index.get('_class_name')} is not supported (supported: Stable "
            "Diffusion 1.x/2.x, StableDiffusionXLPipeline, DiTPipeline, PixArtAlphaPipeline, "
            "StableDiffusion3Pipeline, FluxPipeline)"
        )
    try:
        import transformers
    except ImportError:
        raise ValueError(
            f"model {model_id!r} is a Stable Diffusion pipeline, which needs transformers: pip install 'eigenedit[sd]'"
        ) from None
    text_class, tokenizer_class = (getattr(transformers, str(index[n][1]), None) for n in ("text_encoder", "tokenizer"))
    if text_class is None or tokenizer_class is None:
        raise ValueError(f"cannot load model {model_id!r}: unknown text encoder or tokenizer class in {PIPELINE_INDEX}")
    weights = {"use_safetensors": None if allow_pickle else True}
    try:
        with quiet_diffusers():
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights)
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **weights)
            text_encoder = text_class.from_pretrained(source, subfolder="text_encoder", **weights)
            tokenizer = tokenizer_class.from_pretrained(source, subfolder="tokenizer")
            scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as err:
        refusal = None if allow_pickle else pickle_refusal(source, model_id)
        if refusal is not None:
            raise refusal from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load Stable Diffusion model {model_id!r}: {first}") from None
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False).to(device)
    prediction_type = scheduler.config.prediction_type
    # every sampler here works on epsilon: the UNet's own output type is converted by DiffusionModel.predict_eps
    scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="epsilon")
    model = StableDiffusionModel(
        unet, scheduler, model_id, prediction_type, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
    )
    model.edit_defaults = read_model_defaults(source, model, {"layer": default_layer(unet)})
    return model
