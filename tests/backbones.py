"""Tiny random-initialised pipelines of SDXL, DiT, PixArt-alpha, SD3 and Flux, built offline from configs.

Each keeps its real architecture's structure at toy width: SDXL's two text encoders, added time ids and several
transformer blocks per attention; DiT's class embedding and learned sigma; PixArt's T5 and adaLN-single; SD3's
joint attention (with its context-pre-only last block), two CLIPs and T5; Flux's double- and single-stream blocks,
rotary embeddings, qk RMSNorm and guidance embedding. 8x8 latents, 16x16 images.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

FAMILIES = ("sdxl", "dit", "pixart", "sd3", "flux")
MAX_SEQUENCE_LENGTH = 16  # T5 tokens (the pipelines' defaults are 120 to 512)


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over lowercase letters, written as vocab.json + merges.txt and read back."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + "!,.":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))
    return CLIPTokenizer.from_pretrained(str(folder))


def t5_tokenizer() -> T5Tokenizer:
    """A T5 (unigram) tokenizer over lowercase letters and two words."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in string.ascii_lowercase:
        vocab += [(c, -3.0), ("\u2581" + c, -3.5)]
    vocab += [("\u2581cat", -1.0), ("\u2581dog", -1.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def clip(tokenizer: CLIPTokenizer, hidden: int = 16, projection: int | None = None) -> torch.nn.Module:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection or hidden,
    )
    return (CLIPTextModel(config) if projection is None else CLIPTextModelWithProjection(config)).eval()


def t5(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=2)
    return T5EncoderModel(config).eval()


def vae(scaling_factor: float = 1.5, shift_factor: float | None = None) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )


def ddim() -> DDIMScheduler:
    """DDIM with Stable Diffusion's settings."""
    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def calm(*linears: torch.nn.Module, factor: float = 0.1) -> None:
    """Scale a random denoiser's output layer down, so that its prediction varies smoothly with its input (as a
    trained model's does): DDIM / Euler inversion of a raw random model is far from invertible."""
    with torch.no_grad():
        for layer in linears:
            layer.weight.mul_(factor)
            if layer.bias is not None:
                layer.bias.mul_(factor)


def build(family: str, folder: Path):
    """The diffusers pipeline of ``family`` (random weights, seed 0)."""
    torch.manual_seed(0)
    tokens = folder / "clip-tokenizer"
    if family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 4 + 16,
            cross_attention_dim=32,
            norm_num_groups=4,
        )
        calm(unet.conv_out, factor=0.05)
        tok = clip_tokenizer(tokens)
        return StableDiffusionXLPipeline(
            vae=vae(),
            text_encoder=clip(tok),
            text_encoder_2=clip(tok, projection=16),
            tokenizer=tok,
            tokenizer_2=tok,
            unet=unet,
            scheduler=ddim(),
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    if family == "dit":
        transformer = DiTTransformer2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=2,
            in_channels=4,
            out_channels=8,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_zero",
            norm_elementwise_affine=False,
        )
        calm(transformer.proj_out_2)
        return DiTPipeline(transformer=transformer, vae=vae(), scheduler=ddim())
    if family == "pixart":
        transformer = PixArtTransformer2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
        calm(transformer.proj_out)
        tok = t5_tokenizer()
        return PixArtAlphaPipeline(
            tokenizer=tok, text_encoder=t5(tok, 32), vae=vae(), transformer=transformer, scheduler=ddim()
        )
    if family == "sd3":
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            caption_projection_dim=16,
            joint_attention_dim=64,
            pooled_projection_dim=32,
            out_channels=4,
        )
        calm(transformer.proj_out, factor=0.3)
        tok, tok3 = clip_tokenizer(tokens), t5_tokenizer()
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae(1.5305, 0.0609),
            text_encoder=clip(tok, projection=16),
            tokenizer=tok,
            text_encoder_2=clip(tok, projection=16),
            tokenizer_2=tok,
            text_encoder_3=t5(tok3, 64),
            tokenizer_3=tok3,
        )
    if family == "flux":
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=16,
            axes_dims_rope=(2, 2, 4),
            guidance_embeds=True,
        )
        calm(transformer.proj_out, factor=0.3)
        tok, tok2 = clip_tokenizer(tokens), t5_tokenizer()
        scheduler = FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256,
            base_shift=0.5,
            max_image_seq_len=4096,
            max_shift=1.15,
            shift=3.0,
            use_dynamic_shifting=True,
        )
        return FluxPipeline(
            scheduler=scheduler,
            vae=vae(0.3611, 0.1159),
            text_encoder=clip(tok),
            tokenizer=tok,
            text_encoder_2=t5(tok2, 32),
            tokenizer_2=tok2,
            transformer=transformer,
        )
    raise ValueError(family)


def save(family: str, folder: Path) -> Path:
    """Write the tiny pipeline folder (with an eigenedit.json for Flux's latent size and short T5 prompts)."""
    pipe = build(family, folder)
    path = folder / "pipeline"
    pipe.save_pretrained(path)
    if family == "flux":
        (path / "eigenedit.json").write_text(json.dumps({"latent_size": [8, 8]}))
    return path
