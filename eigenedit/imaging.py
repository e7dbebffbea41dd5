"""Image files and grids: reading with validation (mode, size, decompression bombs), atomic writes in PNG, JPEG and
WebP (through ``eigenedit.core.io``), and labelled sweep grids."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from eigenedit.core.io import atomic_write, check_writable

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # output suffix -> format


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write a PNG atomically."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_image(image: Image.Image, path: str | Path) -> None:
    """Write an image atomically in the format its suffix names (IMAGE_FORMATS: PNG, JPEG at quality 95,
    lossless WebP); any other suffix is a ValueError."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        check_writable(path, IMAGE_FORMATS)  # raises, naming the suffixes
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **options))


IMAGE_MODES = {1: "L", 3: "RGB"}  # model channels -> PIL mode of the images it reads


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image of mode L or RGB -> (1, C, H, W) in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).reshape(img.height, img.width, -1)
    return (arr.permute(2, 0, 1)[None] / 127.5) - 1


RESIZE_MODES = ("center-crop", "pad", "stretch", "none")
DEFAULT_RESIZE = "center-crop"
MAX_IMAGE_PIXELS = 8192 * 8192  # larger images are refused before they are decoded (decompression bombs)
RESAMPLE = Image.Resampling.LANCZOS  # as diffusers' image processors
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit grey (PNG, TIFF): 0..65535


def open_image(path: str | Path) -> Image.Image:
    """Open and decode an image file; a missing, unreadable, truncated or absurdly large file is a ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{width}x{height}")
            if width < 1 or height < 1:
                raise ValueError(f"it is {width}x{height}")
            img.load()
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL's own check, before ours could run
        size = f"{int(found[1]) // 10**6} megapixels" if found else str(err)
        raise ValueError(
            f"image {path} is too large ({size}; at most {MAX_IMAGE_PIXELS // 10**6} megapixels): refused as a "
            "possible decompression bomb"
        ) from None
    except Exception as err:  # PIL's decoders raise many types on garbled data (SyntaxError, struct.error, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read image {path}: {reason}") from None
    return img


def convert_mode(img: Image.Image, channels: int) -> tuple[Image.Image, str]:
    """The image in the model's mode (IMAGE_MODES) and a note of what changed ("" if nothing): transparency is
    composited on white, 16-bit grey scaled to 8 bits, float images read as 0..1, colour turned grey or back."""
    want = IMAGE_MODES.get(channels)
    if want is None:
        raise ValueError(f"cannot be read by a model with {channels} channels (images need 1 or 3)")
    if img.mode == want and "transparency" not in img.info:
        return img, ""
    source = img.mode
    try:
        if img.mode in SIXTEEN_BIT:
            img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).clip(0, 255).round().astype(np.uint8))
        elif img.mode == "F":
            img = Image.fromarray((np.asarray(img, dtype=np.float64) * 255).clip(0, 255).round().astype(np.uint8))
        elif img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), rgba).convert("RGB")
            source += " (composited on white)"
        elif img.mode not in ("L", "RGB", "1", "P"):
            img = img.convert("RGB")  # CMYK, YCbCr, HSV, ...
        img = img.convert(want)
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot be converted from mode {source} to {want}: {err}") from None
    return img, f"converted from {source} to {want}"


def fit_size(img: Image.Image, size: tuple[int, int], resize: str = DEFAULT_RESIZE) -> tuple[Image.Image, str]:
    """The image at ``size`` (width, height) and a note ("" if it already was): ``center-crop`` scales to cover
    and crops the middle, ``pad`` scales to fit and fills the border with the image's mean edge colour,
    ``stretch`` scales each axis, ``none`` refuses any other size."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; choose from {', '.join(RESIZE_MODES)}")
    if img.size == size:
        return img, ""
    have, want = f"{img.width}x{img.height}", f"{size[0]}x{size[1]}"
    if resize == "none":
        raise ValueError(f"is {have}; the model needs {want} (--resize center-crop, pad or stretch converts it)")
    try:
        if resize == "center-crop":
            img = ImageOps.fit(img, size, RESAMPLE)
        elif resize == "stretch":
            img = img.resize(size, RESAMPLE)
        else:
            arr = np.asarray(img)
            edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(0).round().astype(int)
            img = ImageOps.pad(img, size, RESAMPLE, color=int(edge) if edge.ndim == 0 else tuple(edge))
    except ValueError as err:
        raise ValueError(f"cannot be resized ({resize}) from {have} to {want}: {err}; try center-crop") from None
    return img, f"resized from {have} to {want} ({resize})"


def prepare_image(
    img: Image.Image, shape: tuple[int, int, int], resize: str = DEFAULT_RESIZE
) -> tuple[torch.Tensor, str]:
    """A decoded image -> ((1, C, H, W) in [-1, 1] at the model's mode and size, a note of what changed).

    EXIF orientation is applied; an animation or a multi-page file gives its first frame (and says so);
    ``resize="none"`` keeps the strict behaviour: mode and size must already match.
    """
    channels, height, width = shape
    frames = getattr(img, "n_frames", 1)
    frame_note = f"the first of its {frames} frames used" if isinstance(frames, int) and frames > 1 else ""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        pass
    if resize == "none":
        want = IMAGE_MODES.get(channels)
        if img.mode != want:
            raise ValueError(
                f"has mode {img.mode}; the model needs {want} ({channels} channels; other --resize modes convert it)"
            )
        img, _ = fit_size(img, (width, height), "none")
        return pil_to_tensor(img), frame_note
    img, mode_note = convert_mode(img, channels)
    img, size_note = fit_size(img, (width, height), resize)
    return pil_to_tensor(img), ", ".join(filter(None, [frame_note, mode_note, size_note]))


def read_image(path: str | Path, shape: tuple[int, int, int], resize: str = DEFAULT_RESIZE) -> tuple[torch.Tensor, str]:
    """An image file -> ((1, C, H, W) in [-1, 1] for a model of image shape ``shape``, a note of what changed)."""
    img = open_image(path)
    try:
        return prepare_image(img, shape, resize)
    except ValueError as err:
        raise ValueError(f"image {path} {err}") from None


def load_image(path: str | Path, shape: tuple[int, int, int], resize: str = DEFAULT_RESIZE) -> torch.Tensor:
    """Read an image file as a (1, C, H, W) tensor in [-1, 1] at the model's channels and size (``read_image``)."""
    return read_image(path, shape, resize)[0]


def image_grid(
    images: torch.Tensor,
    rows: int,
    cols: int,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    scale: int = 4,
) -> Image.Image:
    """Tile (rows*cols, C, H, W) images row-major, upscaled by ``scale``, with optional text labels."""
    arr = to_uint8(images)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    n, h, w, _ = arr.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    tiles = arr.reshape(rows, cols, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, 3)
    body = Image.fromarray(tiles).resize((cols * w * scale, rows * h * scale), Image.NEAREST)
    font = ImageFont.load_default()
    left = 8 + max((int(font.getlength(s)) for s in row_labels), default=0) if row_labels else 0
    top = 18 if col_labels else 0
    canvas = Image.new("RGB", (body.width + left, body.height + top), "white")
    canvas.paste(body, (left, top))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(col_labels):
        draw.text((left + c * w * scale + 4, 3), text, fill="black", font=font)
    for r, text in enumerate(row_labels):
        draw.text((4, top + r * h * scale + h * scale // 2 - 6), text, fill="black", font=font)
    return canvas
