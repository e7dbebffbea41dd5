"""``eigenedit export-lora`` (directions -> a LoRA file) and ``--lora FILE[:W]`` of edit and sweep, registered by
``apps.cli``.

``--lora FILE:W`` adds W times the file's LoRA (every adapter of a pack) to the denoiser's weights while the edit
samples (``core.lora.merged``): eigenedit's own files and foreign PEFT/diffusers or kohya LoRAs of linear layers,
on every model. On edit, ``FILE`` alone means W = 1 and, without ``--edit``, no direction edit. On sweep,
``FILE`` alone sweeps the file's sliders: one row per adapter, one column per ``--alphas`` value as its weight.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from eigenedit.apps.arguments import positive_int
from eigenedit.apps.guards import check_output_size, model_identity
from eigenedit.core import lora, operators, sampling
from eigenedit.core.directions import compute_directions
from eigenedit.core.io import check_writable
from eigenedit.imaging import image_grid, save_image

LoraItem = tuple[lora.LoraFile, float | None]


def parse_lora(text: str) -> tuple[Path, float | None]:
    """``FILE`` or ``FILE:W`` (W a finite number) -> (path, weight or None)."""
    path, sep, weight = text.rpartition(":")
    if not sep:
        return Path(text), None
    try:
        value = float(weight)
    except ValueError:
        return Path(text), None  # a colon in the file name: no weight
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"the weight of --lora {text!r} must be a finite number")
    return Path(path), value


def add_lora_option(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """--lora, repeatable, on edit (``sweep``: False) or sweep."""
    alone = "sweeps its sliders (rows) over --alphas (columns)" if sweep else "means W = 1"
    parser.add_argument(
        "--lora",
        type=parse_lora,
        action="append",
        default=None,
        metavar="FILE[:W]",
        help=f"apply a LoRA file (PEFT/diffusers or kohya safetensors) at weight W; FILE alone {alone}",
    )


def read_loras(args, model, default: float | None = None) -> list[LoraItem]:
    """Every --lora file read and checked against the model's denoiser (before any sampling), with its weight
    (``default`` where none was given)."""
    items = getattr(args, "lora", None) or []
    return [(lora.read_lora(path, model.unet), default if weight is None else weight) for path, weight in items]


@contextmanager
def merged(model, loras: list[LoraItem]) -> Iterator[None]:
    """The weighted LoRAs (those with a weight) added to the denoiser's weights while inside."""
    parts = [(modules, w) for file, w in loras if w is not None for modules in file.adapters.values()]
    with lora.merged(model.unet, parts):
        yield


def prepare_sweep(args) -> None:
    """Before the model's defaults fill --operator in: a slider sweep's weights are spectral strengths, so its
    default --alphas are spectral's."""
    if any(weight is None for _, weight in getattr(args, "lora", None) or []) and args.operator is None:
        args.operator = "spectral"


def sweeps_sliders(loras: list[LoraItem]) -> bool:
    return any(weight is None for _, weight in loras)


def sweep_sliders(args, model, loras: list[LoraItem], starting_noise: Callable) -> None:
    """``sweep --lora FILE``: the grid of each slider of the weightless files (rows) at each --alphas weight
    (columns), the weighted files applied throughout; ``starting_noise(args, model)``: the CLI's x_T."""
    rows = [(file, name) for file, w in loras if w is None for name in file.adapters]
    check_output_size(model.image_shape, len(rows), len(args.alphas), args.scale, "--scale, --lora or --alphas")
    x_t, _ = starting_noise(args, model)
    fixed = [(file, w) for file, w in loras if w is not None]
    images = []
    with merged(model, fixed):
        for file, name in rows:
            for alpha in args.alphas:
                with lora.merged(model.unet, [(file.adapters[name], alpha)]):
                    images.append(sampling.sample(model, x_t, args.steps))
    images = model.decode(torch.cat(images))
    row_labels = [file.labels()[name] for file, name in rows]
    grid = image_grid(images, len(rows), len(args.alphas), row_labels, [f"w={a:g}" for a in args.alphas], args.scale)
    save_image(grid, args.output)
    print(f"{len(rows)} LoRA sliders x {len(args.alphas)} weights: {len(images)} images")
    print(f"wrote {args.output}")


def cmd_export_lora(args, open_model: Callable, get_directions: Callable) -> None:
    """``export-lora``; ``open_model`` and ``get_directions``: the CLI's (options filled in from the model's
    defaults, a --directions file checked against the model)."""
    lora.check_static(args.operator, args.t_edit)  # before loading: what no LoRA can hold
    if args.all_layers and args.directions is not None:
        raise ValueError("--all-layers computes each layer's directions: drop --directions (or --all-layers)")
    if Path(args.output).suffix != ".safetensors":
        raise ValueError(f"-o {args.output}: a LoRA file is written as .safetensors; name it so")
    check_writable(args.output)
    model = open_model(args)
    identity = model_identity(model.model_id)
    read = model.attention_weights
    count = max(args.index) + 1 if args.index else args.k
    if args.all_layers:
        decomposition, head, fold = args.decomposition, args.head, args.fold_norm
        sets = [
            compute_directions(model.unet, layer.name, decomposition, head, fold, identity, k=count, read=read)
            for layer in model.attention_layers()
        ]
    else:
        args.k = count
        sets = [get_directions(args, model)]
    chosen = [dirs.select(args.index) if args.index else dirs.top(args.k) for dirs in sets]
    sliders = [s for dirs in chosen for s in lora.weight_edits(model.unet, dirs, read)]
    lora.check_exact(sliders, args.approximate)
    dtype = lora.DTYPES[args.dtype]
    prefix = lora.denoiser_prefix(model.unet)
    lora.save_lora(sliders, args.output, args.format, prefix, args.pack, dtype, identity)
    print(f"model {identity}; unit strength: {lora.UNIT_STRENGTH}")
    for s in sliders:
        head = "" if s.head is None else f" head {s.head}"
        label = f" {s.label}" if s.label else ""
        quality = "exact" if s.exact else f"APPROXIMATE (relative error {s.error:.1%})"
        print(
            f"  {s.name}: {s.layer} (weights sha256 {s.layer_sha256[:16]}), {s.decomposition}{head} direction "
            f"{s.direction} (value {s.value:.4g}){label}, {quality}"
        )
    size = Path(args.output).stat().st_size
    held = f"{len(sliders)} adapters (a slider pack)" if args.pack else "one adapter"
    print(
        f"wrote {args.output}: {len(sliders)} sliders as {held}, {args.format} format, {args.dtype}, {size} bytes "
        f"({size / len(sliders):.0f} per slider)"
    )
    if args.pack:
        print("load a pack with eigenedit.core.lora.load_sliders(pipe, FILE): one adapter per slider")


def parse_indices(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected direction indices such as 0,2,5, got {text!r}")
    return [int(p) for p in parts]


def add_export_parser(
    sub, parents: list[argparse.ArgumentParser], open_model: Callable, get_directions: Callable
) -> None:
    """The ``export-lora`` subcommand (``parents``: the common and direction options; ``open_model`` and
    ``get_directions``: the CLI's)."""
    p = sub.add_parser(
        "export-lora",
        parents=parents,
        help="write directions as a LoRA file (diffusers/PEFT or kohya) that LoRA loaders apply as sliders",
    )
    p.add_argument("-k", type=positive_int, default=1, help="export the top k directions (default 1)")
    p.add_argument("--index", type=parse_indices, default=None, help="export these directions instead, e.g. 0,3")
    p.add_argument("--all-layers", action="store_true", help="the top k of every self-attention layer")
    p.add_argument("--format", choices=lora.FORMATS, default="diffusers", help="diffusers/PEFT keys or kohya keys")
    p.add_argument("--pack", action="store_true", help="one adapter per direction (default: one adapter for all)")
    p.add_argument("--approximate", action="store_true", help="export inexact weight changes, naming their error")
    p.add_argument("--dtype", choices=tuple(lora.DTYPES), default="float32", help="tensor type in the file")
    p.add_argument("--operator", choices=operators.OPERATORS, default=None, help="only spectral can be exported")
    p.add_argument("--t-edit", type=int, default=None, help="a LoRA acts at every step: only 0 can be exported")
    p.add_argument("-o", "--output", required=True, help="the LoRA file (.safetensors)")
    p.set_defaults(func=functools.partial(cmd_export_lora, open_model=open_model, get_directions=get_directions))
