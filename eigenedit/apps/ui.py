"""``eigenedit ui``: a web page (gradio) that edits a generated or uploaded image with one slider per direction.

The work is done by ``EditorState`` (plain Python with caches, testable without a browser or gradio);
``Callbacks`` turns widget values into its calls and errors into the status line, and ``build_app`` only lays out
the page. gradio is optional: ``pip install "eigenedit[ui]"``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import re
import signal
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from eigenedit.apps.arguments import SEED_LIMIT
from eigenedit.apps.guards import check_schedule
from eigenedit.core import defaults, operators, sampling
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS
from eigenedit.evaluation.metrics import psnr
from eigenedit.imaging import MAX_IMAGE_PIXELS, read_image, save_png, to_uint8
from eigenedit.imaging import prepare_image as imaging_prepare_image
from eigenedit.models import DEFAULT_MODEL, SHIPPED_MODELS, TERRAIN_MODEL, DiffusionModel, load_model

N_SLIDERS = 5  # directions edited at once: first, first + 1, ...
FILE_CACHE = 64  # downloadable files (edited PNGs, directions) kept on disk per server; older ones are deleted
DEFAULT_STEPS = 10  # DDIM steps of the preview: few, for speed
DISPLAY_SIZE = 256  # shown images are upscaled (nearest neighbour) to about this many pixels
LABEL_STEPS = 20  # at most, for the "label" button (``evaluation.reading``, as ``eigenedit directions --label``)
MERGED = "merged"  # the head choice for all heads together
DECOMPOSITION_CHOICES = (*DECOMPOSITIONS, "random")
INSTALL_HINT = 'the web UI needs gradio: pip install "eigenedit[ui]"'
MAX_UPLOAD_BYTES = 64 * 2**20  # larger uploads are refused by the server (and by prepare_image); pixels: as --image


def model_choices(current: str = DEFAULT_MODEL) -> list[str]:
    """The short names load_model knows (shipped folders, the packaged terrain model), and ``current``."""
    return list(dict.fromkeys([*SHIPPED_MODELS, TERRAIN_MODEL, current]))


@dataclass(frozen=True)
class View:
    """Everything a preview depends on except the slider values; None means the model's default."""

    model: str = DEFAULT_MODEL
    layer: str | None = None
    decomposition: str | None = None
    head: int | None = None
    fold_norm: bool = False
    first: int = 0  # direction index of the first slider
    seed: int = 0
    steps: int = DEFAULT_STEPS
    t_edit: int | None = None
    location: str | None = None
    operator: str | None = None


@dataclass
class Start:
    """Where sampling starts: x_T, a cache key for it, a note for the status line, and the uploaded pixels."""

    x_t: torch.Tensor
    key: Hashable
    note: str
    pixels: torch.Tensor | None = None


@dataclass
class Preview:
    """One render: the unedited and the edited image ((1, C, H, W) in [-1, 1]) and what it took."""

    plain: torch.Tensor
    edited: torch.Tensor
    seconds: float
    note: str


class LRU(OrderedDict):
    """A small least-recently-used cache; ``on_evict(value)`` runs for each value it drops."""

    def __init__(self, size: int, on_evict: Callable[[Any], None] | None = None):
        super().__init__()
        self.size = size
        self.on_evict = on_evict

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, True if it was computed now)."""
        if key in self:
            self.move_to_end(key)
            return self[key], False
        value = make()
        self[key] = value
        while len(self) > self.size:
            _, dropped = self.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(dropped)
        return value, True


def _unlink(path: Path) -> None:
    Path(path).unlink(missing_ok=True)


Upload = str | Path | np.ndarray | Image.Image  # an uploaded picture: its file (the upload widget's) or pixels


def prepare_image(image: Upload, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """An uploaded picture (a file path, as the upload widget gives it, or pixels) -> ((1, C, H, W) in [-1, 1] at the
    model's mode and size, a note): converted and center-cropped as the command line's default ``--resize``."""
    if isinstance(image, str | Path):
        size = Path(image).stat().st_size if Path(image).is_file() else 0
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"the upload is {size / 2**20:.0f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB")
        pixels, note = read_image(image, shape)
    else:
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"the upload is {img.width}x{img.height}; at most {MAX_IMAGE_PIXELS // 10**6} megapixels")
        pixels, note = imaging_prepare_image(img, shape)
    return pixels, note and f"upload {note}"


def to_pil(image: torch.Tensor, size: int = 0) -> Image.Image:
    """(1, C, H, W) in [-1, 1] -> RGB PIL image, upscaled by an integer factor to about ``size`` pixels."""
    arr = to_uint8(image)[0]
    pil = Image.fromarray(np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr)
    scale = max(1, size // max(pil.size))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "model"


class EditorState:
    """Models, directions, inversions and unedited images, each cached, shared by every page of one server.

    ``misses`` counts what was computed (model, defaults, directions, location, inversion, plain, edit), so tests
    can see cache hits.
    """

    def __init__(self, loader: Callable[[str], DiffusionModel] = load_model, workdir: str | Path | None = None):
        self._loader = loader
        self._models, self._directions, self._dims = LRU(2), LRU(64), LRU(64)
        self._noise, self._plain, self._defaults = LRU(16), LRU(32), LRU(8)
        self._labels: LRU = LRU(64)  # direction key -> {index: label}
        self._files, self._images = LRU(FILE_CACHE, _unlink), LRU(FILE_CACHE, _unlink)  # files written for download
        self._saved = itertools.count()
        self.misses: Counter[str] = Counter()
        self._lock = threading.RLock()  # gradio calls from worker threads; the scheduler has state
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="eigenedit-ui-")
        self.workdir = Path(workdir or self._tmp.name)

    def close(self) -> None:
        """Remove the temporary folder this state made (downloads, and whatever else was put there)."""
        if self._tmp is not None:
            self._tmp.cleanup()

    def _cached(self, cache: LRU, kind: str, key: Hashable, make: Callable[[], Any]) -> Any:
        value, made = cache.get_or_make(key, make)
        self.misses[kind] += made
        return value

    # -- model and its defaults -------------------------------------------------------------------------------
    def model(self, name: str) -> DiffusionModel:
        name = (name or "").strip()
        if not name:
            raise ValueError(f"choose a model: {', '.join(model_choices())}, a local folder or a hub id")
        with self._lock:
            return self._cached(self._models, "model", name, lambda: self._loader(name))

    def defaults(self, name: str) -> dict:
        """The generic edit defaults overridden by the model's eigenedit.json, plus ``alpha_max`` (slider range),
        ``preview_steps`` (the model's steps, at most DEFAULT_STEPS), ``layers`` and ``timesteps``."""
        model = self.model(name)

        def make() -> dict:
            settings = defaults.resolve(model)
            out = asdict(settings) | {"alphas": list(settings.alphas)}
            out["alpha_max"] = float(max(abs(a) for a in out["alphas"]) or 1.0)
            out["preview_steps"] = min(int(out["steps"]), DEFAULT_STEPS)
            out["layers"] = [layer.name for layer in model.attention_layers()]
            out["timesteps"] = int(model.scheduler.config.num_train_timesteps)
            return out

        with self._lock:
            return dict(self._cached(self._defaults, "defaults", name.strip(), make))

    def resolve(self, view: View) -> View:
        """The view with every None (or empty text) filled from the model's defaults (``defaults.resolve``)."""
        given = {name: getattr(view, name) or None for name in ("layer", "decomposition", "operator", "location")}
        settings = defaults.resolve(self.model(view.model), t_edit=view.t_edit, **given)
        return replace(view, **{name: getattr(settings, name) for name in given}, t_edit=int(settings.t_edit))

    def heads(self, name: str, layer: str) -> int:
        return self.model(name).attention_weights(layer).heads

    def can_label(self, name: str) -> bool:
        """Automatic labels need a probe that reads the model's images (every shipped model has one)."""
        from eigenedit.evaluation import reading

        return reading.probe_of(self.model(name)) is not None

    # -- directions ------------------------------------------------------------------------------------------
    def _direction_key(self, view: View) -> tuple:
        return (view.model, view.layer, view.decomposition, view.head, view.fold_norm)

    def directions(self, view: View) -> Directions:
        """All directions of the view's layer and decomposition, with the labels found so far."""
        view = self.resolve(view)
        if view.decomposition not in DECOMPOSITION_CHOICES:
            raise ValueError(f"unknown decomposition {view.decomposition!r}; choose from {DECOMPOSITION_CHOICES}")
        key = self._direction_key(view)
        model = self.model(view.model)

        def make() -> Directions:
            return compute_directions(
                model.unet,
                view.layer,
                view.decomposition,
                view.head,
                view.fold_norm,
                model.model_id,
                read=model.attention_weights,
            )

        with self._lock:
            dirs = self._cached(self._directions, "directions", key, make)
        known = self._labels.get(key, {})
        labels = [known.get(i, "") for i in range(len(dirs))]
        return Directions(dirs.vectors, dirs.values, dict(dirs.metadata, labels=labels))

    def shown(self, view: View) -> list[int]:
        """Indices of the directions on the sliders."""
        count = len(self.directions(view))
        if not 0 <= view.first < count:
            raise ValueError(f"first direction {view.first} out of range: this set has {count} (0..{count - 1})")
        return list(range(view.first, min(view.first + N_SLIDERS, count)))

    def slider_labels(self, view: View) -> list[str]:
        dirs = self.directions(view)
        values, labels = dirs.values.tolist(), dirs.labels
        return [f"direction {i} (value {values[i]:.3g}) {labels[i]}".strip() for i in self.shown(view)]

    def table(self, view: View) -> list[list]:
        """Rows (index, eigen/singular value, label) of every direction."""
        dirs = self.directions(view)
        return [[i, round(v, 6), lab] for i, (v, lab) in enumerate(zip(dirs.values.tolist(), dirs.labels, strict=True))]

    def label(self, view: View) -> list[str]:
        """Name the shown directions by the protocol's reading (what each moves most at matched change, on 4
        seeds) and its stored verdict, e.g. "-hair_color (protocol: not precise)"."""
        from eigenedit.evaluation import reading

        if not self.can_label(view.model):
            raise ValueError("automatic labels need a model with a probe: faces64, terrain128, fashion32, shapes32, "
                             'or one whose eigenedit.json names a "labeller"')  # fmt: skip
        view = self.resolve(view)
        indices = self.shown(view)
        model = self.model(view.model)
        steps = min(int(self.defaults(view.model)["steps"]), LABEL_STEPS)
        with self._lock:
            chosen = reading.label_directions(model, self.directions(view).select(indices), view.operator,
                                              view.location, view.t_edit, steps)  # fmt: skip
            known, _ = self._labels.get_or_make(self._direction_key(view), dict)
            known.update(dict(zip(indices, chosen.labels, strict=True)))
        return chosen.labels

    def _check_location(self, view: View, dirs: Directions) -> None:
        model = self.model(view.model)
        with self._lock:
            dims = self._cached(
                self._dims,
                "location",
                (view.model, view.location),
                lambda: operators.location_dims(model, view.location),
            )
        if dirs.dim not in dims:
            raise ValueError(
                f"directions of {view.layer} have {dirs.dim} channels, but the edit location {view.location} has "
                f"{dims[0]}: choose another location or layer"
            )

    # -- images ----------------------------------------------------------------------------------------------
    def start(self, view: View, image: Upload | None) -> Start:
        """x_T of the seed, or of the DDIM inversion of ``image`` (computed once per image and step count)."""
        model = self.model(view.model)
        if image is None:
            return Start(sampling.noise_from_seeds(model, [view.seed]), ("seed", view.seed), f"seed {view.seed}")
        pixels, note = prepare_image(image, model.image_shape)
        key = ("image", _digest(pixels), view.steps)
        with self._lock:
            x_t = self._cached(
                self._noise,
                "inversion",
                (view.model, *key),
                lambda: sampling.invert(model, model.encode(pixels), view.steps),
            )
        return Start(x_t, key, ", ".join(filter(None, ["uploaded image (DDIM-inverted)", note])), pixels)

    def render(self, view: View, alphas: Sequence[float], image: Upload | None = None) -> Preview:
        """The unedited and the edited image for slider values ``alphas`` (one per shown direction)."""
        start = time.perf_counter()
        view = self.resolve(view)
        check_schedule(self.model(view.model), view.steps, view.t_edit, names=("steps", "t_edit"))
        dirs = self.directions(view)
        indices = self.shown(view)
        weights = torch.tensor([float(a or 0.0) for a in alphas][: len(indices)], dtype=torch.float32)
        weights = torch.cat([weights, torch.zeros(len(indices) - len(weights))])
        if not torch.isfinite(weights).all():
            raise ValueError("slider values must be finite numbers")
        model = self.model(view.model)
        begin = self.start(view, image)
        with self._lock:
            plain = self._cached(
                self._plain,
                "plain",
                (view.model, begin.key, view.steps),
                lambda: model.decode(sampling.sample(model, begin.x_t, view.steps)),
            )
            edited = plain
            if weights.any():
                self._check_location(view, dirs)
                edit = sampling.Edit(
                    directions=dirs.select(indices),
                    alphas=weights[None],
                    t_edit=view.t_edit,
                    location=view.location,
                    operator=view.operator,
                )
                edited = model.decode(sampling.sample(model, begin.x_t, view.steps, edit))
                self.misses["edit"] += 1
        note = begin.note
        if begin.pixels is not None:
            note += f", reconstruction PSNR {psnr(plain, begin.pixels).item():.1f} dB"
        return Preview(plain, edited, time.perf_counter() - start, note)

    # -- files -----------------------------------------------------------------------------------------------
    def image_file(self, image: torch.Tensor) -> Path:
        """The image as a PNG at the model's own resolution (so it can be uploaded and edited again)."""
        path = self.workdir / f"edited-{_digest(image)}.png"

        def make() -> Path:
            arr = to_uint8(image)[0]
            save_png(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr), path)
            return path

        with self._lock:
            return self._images.get_or_make(path.name, make)[0]

    def directions_file(self, view: View) -> Path:
        """All directions of the view (with the labels found so far) as a safetensors file."""
        view = self.resolve(view)
        dirs = self.directions(view)
        key = (*self._direction_key(view), tuple(dirs.labels))
        head = "" if view.head is None else f"-head{view.head}"
        fold = "-foldnorm" if view.fold_norm else ""

        def make() -> Path:
            name = f"{_slug(view.model)}-{view.layer}-{view.decomposition}{head}{fold}-{next(self._saved)}"
            dirs.save(self.workdir / f"{name}.safetensors")
            return self.workdir / f"{name}.safetensors"

        with self._lock:
            return self._files.get_or_make(key, make)[0]


def status_line(view: View, preview: Preview) -> str:
    return (
        f"{preview.note}; {view.steps} DDIM steps; {view.operator} edit at `{view.location}` for t >= {view.t_edit}; "
        f"rendered in {preview.seconds * 1e3:.0f} ms"
    )


def error_line(err: Exception) -> str:
    return f"**Error:** {err}"


def require_gradio():
    """The gradio module, or a ValueError that says how to install it."""
    try:
        import gradio
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return gradio


# widget values, in this order, are the inputs of every event
CONTROL_NAMES = (
    "model",
    "layer",
    "decomposition",
    "head",
    "fold_norm",
    "first",
    "seed",
    "steps",
    "t_edit",
    "location",
    "operator",
)


def _text(value: Any, name: str) -> str | None:
    """A text widget's value: None for empty, else the stripped text; anything but text is a ValueError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    return value.strip() or None


def _whole(value: Any, name: str, default: int) -> int:
    """A number widget's value as a whole number (``default`` for empty); anything else is a ValueError."""
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{name} must be a whole number, got {str(value)[:40]!r}")
    return int(number)


def _number(value: Any, name: str, default: float) -> float:
    """A slider's value as a finite number (``default`` for empty); anything else is a ValueError."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def view_from(values: Sequence) -> View:
    """A View from the widget values in CONTROL_NAMES order; a value of the wrong type or range (from the page or
    the HTTP API) is a ValueError."""
    if len(values) != len(CONTROL_NAMES):
        raise ValueError(f"expected {len(CONTROL_NAMES)} settings ({', '.join(CONTROL_NAMES)}), got {len(values)}")
    v = dict(zip(CONTROL_NAMES, values, strict=True))
    head = v["head"]
    seed = _whole(v["seed"], "seed", 0)
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed} is out of range: seeds are whole numbers 0..2**64-1")
    return View(
        model=_text(v["model"], "model") or "",
        layer=_text(v["layer"], "layer"),
        decomposition=_text(v["decomposition"], "decomposition"),
        head=None if head in (None, "", MERGED) else _whole(head, "head", 0),
        fold_norm=bool(v["fold_norm"]),
        first=_whole(v["first"], "first direction", 0),
        seed=seed,
        steps=_whole(v["steps"], "steps", DEFAULT_STEPS) or DEFAULT_STEPS,
        t_edit=None if v["t_edit"] is None else _whole(v["t_edit"], "t_edit", 0),
        location=_text(v["location"], "location"),
        operator=_text(v["operator"], "operator"),
    )


UI_ERRORS = (ValueError, OSError, RuntimeError)  # shown in the status line (a broken model raises RuntimeError)


class Callbacks:
    """gradio event handlers. Each takes the widget values (CONTROL_NAMES, alpha_max, upload, sliders) and
    returns the outputs listed in ``build_app``; a ValueError becomes the status line, never a crash."""

    def __init__(self, state: EditorState):
        self.state = state
        self.gr = require_gradio()

    def _split(self, values: Sequence) -> tuple[View, float, Any, list[float]]:
        """(view, slider range, upload, slider values); a wrong type or range is a ValueError."""
        n = len(CONTROL_NAMES)
        if len(values) < n + 2:
            raise ValueError(f"expected at least {n + 2} inputs, got {len(values)}")
        alpha_max = _number(values[n], "slider range", 1.0)
        if alpha_max <= 0:
            raise ValueError(f"the slider range (max |alpha|) must be positive, got {alpha_max:g}")
        alphas = [_number(a, f"slider {i}", 0.0) for i, a in enumerate(values[n + 2 :])]
        return view_from(values[:n]), alpha_max, values[n + 1], alphas

    def model_changed(self, name: str) -> tuple:
        """A new model: its layers, heads and defaults; sliders back to 0.
        Outputs: layer, decomposition, head, fold_norm, first, steps, t_edit, location, operator, alpha_max, *sliders,
        status."""
        gr, keep = self.gr, self.gr.update()
        try:
            name = _text(name, "model") or ""
            d = self.state.defaults(name)
            heads = self.state.heads(name, d["layer"])
        except UI_ERRORS as err:
            return (*[keep] * (10 + N_SLIDERS), error_line(err))
        locations = list(dict.fromkeys([d["location"], defaults.DEFAULT_LOCATION, *d["layers"]]))
        return (
            gr.update(choices=d["layers"], value=d["layer"]),
            gr.update(value=d["decomposition"]),
            gr.update(choices=head_choices(heads), value=MERGED),
            gr.update(value=False),
            gr.update(value=0),
            gr.update(value=d["preview_steps"]),
            gr.update(value=d["t_edit"], maximum=d["timesteps"]),
            gr.update(choices=locations, value=d["location"]),
            gr.update(value=d["operator"]),
            gr.update(value=d["alpha_max"]),
            *[gr.update(value=0.0) for _ in range(N_SLIDERS)],
            f"loaded model `{name.strip()}`",
        )

    def operator_changed(self, name: str, operator: str) -> tuple:
        """Outputs: alpha_max (the slider range of that operator's default strengths)."""
        try:
            model = self.state.model(_text(name, "model") or "")
            alphas = defaults.default_alphas(model.edit_defaults, _text(operator, "operator") or "shift")
        except UI_ERRORS:
            return (self.gr.update(),)  # the refresh that follows reports the error
        return (self.gr.update(value=float(max(abs(a) for a in alphas) or 1.0)),)

    def layer_changed(self, name: str, layer: str) -> tuple:
        """Outputs: head."""
        try:
            heads = self.state.heads(_text(name, "model") or "", _text(layer, "layer") or "")
        except UI_ERRORS:
            return (self.gr.update(),)  # the refresh that follows reports the error
        return (self.gr.update(choices=head_choices(heads), value=MERGED),)

    def refresh(self, *values) -> tuple:
        """Everything: directions table, sliders, images, files.
        Outputs: plain, edited, status, png file, directions file, table, label button, *sliders."""
        gr, keep = self.gr, self.gr.update()
        try:
            view, alpha_max, image, alphas = self._split(values)
            labels = self.state.slider_labels(view)
            table = self.state.table(view)
            can_label = self.state.can_label(view.model)
            dirs_file = str(self.state.directions_file(view))
            preview_out = self._preview(view, image, alphas)
        except UI_ERRORS as err:
            return (None, None, error_line(err), None, keep, keep, keep, *[keep] * N_SLIDERS)
        sliders = [
            gr.update(label=labels[i], minimum=-alpha_max, maximum=alpha_max, step=alpha_max / 40, visible=True)
            if i < len(labels)
            else gr.update(visible=False, value=0.0)
            for i in range(N_SLIDERS)
        ]
        return (*preview_out, dirs_file, table, gr.update(interactive=can_label), *sliders)

    def preview(self, *values) -> tuple:
        """Just the images (a slider moved). Outputs: plain, edited, status, png file."""
        try:
            view, _, image, alphas = self._split(values)
            return self._preview(view, image, alphas)
        except UI_ERRORS as err:
            return (None, None, error_line(err), None)

    def _preview(self, view: View, image, alphas: list[float]) -> tuple:
        preview = self.state.render(view, alphas, image)
        resolved = self.state.resolve(view)
        return (
            to_pil(preview.plain, DISPLAY_SIZE),
            to_pil(preview.edited, DISPLAY_SIZE),
            status_line(resolved, preview),
            str(self.state.image_file(preview.edited)),
        )

    def label(self, *values) -> tuple:
        """Label the shown directions. Outputs: table, directions file, status, *sliders."""
        keep = self.gr.update()
        try:
            view, _, _, _ = self._split(values)
            start = time.perf_counter()
            found = self.state.label(view)
            labels = self.state.slider_labels(view)
            table, dirs_file = self.state.table(view), str(self.state.directions_file(view))
        except UI_ERRORS as err:
            return (keep, keep, error_line(err), *[keep] * N_SLIDERS)
        status = f"labels at the protocol's matched change: {', '.join(found)} ({time.perf_counter() - start:.1f} s)"
        sliders = [self.gr.update(label=lab) for lab in labels] + [keep] * (N_SLIDERS - len(labels))
        return (table, dirs_file, status, *sliders)


def head_choices(heads: int) -> list[str]:
    return [MERGED, *map(str, range(heads))] if heads > 1 else [MERGED]


def _settings_column(gr, state: EditorState, model: str, d: dict, steps: int) -> dict:
    """The left column: model, layer, decomposition, head, upload and the sampling settings."""
    locations = list(dict.fromkeys([d["location"], defaults.DEFAULT_LOCATION, *d["layers"]]))
    w = {}
    w["model"] = gr.Dropdown(
        model_choices(model),
        value=model,
        label="model (shipped name, local folder or hub id)",
        allow_custom_value=True,
        elem_id="model",
    )
    w["layer"] = gr.Dropdown(d["layers"], value=d["layer"], label="self-attention layer")
    w["decomposition"] = gr.Dropdown(list(DECOMPOSITION_CHOICES), value=d["decomposition"], label="decomposition")
    w["head"] = gr.Dropdown(head_choices(state.heads(model, d["layer"])), value=MERGED, label="head")
    w["operator"] = gr.Dropdown(list(operators.OPERATORS), value=d["operator"], label="edit operator")
    w["fold_norm"] = gr.Checkbox(False, label="fold the GroupNorm scale into the weights")
    w["upload"] = gr.Image(  # the file as uploaded: converted (alpha, EXIF, 16-bit) like the command line's
        type="filepath",
        image_mode=None,
        label="or edit an uploaded image (inverted once)",
        sources=["upload"],
        elem_id="upload",
    )
    with gr.Accordion("sampling and edit", open=False):
        w["seed"] = gr.Number(0, precision=0, label="seed (without an upload)", elem_id="seed")
        w["steps"] = gr.Slider(1, max(100, steps), value=steps, step=1, label="DDIM steps", elem_id="steps")
        w["t_edit"] = gr.Slider(0, d["timesteps"], value=d["t_edit"], step=1, label="edit at timesteps t >=")
        w["location"] = gr.Dropdown(locations, value=d["location"], label="edit location", allow_custom_value=True)
        w["first"] = gr.Number(0, precision=0, minimum=0, label="direction of the first slider")
        w["alpha_max"] = gr.Number(d["alpha_max"], minimum=1e-6, label="slider range (max |alpha|)")
    return w


def _editor_column(gr, d: dict) -> dict:
    """The right column: unedited and edited image, sliders, status, downloads, direction table."""
    w = {}
    with gr.Row():
        w["plain"] = gr.Image(label="unedited", type="pil", format="png", interactive=False, elem_id="plain")
        w["edited"] = gr.Image(label="edited", type="pil", format="png", interactive=False, elem_id="edited")
    m = d["alpha_max"]
    w["sliders"] = [
        gr.Slider(-m, m, value=0.0, step=m / 40, label=f"direction {i}", elem_id=f"alpha-{i}") for i in range(N_SLIDERS)
    ]
    w["status"] = gr.Markdown(elem_id="status")
    with gr.Row():
        w["png"] = gr.DownloadButton("download edited PNG", elem_id="download-png")
        w["directions_file"] = gr.DownloadButton("download directions (safetensors)", elem_id="download-directions")
        w["label"] = gr.Button("label the shown directions (shapes models, about 10 s)")
    w["table"] = gr.Dataframe(headers=["direction", "value", "label"], interactive=False, max_height=320)
    return w


def _wire(demo, cb: Callbacks, w: dict) -> None:
    """Connect the events (and the page load); all run on one "model" worker, so renders never overlap."""
    sliders = w["sliders"]
    inputs = [*(w[name] for name in CONTROL_NAMES), w["alpha_max"], w["upload"], *sliders]
    refresh_out = [w[n] for n in ("plain", "edited", "status", "png", "directions_file", "table", "label")] + sliders
    preview_out = [w["plain"], w["edited"], w["status"], w["png"]]
    names = ("layer", "decomposition", "head", "fold_norm", "first", "steps", "t_edit", "location", "operator")
    model_out = [w[n] for n in names]
    model_out += [w["alpha_max"], *sliders, w["status"]]
    run = dict(concurrency_id="model", concurrency_limit=1)
    w["model"].change(cb.model_changed, [w["model"]], model_out, **run).then(cb.refresh, inputs, refresh_out, **run)
    w["layer"].input(cb.layer_changed, [w["model"], w["layer"]], [w["head"]], **run).then(
        cb.refresh, inputs, refresh_out, **run
    )
    w["operator"].input(cb.operator_changed, [w["model"], w["operator"]], [w["alpha_max"]], **run).then(
        cb.refresh, inputs, refresh_out, **run
    )
    for name in ("decomposition", "head", "location", "t_edit", "first", "alpha_max"):
        w[name].input(cb.refresh, inputs, refresh_out, **run)
    for name in ("fold_norm", "seed", "steps", "upload"):
        w[name].change(cb.refresh, inputs, refresh_out, **run)
    for slider in sliders:
        slider.input(cb.preview, inputs, preview_out, trigger_mode="always_last", show_progress="hidden", **run)
    label_out = [w["table"], w["directions_file"], w["status"], *sliders]
    w["label"].click(cb.label, inputs, label_out, **run)
    demo.load(cb.refresh, inputs, refresh_out, **run)


def build_app(state: EditorState, model: str = DEFAULT_MODEL, steps: int | None = None):
    """The gradio Blocks page; ``model`` (already loadable) and ``steps`` (default: the model's preview steps)
    are selected at start."""
    gr = require_gradio()
    d = state.defaults(model)
    steps = steps or d["preview_steps"]
    # delete_cache: gradio's copies of the images it served, checked every 10 min, deleted after an hour
    with gr.Blocks(title="eigenedit", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("## eigenedit: edit along the eigenvectors of a self-attention layer")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                widgets = _settings_column(gr, state, model, d, steps)
            with gr.Column(scale=2):
                widgets |= _editor_column(gr, d)
        _wire(demo, Callbacks(state), widgets)
    return demo


def serve(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Start the page's server (not blocking), with the upload limit MAX_UPLOAD_BYTES."""
    demo.queue().launch(
        server_name=host,
        server_port=port,
        share=share,
        show_error=True,
        quiet=not share,
        prevent_thread_lock=True,
        max_file_size=MAX_UPLOAD_BYTES,
    )


def launch(
    model: str = DEFAULT_MODEL,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    steps: int | None = None,
    allow_pickle: bool = False,
) -> None:
    """Load ``model`` (errors before any server starts), build the page and serve it until interrupted (Ctrl+C or
    SIGTERM); then the temporary folder with the uploads, gradio's cache and the downloads is removed.
    ``allow_pickle``: every model the page loads may have pickle weights (``load_model``)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    state = EditorState(loader=functools.partial(load_model, allow_pickle=allow_pickle))
    # uploads and gradio's cache go into the state's temporary folder: set before gradio is imported (some of its
    # folders are fixed then) and before the page and server are built
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(state.workdir / "gradio")
    demo = None
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        require_gradio()
        state.model(model)
        demo = build_app(state, model, steps)
        try:
            serve(demo, host, port, share)
        except OSError:
            raise ValueError(f"cannot serve on {host}:{port}: is the port in use? choose another with --port") from None
        print(f"eigenedit ui: model {model} at http://{host}:{port} (Ctrl+C stops)", flush=True)
        demo.block_thread()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if demo is not None:
            demo.close()
        state.close()
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


def _stop(signum, frame) -> None:
    """SIGTERM stops the server as Ctrl+C does (so that the temporary files are removed)."""
    raise KeyboardInterrupt
