"""GPU figures: edited vs plain sampling time and images/s on a Stable-Diffusion-1.5-shaped pipeline (random
weights built from SD 1.5's configs: UNet 860M, VAE, CLIP ViT-L text encoder; no download) at 512 px in fp16.

    python -m benchmarks.gpu_figures [--steps 50] [--batch-sizes 1 4 8] [--repeats 3]

On a machine without a CUDA GPU it says so and exits (status 0) without measuring. ``--device cpu --resolution 64
--steps 2`` runs the same code path on the CPU as a smoke test (float32; those figures are not GPU figures).
Times are medians of ``--repeats`` runs after one warm-up, with CUDA synchronised: "plain" is DDIM sampling with
classifier-free guidance (two UNet passes per step in one batch), "edit" the same with one direction shifted at
the mid-block at every step with t >= 500 (the default edit), "decode" the VAE. Writes results/gpu_figures.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

import torch

OUTPUT = Path(__file__).resolve().parent.parent / "results" / "gpu_figures.json"


def letter_tokenizer(folder: Path, max_length: int = 77):
    """A CLIP BPE tokenizer over lowercase letters (the real vocabulary needs a download; the text encoder's
    cost does not depend on it)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + "!,.":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    return CLIPTokenizer.from_pretrained(str(folder))


def sd15_model(device: str, dtype: torch.dtype, resolution: int):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from eigenedit.core.attention import default_layer
    from eigenedit.models.stable_diffusion import StableDiffusionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=resolution // 8)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=resolution,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12))
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = letter_tokenizer(Path(folder))
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False).to(device, dtype)
    defaults = {"layer": default_layer(unet)}
    return StableDiffusionModel(
        unet,
        scheduler,
        "sd15-shaped-random",
        "epsilon",
        defaults,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_figures: no CUDA GPU on this machine (CPU only): nothing measured. Run it where a GPU is.")
        return 0
    from eigenedit.core import sampling
    from eigenedit.core.directions import compute_directions

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    model = sd15_model(args.device, dtype, args.resolution)
    model.set_prompt("a photo of a cat", guidance_scale=7.5)
    start = time.perf_counter()
    dirs = compute_directions(model.unet, model.edit_defaults["layer"], "ov-left", k=5)
    discovery_s = time.perf_counter() - start
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke test, not GPU figures)"
    print(f"{name}, {dtype}, {args.resolution} px, {args.steps} DDIM steps, guidance 7.5")
    print(f"{'batch':>5s} {'plain s':>8s} {'edit s':>8s} {'edit/plain':>10s} {'decode s':>9s} {'images/s':>9s}")
    rows = []
    for batch in args.batch_sizes:
        x = sampling.noise_from_seeds(model, range(batch)).to(args.device)
        alphas = torch.zeros(batch, 1) + 1.0
        plain_s = timed(lambda x=x: sampling.sample(model, x, args.steps), args.device, args.repeats)
        edit_s = timed(
            lambda x=x, a=alphas, b=batch: sampling.edit_images(model, x, sampling.Edit(dirs.top(1), a), args.steps, b),
            args.device,
            args.repeats,
        )
        latents = sampling.sample(model, x, 1)
        decode_s = timed(lambda z=latents, b=batch: model.decode(z, batch_size=b), args.device, args.repeats)
        row = {
            "batch": batch,
            "plain_s": plain_s,
            "edit_s": edit_s,
            "edit_over_plain": edit_s / plain_s,
            "decode_s": decode_s,
            "edited_images_per_s": batch / (edit_s + decode_s),
        }
        rows.append(row)
        print(
            f"{batch:5d} {plain_s:8.3f} {edit_s:8.3f} {row['edit_over_plain']:10.3f} {decode_s:9.3f} "
            f"{row['edited_images_per_s']:9.2f}"
        )
    report = {
        "device": name,
        "dtype": str(dtype),
        "resolution": args.resolution,
        "steps": args.steps,
        "repeats": args.repeats,
        "discovery_s_top5_ov_left": discovery_s,
        "rows": rows,
    }
    if args.device == "cuda":
        report["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        OUTPUT.parent.mkdir(exist_ok=True)
        OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
