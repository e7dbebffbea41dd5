"""Measure a trained shapes model and write its model card: attention spectra (trained vs init), sample validity,
sampling time per image, DDIM-inversion PSNR, and a grid of samples.

    python -m benchmarks.model_card --checkpoint training/shapes32/checkpoint --out eigenedit/pretrained/shapes32

The initial weights are rebuilt from the training seed and config, exactly as ``training.train`` built them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from eigenedit.core import sampling
from eigenedit.core.attention import DEFAULT_LAYER, read_attention_weights
from eigenedit.core.factorize import factorize
from eigenedit.core.io import atomic_write
from eigenedit.data import shapes
from eigenedit.evaluation.metrics import psnr
from eigenedit.imaging import image_grid, save_png
from eigenedit.models import load_model
from eigenedit.training import export_pipeline


def spectrum_stats(unet: UNet2DModel, layer: str) -> dict:
    w = read_attention_weights(unet, layer)
    out = {}
    for name in ("qk", "ov-left", "qkv"):
        values = factorize(w, name)[0].abs()
        energy = values**2 / (values**2).sum()
        out[name] = {
            "top5": [round(v, 4) for v in values[:5].tolist()],
            "top1_over_median": round(float(values[0] / values.median()), 3),
            "top8_energy": round(float(energy[:8].sum()), 4),
            "effective_rank": round(float(torch.exp(-(energy * energy.clamp_min(1e-12).log()).sum())), 2),
        }
    return out


def relative_change(trained: UNet2DModel, init: UNet2DModel, layer: str) -> dict:
    a, b = read_attention_weights(trained, layer), read_attention_weights(init, layer)
    return {m: round(float((getattr(a, m) - getattr(b, m)).norm() / getattr(b, m).norm()), 3) for m in "qkvo"}


def spectra_rows(spectra: dict) -> list[str]:
    """Markdown rows (layer, decomposition, top 5 trained / init, top1/median, effective rank) of ``spectra``."""
    rows = []
    for layer, s in spectra.items():
        for name in ("qk", "ov-left", "qkv"):
            t, i = s["trained"][name], s["init"][name]
            rows.append(
                f"| {layer} | {name} | {t['top5']} | {i['top5']} | {t['top1_over_median']} / {i['top1_over_median']} "
                f"| {t['effective_rank']} / {i['effective_rank']} |"
            )
    return rows


def write_card(
    out: Path, numbers: dict, text: str, samples: torch.Tensor, originals: torch.Tensor, recon: torch.Tensor,
    label: str, scale: int,
) -> None:  # fmt: skip
    """A model folder's numbers.json, README.md (the card), samples.png (8x8) and inversion.png (8 + 8): the one
    writer of model cards."""
    write_text(out / "numbers.json", json.dumps(numbers, indent=1) + "\n")
    write_text(out / "README.md", text)
    save_png(image_grid(samples[:64], 8, 8, scale=2), out / "samples.png")
    grid = image_grid(torch.cat([originals[:8], recon[:8]]), 2, 8, [label, "inverted"], scale=scale)
    save_png(grid, out / "inversion.png")
    print(json.dumps(numbers, indent=1))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def card(n: dict, config: dict) -> str:
    """The model card, every number taken from ``n`` (this script's measurements) or the training config."""
    unet = config["unet"]
    rows = spectra_rows(n["spectra"])
    change = "; ".join(
        f"{layer}: " + ", ".join(f"W_{m} {v}" for m, v in c.items()) for layer, c in n["relative_weight_change"].items()
    )
    return (
        f"""# shapes32: the shipped default model of eigenedit

A DDPM ({config.get("prediction_type", "epsilon")} prediction, {config["beta_schedule"]} betas, 1000 steps) on
eigenedit's procedural shapes dataset
(32x32 RGB, one flat shape on a flat background; factors kind, shape hue, background hue, size, x, y), trained by
`python -m eigenedit.training` (see `training/shapes32/checkpoint/state.json` for the full config and loss log).
Weights are the EMA weights, diffusers `UNet2DModel` + `DDPMScheduler` layout (load as a DDIM scheduler).

- UNet: block_out_channels {list(unet["block_out_channels"])}, layers_per_block {unet["layers_per_block"]},
  attention head dim {unet["attention_head_dim"]}, self-attention at 4x4 (down block 3, up block 0, mid-block).
- Training: {n["training_steps"]} steps of batch {config["batch_size"]}, AdamW lr {config["lr"]} (warm-up
  {config["warmup_steps"]}, cosine to {config["min_lr"]}), weight decay {config["weight_decay"]} on matrices,
  min-SNR gamma {config["snr_gamma"]}, EMA {config["ema_decay"]}; final training loss {n["final_loss"]:.4f}.

## Measured by `benchmarks/model_card.py` ({n["steps"]} DDIM steps)

- Samples that the analytic estimator reads as one clean shape: {100 * n["valid_sample_rate"]:.1f}%
  (kind frequencies among them {n["kind_frequencies_valid"]}; mean size {n["size_mean_valid_vs_data"][0]} vs
  {n["size_mean_valid_vs_data"][1]} in the data).
- Sampling time: {n["sampling_s_per_image_median"]} s per image (median, batch 16, on the machine that ran it).
- DDIM inversion of held-out dataset images: reconstruction PSNR median {n["inversion_psnr_db_median"]} dB,
  min {n["inversion_psnr_db_min"]} dB.

## Attention spectra, trained vs initialisation (absolute eigen/singular values, merged heads)

| layer | decomposition | trained top 5 | init top 5 | top1/median trained / init | effective rank trained / init |
|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + f"""

Relative change of the weights from initialisation, ||W - W0|| / ||W0||: {change}.

![samples](samples.png) ![inversion](inversion.png)
"""
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("training/shapes32/checkpoint"))
    p.add_argument("--out", type=Path, default=Path("eigenedit/pretrained/shapes32"))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()

    export_pipeline(args.checkpoint, args.out)
    model = load_model(str(args.out))
    state = json.loads((args.checkpoint / "state.json").read_text())
    torch.manual_seed(state["config"]["seed"])
    init = UNet2DModel(**state["config"]["unet"]).eval()

    x = sampling.noise_from_seeds(model, range(args.samples))
    images = torch.cat([sampling.sample(model, x[s], args.steps) for s in sampling.batched(len(x), 64)])
    est = shapes.estimate_factors(images)
    truth = shapes.sample_factors(100_000, torch.Generator().manual_seed(0))
    kind_freq = torch.bincount(est.kind[est.valid], minlength=3).float() / est.valid.sum().clamp_min(1)

    times = []
    for _ in range(5):
        start = time.perf_counter()
        sampling.sample(model, x[:16], args.steps)
        times.append((time.perf_counter() - start) / 16)

    real, _ = shapes.make_batch(32, seed=987_654)  # held-out dataset images
    recon = sampling.sample(model, sampling.invert(model, real, args.steps), args.steps)
    recon_db = psnr(recon, real)

    layers = [DEFAULT_LAYER, "down_blocks.3.attentions.0", "up_blocks.0.attentions.0", "up_blocks.0.attentions.1"]
    numbers = {
        "training_steps": state["step"],
        "final_loss": state["log"][-1]["loss"],
        "valid_sample_rate": round(float(est.valid.float().mean()), 4),
        "kind_frequencies_valid": [round(v, 3) for v in kind_freq.tolist()],
        "size_mean_valid_vs_data": [round(float(est.size[est.valid].mean()), 4), round(float(truth["size"].mean()), 4)],
        "sampling_s_per_image_median": round(float(torch.tensor(times).median()), 4),
        "inversion_psnr_db_median": round(float(recon_db.median()), 2),
        "inversion_psnr_db_min": round(float(recon_db.min()), 2),
        "spectra": {
            layer: {"trained": spectrum_stats(model.unet, layer), "init": spectrum_stats(init, layer)}
            for layer in layers
        },
        "relative_weight_change": {layer: relative_change(model.unet, init, layer) for layer in layers},
        "steps": args.steps,
    }
    write_card(args.out, numbers, card(numbers, state["config"]), images, real, recon, "data", scale=3)


if __name__ == "__main__":
    main()
