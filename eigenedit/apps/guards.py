"""Guard rails every app shares: one-line notes and warnings, one-line argument errors, edit-strength warnings,
the checks of steps, t_edit and output size before sampling, and the provenance check of a directions file (was it
made for the model, layer and decomposition in use?)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from diffusers import DDIMScheduler

from eigenedit.core import defaults
from eigenedit.core.directions import Directions
from eigenedit.imaging import MAX_IMAGE_PIXELS
from eigenedit.models import SHIPPED_MODELS, TERRAIN_MODEL, DiffusionModel

STRENGTH_WARN_FACTOR = 5  # |alpha| beyond this many times the model's documented range warns
PROVENANCE_FIELDS = ("model", "layer", "decomposition")  # what every directions file must name


def note(message: str) -> None:
    """One informational line on stderr."""
    print(f"eigenedit: note: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"eigenedit: warning: {message}", file=sys.stderr, flush=True)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): ``PROG: error: MESSAGE``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def documented_range(alphas: Iterable[float]) -> float:
    """The largest |alpha| of a model's documented alphas (its eigenedit.json, else the generic -1..1)."""
    return max((abs(float(a)) for a in alphas), default=1.0) or 1.0


def warn_strengths(alphas: Iterable[float], edit_defaults: Mapping, operator: str) -> bool:
    """Warn (one line) when an alpha is far outside the documented range of ``operator`` (the model's alphas for
    that operator, else the operator's own: ``defaults.default_alphas``); True if it warned."""
    limit = documented_range(defaults.default_alphas(dict(edit_defaults), operator))
    worst = max((abs(float(a)) for a in alphas if math.isfinite(a)), default=0.0)
    if worst <= STRENGTH_WARN_FACTOR * limit:
        return False
    warn(
        f"alpha {worst:g} is far outside this model's documented range (|alpha| <= {limit:g}) of the {operator} "
        "operator; expect a broken or saturated image"
    )
    return True


def check_schedule(
    model: DiffusionModel, steps: int, t_edit: float | None, names: tuple[str, str] = ("--steps", "--t-edit")
) -> None:
    """Before sampling: refuse (a ValueError naming the option) more sampling steps than the model's train
    timesteps, and a t_edit outside 0..train timesteps."""
    total = model.train_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= total:
        raise ValueError(f"{names[0]} {steps}: this model takes 1 to {total} steps (its train timesteps)")
    if t_edit is not None and (
        not isinstance(t_edit, int | float) or not math.isfinite(t_edit) or not 0 <= t_edit <= total
    ):
        raise ValueError(f"{names[1]} {t_edit} is outside 0..{total} (this model's train timesteps)")


def warn_unreached(model: DiffusionModel, steps: int, t_edit: float, name: str = "--t-edit") -> bool:
    """Warn (one line) where no DDIM step reaches t >= t_edit, so that the edit changed nothing; True if it
    warned. (Flow-matching models start at t = 1000, sigma 1: always reached.)"""
    if model.flow_matching:
        return False
    ddim = DDIMScheduler.from_config(model.scheduler.config)  # a copy: the model's own may be sampling
    ddim.set_timesteps(steps)
    first = int(ddim.timesteps.max())
    if first >= t_edit:
        return False
    warn(f"{name} {t_edit:g}: no step of {steps} DDIM steps reaches it (the first is t = {first}); nothing was edited")
    return True


MAX_OUTPUT_PIXELS = MAX_IMAGE_PIXELS  # an output image could not be read back as an --image beyond this
OUTPUT_BYTES_PER_PIXEL = 12  # RGB, about four copies at once while a grid is tiled, upscaled, drawn and encoded


def available_memory() -> int | None:
    """Bytes of memory available to this process (psutil where installed, else the free pages), None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_output_size(image_shape: tuple[int, int, int], rows: int, cols: int, scale: int, lower: str) -> None:
    """Before sampling: refuse (a ValueError naming the options in ``lower``) an output of rows x cols images of
    ``image_shape`` upscaled by ``scale`` that is larger than MAX_OUTPUT_PIXELS or needs more memory than is
    available (the images themselves, float32, and the output's pixels)."""
    channels, height, width = image_shape
    out_w, out_h = cols * width * scale, rows * height * scale
    pixels = out_w * out_h
    if pixels > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"the output would be {out_w}x{out_h} pixels ({pixels // 10**6} megapixels; at most "
            f"{MAX_OUTPUT_PIXELS // 10**6}): lower {lower}"
        )
    need = pixels * OUTPUT_BYTES_PER_PIXEL + rows * cols * channels * height * width * 4 * 2
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"the output ({out_w}x{out_h} pixels) needs about {need / 2**20:,.0f} MB of memory, and "
            f"{have / 2**20:,.0f} MB are available: lower {lower}"
        )


def model_identity(id_or_path: str) -> str:
    """One name per model: a shipped name for a shipped model (also given as its folder), an absolute path for
    any other local file or folder, and a hub id (``owner/name``) as given."""
    text = str(id_or_path or "").strip()
    if text in SHIPPED_MODELS or text == TERRAIN_MODEL:
        return text
    local = Path(text)
    if text and local.exists():
        resolved = local.resolve()
        for name, folder in SHIPPED_MODELS.items():
            if resolved == Path(folder).resolve():
                return name
        return str(resolved)
    return text.rstrip("/")


def check_provenance(
    dirs: Directions,
    source: str | Path,
    model: str,
    requested: Mapping[str, object] | None = None,
    force: bool = False,
) -> None:
    """Refuse (ValueError naming both sides) a directions file made for another model, or for another layer,
    decomposition, head or fold-norm than ``requested`` (only what the user chose); a file without that
    metadata (older versions) is refused too. ``force`` turns the refusal into a one-line warning (dimensions are
    checked separately and always)."""
    meta = dirs.metadata if isinstance(dirs.metadata, dict) else {}
    missing = [name for name in PROVENANCE_FIELDS if not isinstance(meta.get(name), str) or not meta.get(name)]
    problems = []
    if missing:
        problems.append(
            f"{source} has no {'/'.join(missing)} in its metadata (made by an older eigenedit, or without a model "
            f"id), so it cannot be checked against model {model_identity(model)!r}"
        )
    made_for = model_identity(meta.get("model", "")) if "model" not in missing else ""
    if made_for and made_for != model_identity(model):
        problems.append(
            f"{source} was made for model {made_for!r} ({meta.get('layer')}, {meta.get('decomposition')}), but the "
            f"model in use is {model_identity(model)!r}"
        )
    for name, wanted in (requested or {}).items():
        have = meta.get(name)
        if wanted is None or name in missing or (name == "fold_norm" and not wanted):
            continue
        if have != wanted:
            problems.append(f"{source} holds {name} {have!r}, but {name} {wanted!r} was asked for")
    if not problems:
        return
    if not force:
        raise ValueError("; ".join(problems) + "; --force applies it anyway where the dimensions fit")
    warn(f"--force: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def note_placement(dirs: Directions, source: str | Path, layer: str | None, location: str) -> None:
    """One note line where a directions file holds another layer's directions than ``layer`` (the model's
    default, where the user gave no --layer): they are applied at ``location``, which was not chosen for them."""
    made_for = dirs.metadata.get("layer") if isinstance(dirs.metadata, dict) else None
    if layer is None or not isinstance(made_for, str) or made_for == layer:
        return
    note(
        f"{source} holds directions of layer {made_for}, not of the model's default layer {layer}; they are "
        f"applied at {location} (--location picks another place)"
    )
