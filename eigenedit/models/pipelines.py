"""SDXL and the transformer backbones (DiT, PixArt-alpha, SD3, Flux) through their diffusers pipelines.

A ``PipelineModel`` keeps the whole diffusers pipeline (``pipe``): its text encoders (or class labels) build the
conditioning with the pipeline's own ``encode_prompt``, and eigenedit drives the denoiser (``unet``: the UNet or
the transformer) itself, so that edits hook into it, with guidance as each pipeline does it:

- ``StableDiffusionXLModel``: UNet2DConditionModel with two text encoders, pooled text and added time ids
  (original size, crop, target size); classifier-free guidance; an empty negative prompt gives zero embeddings
  (``force_zeros_for_empty_prompt``). DDIM sampling and inversion.
- ``DiTModel``: DiTTransformer2DModel, class-conditional (the "prompt" is an ImageNet class index, or a label
  name where the pipeline has ``id2label``); guidance on [class; null class 1000]; learned sigma dropped. DDIM.
- ``PixArtAlphaModel``: PixArtTransformer2DModel with a T5 encoder (and its attention mask); guidance; DDIM.
- ``StableDiffusion3Model``: SD3Transformer2DModel (joint attention: image and text streams in one attention),
  two CLIP encoders and T5; guidance; flow matching (``flow_matching``: Euler on the velocity with the model's
  FlowMatchEulerDiscreteScheduler, reverse Euler ODE for inversion, ``eigenedit.core.flow``).
- ``FluxModel``: FluxTransformer2DModel (double-stream and single-stream blocks), CLIP + T5; guidance as a model
  input (FLUX.1-dev's distilled guidance; schnell has none), no negative prompt; latents packed into 2x2 patch
  tokens inside ``predict_velocity`` (``sample_shape`` is the unpacked VAE latent); flow matching as SD3.

Self-attention layers: ``attn1`` of the UNet's / DiT's / PixArt's transformer blocks (``attn2`` is cross-attention);
``transformer_blocks.N.attn`` of SD3 and of Flux's double-stream blocks, decomposed on their image-stream
projections (to_q/to_k/to_v/to_out; the text stream's add_*_proj are not); ``single_transformer_blocks.N.attn`` of
Flux (text and image tokens share to_q/to_k/to_v; its output projection is the attention part of the block's
proj_out). Default layer and edit location: the middle block's (SD3/Flux: its attention, whose first output is the
image stream; a joint block's own output starts with the text stream and is refused as a location).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DDIMScheduler

from eigenedit.core.attention import (
    AttentionLayer,
    AttentionWeights,
    default_layer,
    diffusers_weights,
    list_attention_layers,
    qk_norm_scales,
)
from eigenedit.models.base import DiffusionModel, pickle_refusal, quiet_diffusers, read_model_defaults

PIPELINE_INDEX = "model_index.json"


@dataclass
class PipelineModel(DiffusionModel):
    """A diffusers pipeline's denoiser (``unet``) and scheduler, with the pipeline for its conditioning."""

    pipe: Any = None
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float | None = None  # None: the family's default_guidance
    size: tuple[int, int] | None = None  # latent (h, w); None: the denoiser's sample_size or the pipeline default
    latent: ClassVar[bool] = True
    conditional: ClassVar[bool] = True
    default_guidance: ClassVar[float] = 7.5
    _cond: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pipe is None:
            raise ValueError(f"a {type(self).__name__} needs its diffusers pipeline")
        if self.guidance_scale is None:
            self.guidance_scale = self.default_guidance

    def set_prompt(self, prompt: str = "", negative_prompt: str = "", guidance_scale: float | None = None) -> None:
        """The conditioning of every later prediction; guidance_scale <= 1 turns guidance off (None: default)."""
        scale = self.default_guidance if guidance_scale is None else guidance_scale
        if not isinstance(scale, int | float) or not math.isfinite(scale):
            raise ValueError(f"guidance scale must be a finite number, got {guidance_scale!r}")
        self.prompt, self.negative_prompt, self.guidance_scale = prompt, negative_prompt, float(scale)
        self._cond = None

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1

    def guide(self, out: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance of a denoiser output on [negative; prompt] (the output itself unguided)."""
        if not self.guided:
            return out
        uncond, text = out.chunk(2)
        return uncond + self.guidance_scale * (text - uncond)

    def conditioning(self) -> dict:
        """Tensors for the denoiser, for [negative; prompt] under guidance (computed once per ``set_prompt``)."""
        if self._cond is None:
            with torch.no_grad():
                self._cond = self.encode_conditioning()
        return self._cond

    def encode_conditioning(self) -> dict:
        raise NotImplementedError

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        if self.size is not None:
            return tuple(self.size)
        size = getattr(self.unet.config, "sample_size", None) or getattr(self.pipe, "default_sample_size", None)
        if size is None:
            raise ValueError(f"{type(self).__name__}: set model.size to the latent (height, width)")
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, *self.latent_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w = self.latent_size
        return (self.vae.config.out_channels, h * self.vae_scale_factor, w * self.vae_scale_factor)

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """The image token grid of a transformer backbone (latent size / patch size); None for a UNet."""
        patch = getattr(self.unet.config, "patch_size", None)
        if patch is None:
            return None
        h, w = self.latent_size
        return (h // patch, w // patch)

    def attention_layers(self) -> list[AttentionLayer]:
        """Every self-attention layer with its channels, heads and image token grid (or UNet resolution)."""
        return list_attention_layers(self.unet, grid=self.token_grid, read=self.attention_weights)

    def _vae_shift(self) -> float:
        return getattr(self.vae.config, "shift_factor", None) or 0.0

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> latents ((VAE mean - shift) * scaling factor, as the pipelines decode them)."""
        images = images.to(self.device, self.vae.dtype)
        mean = self.vae.encode(images).latent_dist.mode()
        return ((mean - self._vae_shift()) * self.vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
        """Latents -> images in [-1, 1] (latents / scaling factor + shift, then the VAE decoder)."""
        latents = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor + self._vae_shift()
        parts = [self.vae.decode(latents[i : i + batch_size]).sample for i in range(0, len(latents), batch_size)]
        return torch.cat(parts).clamp(-1, 1).float()

    def save_pretrained(self, path: str | Path) -> None:
        """Write the pipeline folder (model_index.json and its components) that ``load_model`` reads."""
        self.pipe.save_pretrained(str(path))

    def _timesteps(self, t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        return (t[None] if t.ndim == 0 else t).expand(batch)


class StableDiffusionXLModel(PipelineModel):
    """SDXL: UNet2DConditionModel, two CLIP text encoders, added text/time embeddings; DDIM."""

    default_guidance: ClassVar[float] = 5.0

    def encode_conditioning(self) -> dict:
        pipe, device = self.pipe, self.device
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
            self.prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=self.guided,
            negative_prompt=self.negative_prompt or None,  # None: zeros under force_zeros_for_empty_prompt
        )
        h, w = self.image_shape[1:]
        projection_dim = (
            int(pooled.shape[-1]) if pipe.text_encoder_2 is None else pipe.text_encoder_2.config.projection_dim
        )
        time_ids = pipe._get_add_time_ids((h, w), (0, 0), (h, w), embeds.dtype, projection_dim).to(device)
        if self.guided:
            embeds, pooled, time_ids = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled]), time_ids.repeat(2, 1)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": time_ids}

    def attention_layers(self) -> list[AttentionLayer]:
        x = torch.zeros(1, *self.sample_shape, device=self.device, dtype=self.dtype)
        return list_attention_layers(self.unet, forward=lambda: self.unet_output(x, 0), read=self.attention_weights)

    def unet_output(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        cond, batch = self.conditioning(), x.shape[0]
        copies = 2 if self.guided else 1
        states, pooled, time_ids = (
            cond[n].repeat_interleave(batch, 0) for n in ("encoder_hidden_states", "text_embeds", "time_ids")
        )
        out = self.unet(
            torch.cat([x] * copies),
            t,
            encoder_hidden_states=states,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
        return self.guide(out)


class DiTModel(PipelineModel):
    """DiT: class-conditional DiTTransformer2DModel; the prompt is a class index or label; DDIM."""

    default_guidance: ClassVar[float] = 4.0
    null_class: ClassVar[int] = 1000

    def class_label(self) -> int:
        text = self.prompt.strip()
        if text.isdigit():
            label = int(text)
        elif not text:
            label = 0
        else:
            try:
                label = self.pipe.get_label_ids([text])[0]
            except (ValueError, KeyError, AttributeError, TypeError):
                raise ValueError(
                    f"unknown DiT class {text!r}: give a class index or one of the pipeline's labels"
                ) from None
        classes = self.unet.config.num_embeds_ada_norm
        if not 0 <= label < classes:
            raise ValueError(f"DiT class {label} out of range 0..{classes - 1}")
        return label

    def encode_conditioning(self) -> dict:
        if self.negative_prompt:
            raise ValueError("DiT has no negative prompt: guidance runs against its null class")
        return {"class": self.class_label()}

    def unet_output(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        label, batch = self.conditioning()["class"], x.shape[0]
        labels = torch.full((batch,), label, device=x.device)
        if self.guided:  # [class; null], as DiTPipeline stacks them
            labels = torch.cat([labels, torch.full((batch,), self.null_class, device=x.device)])
            x = torch.cat([x, x])
        out = self.unet(x, timestep=self._timesteps(t, len(x), x.device), class_labels=labels).sample
        channels = self.latent_channels
        if not self.guided:
            return out[:, :channels]
        cond, uncond = out[:, :channels].chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)


class PixArtAlphaModel(PipelineModel):
    """PixArt-alpha: PixArtTransformer2DModel with a T5 text encoder; DDIM."""

    default_guidance: ClassVar[float] = 4.5
    max_sequence_length: ClassVar[int] = 120

    def encode_conditioning(self) -> dict:
        embeds, mask, neg, neg_mask = self.pipe.encode_prompt(
            self.prompt,
            do_classifier_free_guidance=self.guided,
            negative_prompt=self.negative_prompt,
            device=self.device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length,
        )
        if self.guided:
            embeds, mask = torch.cat([neg, embeds]), torch.cat([neg_mask, mask])
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def unet_output(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        cond, batch = self.conditioning(), x.shape[0]
        copies = 2 if self.guided else 1
        x_in = torch.cat([x] * copies)
        added = {"resolution": None, "aspect_ratio": None}
        if self.unet.config.sample_size == 128:  # PixArt-alpha 1024: size conditioning, as the pipeline does
            h, w = self.image_shape[1:]
            added = {
                "resolution": torch.tensor([[h, w]], dtype=x.dtype, device=x.device).repeat(len(x_in), 1),
                "aspect_ratio": torch.tensor([[h / w]], dtype=x.dtype, device=x.device).repeat(len(x_in), 1),
            }
        out = self.unet(
            x_in,
            encoder_hidden_states=cond["encoder_hidden_states"].repeat_interleave(batch, 0),
            encoder_attention_mask=cond["encoder_attention_mask"].repeat_interleave(batch, 0),
            timestep=self._timesteps(t, len(x_in), x.device),
            added_cond_kwargs=added,
        ).sample
        return self.guide(out)[:, : self.latent_channels]


class FlowMatchingModel(PipelineModel):
    """A rectified-flow model: the denoiser predicts the velocity v = noise - x0 of x_sigma = (1 - sigma) x0 +
    sigma noise; timesteps are sigma * 1000. ``eigenedit.core.flow`` samples and inverts it."""

    flow_matching: ClassVar[bool] = True
    # edit locations whose output tuple starts with the text stream (output[0] is what an operator edits)
    text_first_blocks: ClassVar[tuple[str, ...]] = (
        "JointTransformerBlock",
        "FluxTransformerBlock",
        "FluxSingleTransformerBlock",
    )

    def set_timesteps(self, num_steps: int) -> torch.Tensor:
        """Set the scheduler's sigmas for ``num_steps`` as the pipeline does; return its timesteps."""
        raise NotImplementedError

    def check_edit_location(self, location: str) -> None:
        """Refuse a joint block as edit location: its output is (text, image), and operators edit the first."""
        module = self.unet.get_submodule(location)
        if type(module).__name__ in self.text_first_blocks:
            raise ValueError(
                f"edit location {location!r} is a {type(module).__name__}, whose output starts with the text stream; "
                f"edit the image stream at its attention ({location}.attn) or at {location}.ff where it has one"
            )

    def attention_layers(self) -> list[AttentionLayer]:
        """As for every pipeline, with the projections a joint attention layer decomposes: the image stream's
        to_q/to_k/to_v/to_out (``image q,k,v,o``), not the text stream's add_*_proj."""
        return [replace(la, projections=self.projections(la.name)) for la in super().attention_layers()]

    def projections(self, layer: str) -> str:
        return "image q,k,v,o"

    def attention_weights(self, layer: str, dtype: torch.dtype = torch.float64, copy: bool = True) -> AttentionWeights:
        """The image stream's projections, with the scales of the per-head RMS norms on q and k (SD3.5, Flux)
        folded into W_q and W_k, so that qk is the logits' bilinear form up to each token's normalisation (and,
        with rotary embeddings, at zero relative offset)."""
        return fold_qk_norms(diffusers_weights(self.unet, layer, dtype, copy), self.unet.get_submodule(layer))

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        raise NotImplementedError

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The noise implied by the velocity: eps = x + (1 - sigma) v (sigma = t / 1000)."""
        sigma = torch.as_tensor(t, device=x.device, dtype=torch.float32) / 1000
        return x + (1 - sigma).to(x.dtype) * self.predict_velocity(x, t)

    def _dynamic_shift(self, image_seq_len: int, max_shift_default: float) -> float:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.scheduler.config
        return calculate_shift(
            image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", max_shift_default),
        )


class StableDiffusion3Model(FlowMatchingModel):
    """SD3: SD3Transformer2DModel with joint attention, two CLIP encoders and T5; guidance; flow matching."""

    default_guidance: ClassVar[float] = 7.0
    max_sequence_length: ClassVar[int] = 256

    def set_timesteps(self, num_steps: int) -> torch.Tensor:
        kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", None):
            patch = self.unet.config.patch_size
            h, w = self.latent_size
            kwargs["mu"] = self._dynamic_shift((h // patch) * (w // patch), 1.16)
        self.scheduler.set_timesteps(num_steps, device=self.device, **kwargs)
        return self.scheduler.timesteps

    def encode_conditioning(self) -> dict:
        embeds, neg, pooled, neg_pooled = self.pipe.encode_prompt(
            self.prompt,
            None,
            None,
            device=self.device,
            do_classifier_free_guidance=self.guided,
            negative_prompt=self.negative_prompt,
            max_sequence_length=self.max_sequence_length,
        )
        if self.guided:
            embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        cond, batch = self.conditioning(), x.shape[0]
        x_in = torch.cat([x] * (2 if self.guided else 1))
        out = self.unet(
            hidden_states=x_in,
            timestep=self._timesteps(t, len(x_in), x.device),
            encoder_hidden_states=cond["encoder_hidden_states"].repeat_interleave(batch, 0),
            pooled_projections=cond["pooled_projections"].repeat_interleave(batch, 0),
            return_dict=False,
        )[0]
        return self.guide(out)


class FluxModel(FlowMatchingModel):
    """Flux: FluxTransformer2DModel, CLIP + T5, guidance as an input (FLUX.1-dev); latents packed in 2x2 tokens."""

    default_guidance: ClassVar[float] = 3.5
    max_sequence_length: ClassVar[int] = 512

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels // 4

    @property
    def vae_scale_factor(self) -> int:
        return self.pipe.vae_scale_factor

    @property
    def token_grid(self) -> tuple[int, int]:
        h, w = self.latent_size
        return (h // 2, w // 2)

    @property
    def guided(self) -> bool:
        return False  # guidance is a model input (distilled), not two passes

    def projections(self, layer: str) -> str:
        """Single-stream blocks: text and image tokens share to_q/to_k/to_v, and the output projection is the
        attention part of the block's proj_out."""
        return "joint q,k,v; o=proj_out" if self._single_stream(layer) else "image q,k,v,o"

    def _single_stream(self, layer: str) -> bool:
        return layer.startswith("single_transformer_blocks.")

    def attention_weights(self, layer: str, dtype: torch.dtype = torch.float64, copy: bool = True) -> AttentionWeights:
        """As SD3's; in a single-stream block, W_o is the first inner columns of the block's proj_out (it acts on
        concat(attention, mlp))."""
        if not self._single_stream(layer):
            return super().attention_weights(layer, dtype, copy)
        module = self.unet.get_submodule(layer)
        proj_out = self.unet.get_submodule(layer.rpartition(".")[0]).proj_out
        o = proj_out.weight[:, : module.to_q.weight.shape[0]]
        return fold_qk_norms(diffusers_weights(self.unet, layer, dtype, copy, o=o), module)

    def set_timesteps(self, num_steps: int) -> torch.Tensor:
        import numpy as np

        h, w = self.latent_size
        sigmas = None if self.scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = self._dynamic_shift((h // 2) * (w // 2), 1.15)
        self.scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)
        return self.scheduler.timesteps

    def encode_conditioning(self) -> dict:
        if self.negative_prompt:
            raise ValueError("Flux runs with distilled guidance (--guidance is its input): no negative prompt")
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            self.prompt, None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids}

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latents -> (B, H/2 * W/2, 4C) tokens, as FluxPipeline packs them."""
        b, c, h, w = x.shape
        return self.pipe._pack_latents(x, b, c, h, w)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, d = tokens.shape
        h, w = self.latent_size
        x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, d // 4, h, w)

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        cond, batch = self.conditioning(), x.shape[0]
        h, w = x.shape[2:]
        image_ids = self.pipe._prepare_latent_image_ids(batch, h // 2, w // 2, x.device, x.dtype)
        guidance = None
        if self.unet.config.guidance_embeds:
            guidance = torch.full([batch], self.guidance_scale, device=x.device, dtype=torch.float32)
        timestep = self._timesteps(t, batch, x.device).to(x.dtype)
        out = self.unet(
            hidden_states=self.pack(x),
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=cond["pooled_projections"].repeat_interleave(batch, 0),
            encoder_hidden_states=cond["encoder_hidden_states"].repeat_interleave(batch, 0),
            txt_ids=cond["txt_ids"],
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return self.unpack(out)


def fold_qk_norms(weights: AttentionWeights, module: torch.nn.Module) -> AttentionWeights:
    """``weights`` with the learned scales of ``module``'s per-head q and k norms multiplied into W_q and W_k."""

    def fold(matrix: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        if scale is None or matrix.shape[0] % scale.numel():
            return matrix
        return matrix * scale.detach().to(matrix.dtype).repeat(matrix.shape[0] // scale.numel())[:, None]

    scale_q, scale_k = qk_norm_scales(module)
    return replace(weights, q=fold(weights.q, scale_q), k=fold(weights.k, scale_k))


FAMILIES: dict[str, type[PipelineModel]] = {
    "StableDiffusionXLPipeline": StableDiffusionXLModel,
    "DiTPipeline": DiTModel,
    "PixArtAlphaPipeline": PixArtAlphaModel,
    "StableDiffusion3Pipeline": StableDiffusion3Model,
    "FluxPipeline": FluxModel,
}


def middle_block_defaults(model: PipelineModel) -> dict:
    """Default layer and edit location: the middle transformer block's self-attention (UNets: the mid-block's)."""
    if isinstance(model, StableDiffusionXLModel):
        return {"layer": default_layer(model.unet)}
    blocks = len(model.unet.transformer_blocks)
    block = f"transformer_blocks.{blocks // 2}"
    if isinstance(model, FlowMatchingModel):  # the joint attention's first output is the image stream
        return {"layer": f"{block}.attn", "location": f"{block}.attn"}
    return {"layer": f"{block}.attn1", "location": block}


def load_pipeline_model(
    source: str, model_id: str, index: dict, device: str = "cpu", allow_pickle: bool = False
) -> PipelineModel:
    """Load an SDXL, DiT, PixArt-alpha, SD3 or Flux pipeline folder or hub id (see ``FAMILIES``): safetensors
    weights only, unless ``allow_pickle`` (then pickle weights too, read with ``weights_only``)."""
    name = index.get("_class_name")
    family = FAMILIES.get(name)
    if family is None:
        supported = ", ".join(["StableDiffusionPipeline", *FAMILIES])
        raise ValueError(f"cannot load model {model_id!r}: {name} is not supported (supported pipelines: {supported})")
    try:
        import transformers  # noqa: F401  (text encoders; DiT needs none, but its pipeline module imports fine)
    except ImportError:
        if family is not DiTModel:
            raise ValueError(
                f"model {model_id!r} is a {name}, which needs transformers: pip install 'eigenedit[sd]'"
            ) from None
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    bar = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" would clutter the CLI's output
    try:
        with quiet_diffusers():
            pipe = DiffusionPipeline.from_pretrained(source, use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        refusal = None if allow_pickle else pickle_refusal(source, model_id)
        if refusal is not None:
            raise refusal from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {name} {model_id!r}: {first}") from None
    finally:
        if bar:
            diffusers_logging.enable_progress_bar()
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    denoiser = pipe.unet if family is StableDiffusionXLModel else pipe.transformer
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    if issubclass(family, FlowMatchingModel):
        if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"cannot load {name} {model_id!r}: expected a FlowMatchEulerDiscreteScheduler")
        scheduler, prediction_type = pipe.scheduler, "flow"
    else:
        prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        # every DDPM-family sampler here works on epsilon: predict_eps converts the denoiser's own output type
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    model = family(denoiser, scheduler, model_id, prediction_type, {}, pipe=pipe)
    model.edit_defaults = read_model_defaults(source, model, middle_block_defaults(model))
    if model.edit_defaults.get("latent_size"):  # e.g. Flux, whose transformer has no sample size
        model.size = tuple(int(n) for n in model.edit_defaults["latent_size"])
    return model
