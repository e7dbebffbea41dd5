"""Measure the Fashion-MNIST model and write its model card and results/fashion.{json,md,png}.

Sample quality: Frechet distance on the project's own classifier features (FD-ours) between generated samples and
real test photos, next to the same distance between real training and test photos (the floor at this sample count);
class balance of the samples. DDIM inversion of real test photos: PSNR and SSIM. Attention spectra, trained vs
init. Then what the top directions of each decomposition do to REAL photos (inverted, then edited), measured by the
shared evaluation (``eigenedit.evaluation.evaluate``) with the fashion probe (the classifier's class and confidence;
area, brightness, width, height in units of their std over the test set) and the label-free metrics, against random
directions, h-space PCA and Park et al.'s pullback. Test photo i plays seed i: selection photos (which choose the
recommended defaults) and test photos (every reported number) are disjoint.

    python -m benchmarks.fashion --checkpoint training/fashion32/checkpoint --out eigenedit/pretrained/fashion32
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DModel

from benchmarks.model_card import relative_change, spectrum_stats, write_card, write_text
from eigenedit.apps.arguments import parse_seeds
from eigenedit.core import sampling
from eigenedit.core.directions import compute_directions
from eigenedit.data import fashion
from eigenedit.evaluation.evaluate import EvalConfig, evaluate_locations, zeroing_sensitivity
from eigenedit.evaluation.metrics import frechet_distance, psnr, ssim
from eigenedit.evaluation.probes import fashion_probe
from eigenedit.evaluation.report import best_attention_method
from eigenedit.evaluation.report import markdown as eval_markdown
from eigenedit.imaging import image_grid, save_png
from eigenedit.models import load_model
from eigenedit.training import export_pipeline


@torch.no_grad()
def predict(classifier: fashion.FashionClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and features, in batches."""
    probs, feats = [], []
    for sl in sampling.batched(len(images), 500):
        f = classifier.features(images[sl])
        feats.append(f)
        probs.append(classifier.head(f).softmax(1))
    return torch.cat(probs), torch.cat(feats)


def markdown(n: dict) -> str:
    q, inv = n["sample_quality"], n["inversion"]
    lines = [
        "# Fashion-MNIST model (fashion32): measured by benchmarks/fashion.py",
        "",
        f"Classifier probe (trained by the project): test accuracy {n['classifier_test_accuracy']:.3f}.",
        f"Samples ({q['samples']}, {q['steps']} DDIM steps): FD-ours to real test photos {q['fd_samples_test']:.2f}; "
        f"real train vs test at the same count {q['fd_train_test']:.2f}; pure-noise images {q['fd_noise_test']:.1f}. "
        f"Mean classifier confidence {q['mean_confidence']:.3f} (real test photos {q['mean_confidence_real']:.3f}); "
        f"class frequencies {q['class_frequencies']}.",
        f"DDIM inversion of {inv['images']} real test photos ({inv['steps']} steps): "
        f"PSNR median {inv['psnr_median']:.2f} dB (min {inv['psnr_min']:.2f}), "
        f"SSIM median {inv['ssim_median']:.3f} (min {inv['ssim_min']:.3f}).",
        "",
        f"Edits of real test photos (inverted, {n['edits']['steps']} steps); photo index = seed.",
        "",
        eval_markdown(n["edits"]["runs"]),
    ]
    return "\n".join(lines)


def card(n: dict, config: dict) -> str:
    """The model card, every number from ``n`` (this script's measurements) or the training config."""
    q, inv, unet = n["sample_quality"], n["inversion"], config["unet"]
    rows = [
        f"| {layer} | {name} | {s['trained'][name]['top5']} | {s['init'][name]['top5']} | "
        f"{s['trained'][name]['effective_rank']} / {s['init'][name]['effective_rank']} |"
        for layer, s in n["spectra"].items()
        for name in ("qk", "ov-left", "qkv")
    ]
    change = "; ".join(
        f"{layer}: " + ", ".join(f"W_{m} {v}" for m, v in c.items()) for layer, c in n["relative_weight_change"].items()
    )
    return (
        f"""# fashion32: a small DDPM on Fashion-MNIST, trained by eigenedit

A DDPM ({config["prediction_type"]} prediction, {config["beta_schedule"]} betas, 1000 steps) on Fashion-MNIST
(Debian `dataset-fashion-mnist`: 28x28 grey photos of clothes, padded to 32x32), trained by
`python -m eigenedit.training --dataset fashion-mnist` (config and loss log:
`training/fashion32/checkpoint/state.json`).
EMA weights, diffusers `UNet2DModel` + `DDPMScheduler` layout. `classifier/` holds the project's probe classifier
(`eigenedit.data.fashion.FashionClassifier`, test accuracy {n["classifier_test_accuracy"]:.3f}).

- UNet: block_out_channels {list(unet["block_out_channels"])}, layers_per_block {unet["layers_per_block"]}, attention
  head dim {unet["attention_head_dim"]}, self-attention at 4x4 (down block 3, up block 0, mid-block).
- Training: {n["training_steps"]} steps of batch {config["batch_size"]}, AdamW lr {config["lr"]} (warm-up
  {config["warmup_steps"]}, cosine to {config["min_lr"]}), weight decay {config["weight_decay"]} on matrices, min-SNR
  gamma {config["snr_gamma"]}, EMA {config["ema_decay"]}; final training loss {n["final_loss"]:.4f}.

## Measured by `benchmarks/fashion.py`

- Samples ({q["samples"]}, {q["steps"]} DDIM steps): Frechet distance on the classifier's features to real test
  photos {q["fd_samples_test"]:.2f} (real train vs test photos, same count: {q["fd_train_test"]:.2f}; noise images:
  {q["fd_noise_test"]:.1f}); mean classifier confidence {q["mean_confidence"]:.3f} (real photos
  {q["mean_confidence_real"]:.3f}); predicted class frequencies {q["class_frequencies"]}.
- DDIM inversion of {inv["images"]} real test photos ({inv["steps"]} steps): PSNR median {inv["psnr_median"]:.2f} dB
  (min {inv["psnr_min"]:.2f}), SSIM median {inv["ssim_median"]:.3f} (min {inv["ssim_min"]:.3f}).

## Attention spectra, trained vs initialisation (absolute values, merged heads)

| layer | decomposition | trained top 5 | init top 5 | effective rank trained / init |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + f"""

Relative change of the weights from initialisation, ||W - W0|| / ||W0||: {change}.

![samples](samples.png) ![inversion](inversion.png)
"""
    )


def measured_defaults(runs: list[dict], alpha: float) -> dict:
    """The weight decomposition and location the probe ranks first on the selection photos."""
    best = best_attention_method(runs)
    spec = next(r["methods"][best["name"]]["spec"] for r in runs if r["config"]["location"] == best["location"])
    return {"layer": spec["layer"], "location": best["location"], "decomposition": spec["decomposition"],
            "t_edit": 500, "alphas": [-alpha, -alpha / 2, 0.0, alpha / 2, alpha]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("training/fashion32/checkpoint"))
    p.add_argument("--classifier", type=Path, default=None, help="default: OUT/classifier (trained if missing)")
    p.add_argument("--out", type=Path, default=Path("eigenedit/pretrained/fashion32"))
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--selection-photos", type=parse_seeds, default=list(range(8)), help="test-set indices (0-7)")
    p.add_argument("--test-photos", type=parse_seeds, default=list(range(9968, 10000)), help="(9968-9999)")
    p.add_argument("--pullback-photos", type=int, default=4, help="photos for Park et al.'s pullback (slow)")
    p.add_argument("--edit-steps", type=int, default=20)
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--pca-seeds", type=int, default=200)
    args = p.parse_args()
    torch.manual_seed(0)

    export_pipeline(args.checkpoint, args.out)
    classifier_dir = args.classifier or args.out / "classifier"
    if args.classifier is not None and args.classifier.resolve() != (args.out / "classifier").resolve():
        shutil.copytree(args.classifier, args.out / "classifier", dirs_exist_ok=True)
    classifier = fashion.FashionClassifier.from_pretrained(classifier_dir)
    defaults = {"layer": "up_blocks.0.attentions.1", "location": "up_blocks.0.attentions.1", "decomposition": "qk",
                "t_edit": 500, "alphas": [-args.alpha, -args.alpha / 2, 0.0, args.alpha / 2, args.alpha]}  # fmt: skip
    write_text(args.out / "eigenedit.json", json.dumps(defaults, indent=1) + "\n")
    model = load_model(str(args.out))
    state = json.loads((args.checkpoint / "state.json").read_text())
    torch.manual_seed(state["config"]["seed"])
    init = UNet2DModel(**state["config"]["unet"]).eval()
    test_x, test_y = fashion.load("test")
    train_x, _ = fashion.load("train")
    n = {"training_steps": state["step"], "final_loss": state["log"][-1]["loss"]}
    n["classifier_test_accuracy"] = fashion.accuracy(classifier, test_x, test_y)

    # sample quality
    x = sampling.noise_from_seeds(model, range(args.samples))
    images = torch.cat([sampling.sample(model, x[s], args.steps) for s in sampling.batched(len(x), 100)])
    probs, feats = predict(classifier, images)
    real_probs, real_feats = predict(classifier, test_x[: args.samples])
    train_feats = predict(classifier, train_x[: args.samples])[1]
    noise_feats = predict(
        classifier, torch.randn(args.samples, 1, 32, 32, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    )[1]
    freq = torch.bincount(probs.argmax(1), minlength=10).float() / len(probs)
    n["sample_quality"] = {
        "samples": args.samples,
        "steps": args.steps,
        "fd_samples_test": frechet_distance(feats, real_feats),
        "fd_train_test": frechet_distance(train_feats, real_feats),
        "fd_noise_test": frechet_distance(noise_feats, real_feats),
        "mean_confidence": float(probs.max(1).values.mean()),
        "mean_confidence_real": float(real_probs.max(1).values.mean()),
        "class_frequencies": {c: round(float(f), 3) for c, f in zip(fashion.CLASSES, freq, strict=True)},
    }
    print(json.dumps(n, indent=1), flush=True)

    # inversion of real test photos (the last ones: never used for anything else here)
    real = test_x[args.test_photos]
    recon = sampling.sample(model, sampling.invert(model, real, args.steps), args.steps)
    ps, ss = psnr(recon, real), ssim(recon, real)
    n["inversion"] = {"images": len(real), "steps": args.steps, "psnr_median": float(ps.median()),
                      "psnr_min": float(ps.min()), "ssim_median": float(ss.median()),
                      "ssim_min": float(ss.min())}  # fmt: skip
    print(json.dumps(n["inversion"]), flush=True)

    layers = [
        "mid_block.attentions.0",
        "down_blocks.3.attentions.0",
        "up_blocks.0.attentions.0",
        "up_blocks.0.attentions.1",
    ]
    n["spectra"] = {
        layer: {"trained": spectrum_stats(model.unet, layer), "init": spectrum_stats(init, layer)} for layer in layers
    }
    n["relative_weight_change"] = {layer: relative_change(model.unet, init, layer) for layer in layers}

    locations = ("mid_block", "mid_block.attentions.0", "up_blocks.0.attentions.1")
    n["zeroing"] = {loc: zeroing_sensitivity(model, list(range(12)), args.edit_steps, loc) for loc in locations}

    # edits of real photos: photo i of the test set plays seed i (its DDIM inversion is x_T)
    def inverted(m, photos: list[int]) -> torch.Tensor:
        return sampling.invert(m, test_x[photos], args.edit_steps)

    cfg = EvalConfig(seeds=args.test_photos, selection_seeds=args.selection_photos, k=args.k, alpha=args.alpha,
                     num_steps=args.edit_steps, t_edit=defaults["t_edit"], pca_samples=args.pca_seeds,
                     layers=("mid_block.attentions.0",), per_head=False,
                     pullback_seeds=args.pullback_photos)  # fmt: skip
    probe = fashion_probe(classifier_dir)
    runs = evaluate_locations(model, cfg, ["up_blocks.0.attentions.1", "mid_block"], probe=probe, noise=inverted)
    n["edits"] = {"images": len(args.test_photos), "selection_images": len(args.selection_photos),
                  "steps": args.edit_steps, "alpha": args.alpha, "t_edit": defaults["t_edit"], "k": args.k,
                  "runs": runs}  # fmt: skip
    chosen = measured_defaults(runs, args.alpha)
    dirs = compute_directions(model.unet, chosen["layer"], chosen["decomposition"]).top(3)
    x_first = inverted(model, args.test_photos[:1])
    edit = sampling.Edit(dirs, sampling.sweep_alphas(3, [-args.alpha, 0.0, args.alpha]), t_edit=chosen["t_edit"],
                         location=chosen["location"])  # fmt: skip
    strip = sampling.edit_images(model, x_first.repeat(9, 1, 1, 1), edit, args.edit_steps)
    grid_labels = [f"{chosen['decomposition']} {j}" for j in range(3)]

    args.results.mkdir(exist_ok=True)
    write_text(args.results / "fashion.json", json.dumps(n, indent=1) + "\n")
    write_text(args.results / "fashion.md", markdown(n))
    save_png(image_grid(strip, 3, 3, grid_labels, ["-alpha", "plain", "+alpha"], scale=3), args.results / "fashion.png")
    write_card(args.out, n, card(n, state["config"]), images, real, recon, "test photo", scale=3)
    n["defaults"] = chosen
    write_text(args.out / "eigenedit.json", json.dumps(n["defaults"], indent=1) + "\n")
    print(markdown(n))


if __name__ == "__main__":
    main()
