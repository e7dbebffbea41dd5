"""Measure the faces model and write its model card: samples, FD on the face probe's features vs renders,
attribute statistics read by the probe, attention spectra (trained vs init), DDIM-inversion PSNR, and how much the
UNet depends on h-space (zeroing sensitivity of the mid-block vs each attention layer).

    python -m benchmarks.faces --checkpoint training/faces64/checkpoint --out eigenedit/pretrained/faces64

The probe is trained by ``python -m eigenedit.data.faces --output OUT/probe`` (copied from --probe if given).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DModel

from benchmarks.model_card import relative_change, spectra_rows, spectrum_stats, write_card
from eigenedit.core import sampling
from eigenedit.core.attention import list_attention_layers
from eigenedit.data import faces
from eigenedit.evaluation.evaluate import zeroing_sensitivity
from eigenedit.evaluation.metrics import frechet_distance, psnr, ssim
from eigenedit.models import load_model
from eigenedit.training import export_pipeline

RENDER_SEED = 777_000_000  # renders compared with samples (disjoint from training batches and probe test renders)


@torch.no_grad()
def probe_features(probe: faces.FaceProbe, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([probe.features(images[i : i + 256]) for i in range(0, len(images), 256)])


@torch.no_grad()
def attribute_summary(probe: faces.FaceProbe, images: torch.Tensor) -> dict:
    pred = {k: torch.cat([probe.predict(images[i : i + 256])[k] for i in range(0, len(images), 256)]) for k in
            probe.predict(images[:1])}  # fmt: skip
    out = {name: round(float(pred[name].mean()), 3) for name in faces.CONTINUOUS}
    out |= {f"{name}_rate": round(float((pred[name] > 0.5).float().mean()), 3) for name in faces.BINARY}
    counts = torch.bincount(pred["hair_style"].long(), minlength=3).float() / len(images)
    out["hair_style_frequencies"] = [round(v, 3) for v in counts.tolist()]
    return out


def card(n: dict, config: dict) -> str:
    unet = config["unet"]
    rows = spectra_rows(n["spectra"])
    zero = ", ".join(f"`{k}` {v:.4f}" for k, v in n["zeroing_sensitivity"].items())
    probe = ", ".join(f"{k} {v:.3f}" for k, v in n["probe_scores"].items())
    return (
        f"""# faces64: procedural faces with known attributes

A DDPM ({config["prediction_type"]} prediction, {config["beta_schedule"]} betas, 1000 steps) on eigenedit's
procedural faces (`eigenedit.data.faces`: 64x64 RGB; smile, mouth open, eye openness and size, eyebrow angle,
glasses, beard, hair colour and style, skin tone, face width, head position and yaw, background hue), trained by
`python -m eigenedit.training --dataset faces --batch-size {config["batch_size"]} --bf16` (config and loss log:
`training/faces64/checkpoint/state.json`). EMA weights, diffusers `UNet2DModel` + `DDPMScheduler` layout.

- UNet: the layout of google/ddpm-ema-celebahq-256 scaled down: block_out_channels
  {list(unet["block_out_channels"])}, layers_per_block {unet["layers_per_block"]}, one attention head, self-attention
  at 16x16 (down block 2, up block 1) and in the mid-block at 8x8 (h-space).
- Training: {n["training_steps"]} steps of batch {config["batch_size"]}, AdamW lr {config["lr"]}, weight decay
  {config["weight_decay"]} on matrices, min-SNR gamma {config["snr_gamma"]}, EMA {config["ema_decay"]}, bfloat16
  autocast on the CPU; final training loss {n["final_loss"]:.4f}.
- `probe/`: the attribute probe (`eigenedit.data.faces.FaceProbe`), trained on renders; held-out scores: {probe}.

## Measured by `benchmarks/faces.py` ({n["samples"]} samples, {n["steps"]} DDIM steps)

- FD on the probe's features, samples vs renders: {n["fd_samples_renders"]:.2f}; renders vs other renders (same
  count): {n["fd_renders_renders"]:.2f}; pure noise vs renders: {n["fd_noise_renders"]:.1f}.
- Attributes read by the probe (means; rates for glasses/beard; hair style frequencies short/bob/long), samples:
  {n["attributes_samples"]}; renders: {n["attributes_renders"]}.
- DDIM inversion of {n["inversion_images"]} renders: PSNR median {n["inversion_psnr_db_median"]} dB (min
  {n["inversion_psnr_db_min"]}), SSIM median {n["inversion_ssim_median"]}.
- Mean pixel change (0..1) when a module's output is replaced by zeros at every step: {zero}.

## Attention spectra, trained vs initialisation (absolute eigen/singular values)

| layer | decomposition | trained top 5 | init top 5 | top1/median trained / init | effective rank trained / init |
|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + """

![samples](samples.png) ![inversion](inversion.png)

## Edits

The measured edits (the best weight directions per operator, each against random directions at matched image
change, on held-out test seeds) and the default edit in `eigenedit.json` are the strict protocol's:
[results/protocol_faces64.md](../../../results/protocol_faces64.md)
(`python -m eigenedit.evaluation.protocol_run --model faces64`).
"""
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("training/faces64/checkpoint"))
    p.add_argument("--out", type=Path, default=Path("eigenedit/pretrained/faces64"))
    p.add_argument("--probe", type=Path, default=None, help="a trained probe folder to copy into OUT/probe")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--zeroing-seeds", type=int, default=16)
    args = p.parse_args()

    export_pipeline(args.checkpoint, args.out)
    if args.probe is not None and args.probe.resolve() != (args.out / "probe").resolve():
        shutil.copytree(args.probe, args.out / "probe", dirs_exist_ok=True)
    probe = faces.FaceProbe.from_pretrained(args.out / "probe")
    model = load_model(str(args.out))
    state = json.loads((args.checkpoint / "state.json").read_text())
    torch.manual_seed(state["config"]["seed"])
    init = UNet2DModel(**state["config"]["unet"]).eval()

    x = sampling.noise_from_seeds(model, range(args.samples))
    images = torch.cat([sampling.sample(model, x[s], args.steps) for s in sampling.batched(len(x), 50)])
    renders = faces.make_batch(args.samples, RENDER_SEED)[0]
    other = faces.make_batch(args.samples, RENDER_SEED + 1)[0]
    noise = torch.randn(args.samples, 3, 64, 64, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    f_renders = probe_features(probe, renders)

    real = faces.make_batch(32, RENDER_SEED + 2)[0]
    recon = sampling.sample(model, sampling.invert(model, real, args.steps), args.steps)
    recon_db = psnr(recon, real)

    layers = [layer.name for layer in list_attention_layers(model.unet)]
    locations = ["mid_block", *layers]
    zero_seeds = list(range(10_000, 10_000 + args.zeroing_seeds))
    numbers = {
        "training_steps": state["step"],
        "final_loss": state["log"][-1]["loss"],
        "samples": args.samples,
        "steps": args.steps,
        "probe_scores": json.loads((args.out / "probe" / "metrics.json").read_text()),
        "fd_samples_renders": frechet_distance(probe_features(probe, images), f_renders),
        "fd_renders_renders": frechet_distance(probe_features(probe, other), f_renders),
        "fd_noise_renders": frechet_distance(probe_features(probe, noise), f_renders),
        "attributes_samples": attribute_summary(probe, images),
        "attributes_renders": attribute_summary(probe, renders),
        "inversion_images": len(real),
        "inversion_psnr_db_median": round(float(recon_db.median()), 2),
        "inversion_psnr_db_min": round(float(recon_db.min()), 2),
        "inversion_ssim_median": round(float(ssim(recon, real).median()), 3),
        "zeroing_sensitivity": {loc: zeroing_sensitivity(model, zero_seeds, 20, loc) for loc in locations},
        "spectra": {
            layer: {"trained": spectrum_stats(model.unet, layer), "init": spectrum_stats(init, layer)}
            for layer in layers
        },  # fmt: skip
        "relative_weight_change": {layer: relative_change(model.unet, init, layer) for layer in layers},
    }
    numbers["probe_scores"].pop("steps", None)
    write_card(args.out, numbers, card(numbers, state["config"]), images, real, recon, "render", scale=2)


if __name__ == "__main__":
    main()
