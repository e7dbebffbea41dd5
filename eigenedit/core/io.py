"""Image files and grids: reading with validation, atomic PNG writes, labelled sweep grids."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def check_writable(path: str | Path) -> Path:
    """Fail early, before any expensive work, if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"output path {path} is a directory")
    if not parent.is_dir():
        raise ValueError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output folder {parent} is not writable")
    return path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place with the usual
    permissions: a failed write leaves no partial file."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write a PNG atomically."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


IMAGE_MODES = {1: "L", 3: "RGB"}  # model channels -> PIL mode of the images it reads


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image of mode L or RGB -> (1, C, H, W) in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).reshape(img.height, img.width, -1)
    return (arr.permute(2, 0, 1)[None] / 127.5) - 1


def load_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """Read an image file as a (1, C, H, W) tensor in [-1, 1]; it must match the model's channels and size."""
    channels, height, width = shape
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    want_mode = IMAGE_MODES.get(channels)
    if img.mode != want_mode:
        raise ValueError(f"image {path} has mode {img.mode}; the model needs {want_mode} ({channels} channels)")
    if img.size != (width, height):
        raise ValueError(f"image {path} is {img.size[0]}x{img.size[1]}; the model needs {width}x{height}")
    return pil_to_tensor(img)


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
