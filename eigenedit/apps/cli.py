"""``eigenedit`` command line: layers, directions, edit, sweep, invert, evaluate, ui, batch, export-lora, train."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from eigenedit.apps import lora_cli
from eigenedit.apps.arguments import (
    add_cg_steps_option,
    common_parser,
    parse_alpha,
    parse_alphas,
    parse_guidance,
    parse_seed,
    parse_seed_spec,
    parse_seeds,
    parse_term,
    positive_int,
    run,
)
from eigenedit.apps.batch import add_batch_parser
from eigenedit.apps.guards import (
    OneLineParser,
    check_output_size,
    check_provenance,
    check_schedule,
    model_identity,
    note,
    note_placement,
    warn_strengths,
    warn_unreached,
)
from eigenedit.core import defaults, operators, sampling
from eigenedit.core.attention import DEFAULT_LAYER
from eigenedit.core.defaults import GENERIC_DEFAULTS
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS
from eigenedit.core.io import check_writable
from eigenedit.evaluation.metrics import psnr
from eigenedit.imaging import DEFAULT_RESIZE, IMAGE_FORMATS, RESIZE_MODES, image_grid, read_image, save_image
from eigenedit.models import DiffusionModel, load_model
from eigenedit.models.stable_diffusion import DEFAULT_GUIDANCE


def open_model(args) -> DiffusionModel:
    """Load --model and fill every option the user left unset from the model's eigenedit.json, then the generic
    defaults (the shipped model's file holds the choices its evaluation favoured); then check --steps and
    --t-edit against the model."""
    model = load_model(args.model, allow_pickle=getattr(args, "allow_pickle", False))
    has_schedule = hasattr(args, "steps") and hasattr(args, "t_edit")  # before the defaults fill them in
    # what the user chose (not filled in below): a --directions file must match it
    args.requested = {name: getattr(args, name, None) for name in ("layer", "decomposition", "head", "fold_norm")}
    given = {name: getattr(args, name, None) for name in GENERIC_DEFAULTS}
    settings = defaults.resolve(model, **given)
    for name, value in given.items():
        if value is None:  # also options a command has no flag for (labelling uses them)
            resolved = getattr(settings, name)
            setattr(args, name, list(resolved) if name == "alphas" else resolved)
    if getattr(args, "scale", 0) is None:
        args.scale = 1 if model.latent else 4
    if has_schedule:
        check_schedule(model, args.steps, args.t_edit)
    set_prompt(args, model)
    if getattr(args, "difficulty", None) is not None:
        model.set_difficulty(args.difficulty)  # a ValueError for models without one; checked there: 1 to 100
    return model


def set_prompt(args, model: DiffusionModel) -> None:
    """--prompt, --negative-prompt, --guidance: conditioning, for models that take it (Stable Diffusion, SDXL,
    PixArt, SD3, Flux: text; DiT: a class index or label)."""
    prompt, negative, guidance = (getattr(args, name, None) for name in ("prompt", "negative_prompt", "guidance"))
    if not model.conditional:
        given = [f for f, v in (("--prompt", prompt), ("--negative-prompt", negative), ("--guidance", guidance)) if v]
        if given:
            raise ValueError(
                f"{'/'.join(given)} needs a text-conditioned (Stable Diffusion) model; {args.model!r} is unconditional"
            )
        return
    if guidance is None:  # DDIM inversion reconstructs well only without guidance
        guidance = 1.0 if getattr(args, "image", None) is not None else model.default_guidance
    model.set_prompt(prompt or "", negative or "", guidance)


def direction_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--layer", default=None, help=f"self-attention layer (default: the model's, else {DEFAULT_LAYER})")
    p.add_argument("--decomposition", default=None, choices=(*DECOMPOSITIONS, "random"), help="default: the model's")
    p.add_argument("--head", type=int, default=None, help="one head (default: all heads merged)")
    p.add_argument("--fold-norm", action="store_true", help="fold the GroupNorm scale into the weights")
    p.add_argument("--directions", type=Path, default=None, help="a saved directions file (overrides the above)")
    p.add_argument(
        "--force", action="store_true", help="apply a --directions file made for another model or layer anyway"
    )
    return p


def label_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--label",
        action="store_true",
        help="name each direction by what it moves most at the protocol's matched change (models with a probe), "
        "and by the protocol's verdict where it measured it",
    )
    return p


def sampling_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of the generated image (ignored with --image)")
    p.add_argument("--image", type=Path, default=None, help="edit a real image (DDIM-inverted first)")
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=DEFAULT_RESIZE,
        help="fit --image to the model's size: center-crop (default), pad, stretch, or none (must match)",
    )
    p.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the model's, else 50)")
    p.add_argument("--t-edit", type=int, default=None, help="edit at timesteps t >= t_edit (default: the model's)")
    p.add_argument("--location", default=None, help="module whose output is shifted (default: the model's)")
    p.add_argument("--asymmetric", action="store_true", help="Asyrp's asymmetric reverse process")
    p.add_argument(
        "--operator", default=None, choices=operators.OPERATORS, help="how a direction acts (default: the model's)"
    )
    add_cg_steps_option(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--scale", type=positive_int, default=None, help="upscaling of the PNG (default 4; latent models 1)")
    p.add_argument("--difficulty", type=int, default=None, help="terrain difficulty 1..100 (terrain128; default 50)")
    p.add_argument("--prompt", default=None, help="text prompt (Stable Diffusion models)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (Stable Diffusion models)")
    p.add_argument(
        "--guidance",
        type=parse_guidance,
        default=None,
        help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}; 1 with --image; <= 1: none)",
    )
    return p


def get_directions(args, model: DiffusionModel) -> Directions:
    if args.directions is not None:
        dirs = Directions.load(args.directions, expect_dim=operators.location_dims(model, args.location))
        requested = getattr(args, "requested", None) or {}
        check_provenance(dirs, args.directions, model.model_id, requested, args.force)
        note_placement(dirs, args.directions, None if requested.get("layer") else args.layer, args.location)
        return dirs
    identity = model_identity(model.model_id)
    # -k (directions, sweep): only the top k, by the fast solver on wide layers (core.topk)
    k = getattr(args, "k", None)
    return compute_directions(
        model.unet,
        args.layer,
        args.decomposition,
        args.head,
        args.fold_norm,
        identity,
        k=k,
        read=model.attention_weights,
    )


def maybe_label(args, model: DiffusionModel, dirs: Directions) -> Directions:
    """With --label: name each direction by the protocol's reading (``evaluation.reading``: what it moves most
    at matched change, on 4 seeds) and the protocol's stored verdict, e.g. "-hair_color (protocol: not precise)"."""
    if not args.label:
        return dirs
    from eigenedit.evaluation import reading

    steps = min(getattr(args, "steps", 20), 20)
    return reading.label_directions(model, dirs, args.operator, args.location, args.t_edit, steps)


def row_titles(args, model: DiffusionModel, dirs: Directions) -> list[str]:
    """A sweep's row titles: each direction's --label, else the protocol's stored verdict on it (its measured
    rho against random directions, and whether it is precise), else its eigen/singular value."""
    from eigenedit.evaluation import reading

    if any(dirs.labels):
        return [f"{i}: {lab}" for i, lab in enumerate(dirs.labels)]
    verdicts = reading.protocol_verdicts(model, dirs, args.operator, args.location)
    if not any(verdicts):
        return [f"{i} ({v:.3g})" for i, v in enumerate(dirs.values.tolist())]
    return [f"{i}: {reading.verdict_text(v)}" for i, v in enumerate(verdicts)]


def starting_noise(args, model: DiffusionModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x_T from --seed, or from the DDIM inversion of --image (also returned, for PSNR)."""
    if args.image is None:
        return sampling.noise_from_seeds(model, [args.seed]), None
    image = load_input(args, model)
    return sampling.invert(model, model.encode(image), args.steps, progress=True), image


def load_input(args, model: DiffusionModel) -> torch.Tensor:
    """--image converted to the model's mode and size as --resize says (one note line if it changed)."""
    image, changed = read_image(args.image, model.image_shape, args.resize)
    if changed:
        hint = "; --resize picks another way" if args.resize == DEFAULT_RESIZE and "resized" in changed else ""
        note(f"{args.image} {changed}{hint}")
    return image


def edit_from(args, directions: Directions, alphas: torch.Tensor) -> sampling.Edit:
    """The edit the sampling options ask for (--t-edit, --location, --asymmetric, --operator, --cg-steps)."""
    return sampling.Edit(
        directions=directions,
        alphas=alphas,
        t_edit=args.t_edit,
        location=args.location,
        asymmetric=args.asymmetric,
        operator=args.operator,
        cg_steps=args.cg_steps,
    )


def cmd_layers(args) -> None:
    model = open_model(args)
    layers = model.attention_layers()  # models with more inputs (SDXL) or a token grid (transformers): their own way
    width = max([32, *(len(layer.name) for layer in layers)])  # Stable Diffusion's names are longer
    print(f"{'layer':{width}s} {'channels':>8s} {'heads':>5s} {'head_dim':>8s} {'resolution':>10s}  projections")
    for layer in layers:  # resolution: a UNet layer's H x W, a transformer's image token grid
        res = "x".join(map(str, layer.resolution)) if layer.resolution else "?"
        print(
            f"{layer.name:{width}s} {layer.channels:8d} {layer.heads:5d} {layer.head_dim:8d} {res:>10s}  "
            f"{layer.projections}"
        )


def cmd_directions(args) -> None:
    if args.output is not None:
        check_writable(args.output)
    model = open_model(args)
    start = time.perf_counter()
    dirs = get_directions(args, model)
    elapsed = time.perf_counter() - start
    k = len(dirs) if args.k is None else args.k
    dirs = maybe_label(args, model, dirs.top(k))
    meta = dirs.metadata
    print(f"{meta.get('decomposition')} directions of {meta.get('layer')} ({dirs.dim}-dim), {elapsed * 1e3:.1f} ms")
    if args.report:
        print_report(args, model, dirs)
    else:
        for i, (value, label) in enumerate(zip(dirs.values.tolist(), dirs.labels, strict=True)):
            print(f"{i:4d} {value:12.5f} {label}")
    if args.output is not None:
        dirs.save(args.output)
        print(f"saved {len(dirs)} directions to {args.output}")


def print_report(args, model: DiffusionModel, dirs: Directions) -> None:
    """--report: the label-free metrics of every direction (and the probe's label where the model has a probe)."""
    from eigenedit.evaluation.evaluate import direction_report, seed_text
    from eigenedit.evaluation.labelfree import is_consistent_edit
    from eigenedit.evaluation.probes import load_probe

    probe = "auto" if args.probe is None else (None if args.probe == "none" else load_probe(args.probe))
    alpha = args.report_alpha or max(abs(a) for a in args.alphas)
    steps = min(args.steps, 20)
    report = direction_report(model, dirs, args.report_seeds, alpha, steps, args.t_edit, args.location, probe)
    reference = report["random"]["mean_pixel_change"]
    print(
        f"label-free metrics on seeds {seed_text(report['seeds'])}, alpha +-{alpha:g} (5 strengths), {steps} DDIM "
        f"steps, edits at {args.location} (t >= {args.t_edit}); random directions: pixel change {reference:.4f}, "
        f"consistency {report['random']['mean_consistency']:.2f}, R^2 {report['random']['mean_linearity']:.2f}"
    )
    print(f"{'#':>4s} {'value':>12s} {'x random':>8s} {'R^2':>5s} {'consist':>7s} {'SSIM':>5s} {'edit':>4s} label")
    for i, (value, r) in enumerate(zip(dirs.values.tolist(), report["directions"], strict=True)):
        f = r["labelfree"]
        ok = "yes" if is_consistent_edit(f, reference) else "no"
        label = r["probe"]["label"] if r["probe"] else (dirs.labels[i] if dirs.labels[i] else "")
        print(
            f"{i:4d} {value:12.5f} {f['pixel_change'] / reference:8.2f} {f['linearity']:5.2f} "
            f"{f['consistency']:7.2f} {f['ssim']:5.3f} {ok:>4s} {label}"
        )


def cmd_edit(args) -> None:
    check_writable(args.output, IMAGE_FORMATS)
    model = open_model(args)
    tiles = 1 if not args.compare else 2 if args.image is None else 3
    check_output_size(model.image_shape, 1, tiles, args.scale, "--scale")
    loras = lora_cli.read_loras(args, model, default=1.0)
    dirs = get_directions(args, model)
    terms = args.edit or [(0, 0.0 if loras else 1.0)]  # --lora alone: the LoRA's edit only
    chosen = dirs.select([i for i, _ in terms])
    alphas = torch.tensor([[a for _, a in terms]])
    x_t, image = starting_noise(args, model)
    edit = edit_from(args, chosen, alphas)
    with lora_cli.merged(model, loras):
        edited = sampling.edit_images(model, x_t, edit, args.steps, progress=True)
    tiles = edited = model.decode(edited)
    if args.compare:
        plain = model.decode(sampling.sample(model, x_t, args.steps))
        tiles = torch.cat([plain, edited]) if image is None else torch.cat([image, plain, edited])
        if image is not None:
            print(f"reconstruction PSNR {psnr(plain, image).item():.2f} dB")
    warn_strengths([a for _, a in terms], model.edit_defaults, args.operator)  # after sampling: a failed edit
    warn_unreached(model, args.steps, args.t_edit)
    save_image(image_grid(tiles, 1, len(tiles), scale=args.scale), args.output)  # gives just its error line
    print(f"wrote {args.output}")


def cmd_sweep(args) -> None:
    check_writable(args.output, IMAGE_FORMATS)
    lora_cli.prepare_sweep(args)
    model = open_model(args)
    loras = lora_cli.read_loras(args, model)
    if lora_cli.sweeps_sliders(loras):  # --lora FILE without a weight: its sliders are the rows
        return lora_cli.sweep_sliders(args, model, loras, starting_noise)
    check_output_size(model.image_shape, args.k, len(args.alphas), args.scale, "--scale, -k or --alphas")
    dirs = maybe_label(args, model, get_directions(args, model).top(args.k))
    x_t, _ = starting_noise(args, model)
    alphas = sampling.sweep_alphas(len(dirs), args.alphas)
    start = time.perf_counter()
    edit, x_t = edit_from(args, dirs, alphas), x_t.expand(len(alphas), -1, -1, -1)
    with lora_cli.merged(model, loras):
        images = sampling.edit_images(model, x_t, edit, args.steps, args.batch_size, progress=True)
    images = model.decode(images)
    elapsed = time.perf_counter() - start
    col_labels = [f"a={a:g}" for a in args.alphas]
    grid = image_grid(images, len(dirs), len(args.alphas), row_titles(args, model, dirs), col_labels, scale=args.scale)
    warn_strengths(args.alphas, model.edit_defaults, args.operator)
    warn_unreached(model, args.steps, args.t_edit)
    save_image(grid, args.output)
    meta = dirs.metadata
    print(
        f"{meta.get('decomposition')} directions of {meta.get('layer')}, operator {args.operator}: "
        f"{len(images)} images in {elapsed:.1f} s"
    )
    print(f"wrote {args.output}")


def cmd_invert(args) -> None:
    if args.image is None:
        raise ValueError("invert needs --image PATH")
    check_writable(args.output, IMAGE_FORMATS)
    model = open_model(args)
    check_output_size(model.image_shape, 1, 2, args.scale, "--scale")
    image = load_input(args, model)
    x_t = sampling.invert(model, model.encode(image), args.steps, progress=True)
    recon = model.decode(sampling.sample(model, x_t, args.steps))
    print(f"reconstruction PSNR {psnr(recon, image).item():.2f} dB ({args.steps} DDIM steps)")
    save_image(
        image_grid(torch.cat([image, recon]), 1, 2, col_labels=["input", "recon"], scale=args.scale), args.output
    )
    print(f"wrote {args.output}")


def cmd_evaluate(args) -> None:
    from eigenedit.evaluation.baselines import PullbackRecipe
    from eigenedit.evaluation.evaluate import EvalConfig, evaluate_locations, seed_text, split_seeds
    from eigenedit.evaluation.probes import load_probe
    from eigenedit.evaluation.report import best_attention_method, markdown, write_report

    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise ValueError(f"output folder {args.output_dir} is a file")
    if args.strict:  # the one protocol that decides claims and shipped defaults
        from eigenedit.evaluation import protocol_run

        return protocol_run.main(["--model", args.model, "--output-dir", str(args.output_dir)]
                                 + (["--quick"] if args.quick else []))  # fmt: skip
    selection, test = split_seeds(args.seeds, args.selection_seeds, args.test_seeds)
    probe = "auto" if args.probe is None else (None if args.probe == "none" else load_probe(args.probe))
    steps = args.steps
    model = open_model(args)
    steps = steps or model.edit_defaults.get("steps", 20)
    alpha = max(abs(a) for a in args.alphas) if args.alpha is None else (None if args.alpha == "auto" else args.alpha)
    recipe = PullbackRecipe(
        rank=args.pullback_rank,
        max_iter=args.pullback_max_iter,
        edit_t=args.pullback_edit_t,
        guidance_steps=args.pullback_guidance_steps,
        guidance_scale=args.pullback_guidance_scale,
    )
    cfg = EvalConfig(
        seeds=test,
        selection_seeds=selection,
        k=args.k,
        alpha=alpha,
        num_steps=steps,
        t_edit=args.t_edit,
        location=args.location,
        pca_samples=args.pca_samples,
        pullback=recipe,
        pullback_seeds=args.pullback_seeds,
        layers=tuple(args.layers) if args.layers else None,
        per_head=not args.no_heads,
        baselines=tuple(args.baselines),
        batch_size=args.batch_size,
    )
    note(f"selection seeds {seed_text(selection)} ({len(selection)}), test seeds {seed_text(test)} ({len(test)})")
    runs = evaluate_locations(model, cfg, args.locations or [args.location], probe=probe)
    paths = write_report(runs, args.output_dir, args.stem)
    print(markdown(runs))
    best = best_attention_method(runs)
    print(f"best weight decomposition ({best['selected_on']}): {best['name']} at {best['location']}")
    print("wrote " + ", ".join(map(str, paths)))


def parse_eval_alpha(text: str) -> float | str:
    """A number, or ``auto``: calibrated on the selection seeds."""
    return "auto" if text.strip().lower() == "auto" else parse_alpha(text)


def cmd_ui(args) -> None:
    from eigenedit.apps.ui import launch

    launch(
        args.model, args.host, args.port, share=args.share == "yes", steps=args.steps, allow_pickle=args.allow_pickle
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="eigenedit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common, dirs, sampling, label = common_parser(), direction_parser(), sampling_parser(), label_parser()

    p = sub.add_parser("layers", parents=[common], help="list self-attention layers")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("directions", parents=[common, dirs, label], help="compute directions, print values, save")
    p.add_argument("-k", type=positive_int, default=None, help="keep the top k (default: all)")
    p.add_argument("-o", "--output", default=None, help="save as .safetensors")
    p.add_argument("--report", action="store_true", help="print label-free metrics of each direction (any model)")
    p.add_argument("--report-seeds", type=parse_seed_spec, default=list(range(8)), help="default 8 (seeds 0-7)")
    p.add_argument("--report-alpha", type=parse_alpha, default=None, help="default: the model's largest alpha")
    p.add_argument("--probe", default=None, help="probe for labels in the report (default: the model's; none)")
    p.set_defaults(func=cmd_directions)

    p = sub.add_parser("edit", parents=[common, dirs, sampling], help="edit one image -> PNG")
    p.add_argument("--edit", type=parse_term, action="append", metavar="INDEX:ALPHA", help="repeat to compose")
    p.add_argument("--compare", action="store_true", help="put the unedited image (and input) beside the edit")
    p.add_argument("-o", "--output", default="edit.png", help="the output image: .png, .jpg or .webp")
    lora_cli.add_lora_option(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("sweep", parents=[common, dirs, sampling, label], help="grid: top-k directions x alphas -> PNG")
    p.add_argument("-k", type=positive_int, default=5, help="number of directions (rows)")
    p.add_argument(
        "--alphas",
        type=parse_alphas,
        default=None,
        help="comma-separated, e.g. --alphas=-2,0,2",
    )
    p.add_argument("-o", "--output", default="sweep.png", help="the output grid: .png, .jpg or .webp")
    lora_cli.add_lora_option(p, sweep=True)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("invert", parents=[common, sampling], help="DDIM-invert an image and report PSNR")
    p.add_argument("-o", "--output", default="inversion.png", help="the output image: .png, .jpg or .webp")
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("evaluate", parents=[common], help="score every method against random, on held-out seeds")
    seeds = "a count (16: seeds 0-15), a range (1000-1063) or a list (0,5,7-9)"
    p.add_argument("--seeds", type=parse_seed_spec, default=None, help=f"seed pool: {seeds}; default 16")
    p.add_argument("--selection-seeds", type=parse_seeds, default=None, help="seeds that choose (default: the "
                   "pool's first quarter, or the pool minus --test-seeds)")  # fmt: skip
    p.add_argument("--test-seeds", type=parse_seeds, default=None, help="seeds of every reported number "
                   "(default: the pool minus the selection seeds); disjoint from the selection seeds")  # fmt: skip
    p.add_argument("--probe", default=None, help="attribute reader: shapes, fashion, terrain, module:function, or "
                   "none (label-free metrics only); default: the model's shipped probe")  # fmt: skip
    p.add_argument("-k", type=positive_int, default=6, help="top directions per method")
    alpha_help = "edit strength, or auto (calibrated on the selection seeds); default: the model's largest"
    p.add_argument("--alpha", type=parse_eval_alpha, default=None, help=alpha_help)
    p.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default: the model's, else 20)")
    p.add_argument("--t-edit", type=int, default=None, help="default: the model's")
    p.add_argument("--location", default=None, help="edit location (default: the model's)")
    p.add_argument("--locations", nargs="*", default=None, help="several edit locations (default: --location)")
    p.add_argument("--layers", nargs="*", default=None, help="attention layers (default: all)")
    p.add_argument("--no-heads", action="store_true", help="skip the per-head and fold-norm variants")
    p.add_argument("--baselines", nargs="*", default=["pca-h", "pullback"], choices=("pca-h", "pullback"))
    p.add_argument("--pca-samples", type=positive_int, default=500)
    p.add_argument("--pullback-rank", type=positive_int, default=5, help="Park et al.: 5")
    p.add_argument("--pullback-max-iter", type=positive_int, default=50, help="Park et al.: 50 (min 10, tol 1e-4)")
    p.add_argument("--pullback-edit-t", type=float, default=1.0, help="edit timestep / T (Park et al.: 1.0)")
    p.add_argument("--pullback-guidance-steps", type=positive_int, default=16, help="Park et al.: 16")
    p.add_argument("--pullback-guidance-scale", type=float, default=0.25, help="Park et al.: 0.25")
    p.add_argument("--pullback-seeds", type=positive_int, default=None, help="pullback on the first N test seeds")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per UNet batch (terrain128: 4)")
    p.add_argument("--output-dir", type=Path, default=Path("results"))
    p.add_argument("--stem", default="evaluation", help="file name stem of the outputs")
    p.add_argument(
        "--strict",
        action="store_true",
        help="run the strict protocol instead (a shipped model with a "
        "probe: random distributions, two test blocks, ceiling; results/protocol_MODEL.*; up to an hour)",
    )
    p.add_argument("--quick", action="store_true", help="with --strict: every code path on a few seeds (no result)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ui", parents=[common], help='web UI with sliders (needs pip install "eigenedit[ui]")')
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=positive_int, default=7860)
    p.add_argument(
        "--share", nargs="?", const="yes", default="no", choices=("no", "yes"), help="public gradio.live link"
    )
    p.add_argument("--steps", type=positive_int, default=None, help="preview DDIM steps (default: the model's, <= 10)")
    p.set_defaults(func=cmd_ui)

    add_batch_parser(sub, [common])
    lora_cli.add_export_parser(sub, [common, dirs], open_model, get_directions)

    p = sub.add_parser("train", help="train a model (shapes, or --dataset fashion-mnist; see --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=None)  # handled in main(): every argument goes to eigenedit.training
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from eigenedit.training import main as train_main

        train_main(argv[1:])
        return 0
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
