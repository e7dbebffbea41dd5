"""Measure the Fashion-MNIST model and write its model card and results/fashion.{json,md,png}.

Sample quality: Frechet distance on the project's own classifier features (FD-ours) between generated samples and
real test photos, next to the same distance between real training and test photos (the floor at this sample count);
class balance of the samples. DDIM inversion of real test photos: PSNR and SSIM. Attention spectra, trained vs
init. Then what the top directions of each decomposition do to REAL photos (inverted, then edited): how often the
classifier's class changes and into what, and the change of measured attributes (area, brightness, width, height,
in units of their std over the test set), against random directions and h-space PCA at the same location.

    python benchmarks/fashion.py --checkpoint training/fashion32/checkpoint --out eigenedit/pretrained/fashion32
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from diffusers import UNet2DModel

sys.path.insert(0, str(Path(__file__).parent))
from model_card import relative_change, spectrum_stats  # noqa: E402
from readme_section import replace_section  # noqa: E402

from eigenedit.core import sampling  # noqa: E402
from eigenedit.core.directions import Directions, compute_directions  # noqa: E402
from eigenedit.core.io import atomic_write, image_grid, save_png  # noqa: E402
from eigenedit.data import fashion  # noqa: E402
from eigenedit.evaluation.baselines import collect_hidden, pca_directions  # noqa: E402
from eigenedit.evaluation.evaluate import zeroing_sensitivity  # noqa: E402
from eigenedit.evaluation.metrics import frechet_distance, ssim  # noqa: E402
from eigenedit.models import load_model  # noqa: E402
from eigenedit.training import export_pipeline  # noqa: E402

MIN_EFFECT = 0.25  # std units, as in eigenedit.evaluation
METHODS = ("qk", "ov-left", "ov-right", "qkv", "random", "pca-h")


@torch.no_grad()
def predict(classifier: fashion.FashionClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and features, in batches."""
    probs, feats = [], []
    for sl in sampling.batched(len(images), 500):
        f = classifier.features(images[sl])
        feats.append(f)
        probs.append(classifier.head(f).softmax(1))
    return torch.cat(probs), torch.cat(feats)


def score(classifier, plain: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor, attr_std: dict) -> dict:
    """Class changes and attribute changes of one direction (same images in the same order)."""
    base_cls = predict(classifier, plain)[0].argmax(1)
    base_attr = fashion.attributes(plain)
    out: dict = {}
    for sign, images in (("plus", plus), ("minus", minus)):
        cls = predict(classifier, images)[0].argmax(1)
        changed = cls != base_cls
        pairs = Counter(
            (fashion.CLASSES[a], fashion.CLASSES[b])
            for a, b in zip(base_cls[changed].tolist(), cls[changed].tolist(), strict=True)
        )
        attr = fashion.attributes(images)
        out[sign] = {
            "class_change": float(changed.float().mean()),
            "top_transition": "->".join(pairs.most_common(1)[0][0]) if pairs else "",
            "attributes": {a: float((attr[a] - base_attr[a]).mean() / attr_std[a]) for a in fashion.ATTRIBUTES},
        }
    magnitude = {
        a: (abs(out["plus"]["attributes"][a]) + abs(out["minus"]["attributes"][a])) / 2
        for a in out["plus"]["attributes"]
    }
    dominant = max(magnitude, key=magnitude.get)
    p, m = out["plus"]["attributes"][dominant], out["minus"]["attributes"][dominant]
    out["dominant"] = dominant
    out["effect"] = magnitude[dominant]
    out["monotonic"] = p * m < 0 and min(abs(p), abs(m)) >= MIN_EFFECT
    out["label"] = (("+" if p >= m else "-") + dominant) if magnitude[dominant] >= MIN_EFFECT else "none"
    out["class_change"] = (out["plus"]["class_change"] + out["minus"]["class_change"]) / 2
    out["pixel_change"] = float(((plus - plain).abs().mean() + (minus - plain).abs().mean()) / 4)
    return out


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def method_directions(model, method: str, layer: str, location: str, k: int, pca_seeds: int) -> Directions:
    if method == "pca-h":
        hidden = collect_hidden(model, list(range(10_000, 10_000 + pca_seeds)), location=location)
        return pca_directions(hidden, k)
    return compute_directions(model.unet, layer, method).top(k)


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
        f"Edits of {n['edits']['images']} real test photos (inverted, {n['edits']['steps']} steps, alpha "
        f"+-{n['edits']['alpha']}, t >= {n['edits']['t_edit']}), top {n['edits']['k']} directions per method. "
        "Attribute changes in std over the test set; monotonic = the dominant attribute moves both ways by >= "
        f"{MIN_EFFECT} std; class change = share of photos the classifier puts in another class.",
        "",
        "| location | directions | monotonic | mean effect | mean class change | mean pixel change | labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in n["edits"]["rows"]:
        scores = row["directions"]
        mono = sum(s["monotonic"] for s in scores)
        labels = ", ".join(
            s["label"]
            + (f" ({s['plus']['top_transition'] or s['minus']['top_transition']})" if s["class_change"] >= 0.25 else "")
            for s in scores
        )

        def mean(key: str, scores: list = scores) -> float:
            return sum(s[key] for s in scores) / len(scores)

        lines.append(
            f"| {row['location']} | {row['method']} | {mono}/{len(scores)} | {mean('effect'):.2f} | "
            f"{mean('class_change'):.2f} | {mean('pixel_change'):.3f} | {labels} |"
        )
    zero = ", ".join(f"`{loc}` {v:.4f}" for loc, v in n["zeroing"].items())
    lines += [
        "",
        f"Mean pixel change (0..1) when a module's output is replaced by zeros at every step: {zero}.",
        "",
        f"One edit / one plain sample (median time ratio, same run): {n['edits']['edit_over_plain']:.3f}.",
        "",
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


def measured_defaults(rows: list[dict], alpha: float) -> dict:
    """The weight decomposition and location with the most monotonic directions (then the largest mean effect)."""
    weight_rows = [r for r in rows if r["method"] not in ("random", "pca-h")]

    def key(row: dict) -> tuple:
        scores = row["directions"]
        return (sum(s["monotonic"] for s in scores), sum(s["effect"] for s in scores) / len(scores))

    best = max(weight_rows, key=key)
    return {"layer": best["layer"], "location": best["location"], "decomposition": best["method"], "t_edit": 500,
            "alphas": [-alpha, -alpha / 2, 0.0, alpha / 2, alpha]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("training/fashion32/checkpoint"))
    p.add_argument("--classifier", type=Path, default=None, help="default: OUT/classifier (trained if missing)")
    p.add_argument("--out", type=Path, default=Path("eigenedit/pretrained/fashion32"))
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--edit-images", type=int, default=32)
    p.add_argument("--edit-steps", type=int, default=20)
    p.add_argument("--alpha", type=float, default=4.0)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--pca-seeds", type=int, default=200)
    p.add_argument("--no-readme", dest="readme", action="store_false", help="do not update README.md's section")
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
    real = test_x[-args.edit_images :]
    recon = sampling.sample(model, sampling.invert(model, real, args.steps), args.steps)
    ps, ss = sampling.psnr(recon, real), ssim(recon, real)
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

    # edits of real photos
    attr_std = {a: float(v.std()) for a, v in fashion.attributes(test_x).items()}
    x_real = sampling.invert(model, real, args.edit_steps)
    plain = sampling.sample(model, x_real, args.edit_steps)
    rows, grid_rows, grid_labels = [], [], []
    for layer, location in (
        ("up_blocks.0.attentions.1", "up_blocks.0.attentions.1"),
        ("mid_block.attentions.0", "mid_block"),
    ):
        for method in METHODS:
            dirs = method_directions(model, method, layer, location, args.k, args.pca_seeds)
            k = len(dirs)
            alphas = torch.cat([torch.eye(k), -torch.eye(k)]).repeat_interleave(len(real), 0) * args.alpha
            edited = sampling.edit_images(model, x_real.repeat(2 * k, 1, 1, 1), dirs, alphas, args.edit_steps,
                                         t_edit=defaults["t_edit"], location=location)  # fmt: skip
            plus, minus = edited[: k * len(real)], edited[k * len(real) :]
            scores = [score(classifier, plain, plus[j * len(real) : (j + 1) * len(real)],
                            minus[j * len(real) : (j + 1) * len(real)], attr_std) for j in range(k)]  # fmt: skip
            rows.append({"location": location, "layer": layer, "method": method, "directions": scores})
            print(
                location,
                method,
                [(s["label"], round(s["effect"], 2), round(s["class_change"], 2)) for s in scores],
                flush=True,
            )
            if location == defaults["location"] and method in ("qk", "pca-h"):
                for j in range(min(2, k)):
                    grid_rows.append(torch.stack([minus[j * len(real)], plain[0], plus[j * len(real)]]))
                    grid_labels.append(f"{method} {j}: {scores[j]['label']}")

    # timing: one edit vs one plain sample on the same batch
    dirs = compute_directions(model.unet, defaults["layer"], "qk").top(1)
    ratios = []
    for _ in range(5):
        t0 = time.perf_counter()
        sampling.sample(model, x_real[:16], args.edit_steps)
        t1 = time.perf_counter()
        sampling.edit_images(
            model, x_real[:16], dirs, torch.full((16, 1), args.alpha), args.edit_steps, location=defaults["location"]
        )
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    n["edits"] = {"images": len(real), "steps": args.edit_steps, "alpha": args.alpha, "t_edit": defaults["t_edit"],
                  "k": args.k, "rows": rows, "edit_over_plain": float(torch.tensor(ratios).median())}  # fmt: skip

    args.results.mkdir(exist_ok=True)
    write_text(args.results / "fashion.json", json.dumps(n, indent=1) + "\n")
    write_text(args.results / "fashion.md", markdown(n))
    save_png(image_grid(torch.cat(grid_rows), len(grid_rows), 3, grid_labels, ["-alpha", "plain", "+alpha"], scale=3),
             args.results / "fashion.png")  # fmt: skip
    write_text(args.out / "numbers.json", json.dumps(n, indent=1) + "\n")
    write_text(args.out / "README.md", card(n, state["config"]))
    n["defaults"] = measured_defaults(rows, args.alpha)
    write_text(args.out / "eigenedit.json", json.dumps(n["defaults"], indent=1) + "\n")
    save_png(image_grid(images[:64], 8, 8, scale=2), args.out / "samples.png")
    save_png(
        image_grid(torch.cat([real[:8], recon[:8]]), 2, 8, ["test photo", "inverted"], scale=3),
        args.out / "inversion.png",
    )
    print(markdown(n))
    if args.readme:
        replace_section("fashion", markdown(n).split("\n", 1)[1])  # without the title line


if __name__ == "__main__":
    main()
