"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``): 28x28 grey photos of clothes, padded to 32x32.

The files are read from ``$EIGENEDIT_FASHION_MNIST`` or /usr/share/datasets/fashion-mnist (idx format, gzip).
``make_batch`` draws a deterministic batch from an integer seed, like ``eigenedit.shapes.make_batch``.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": "train-{}-idx{}-ubyte.gz", "test": "t10k-{}-idx{}-ubyte.gz"}


def data_dir() -> Path:
    return Path(os.environ.get("EIGENEDIT_FASHION_MNIST", DEFAULT_DIR))


def available() -> bool:
    return all((data_dir() / FILES[s].format("images", 3)).exists() for s in FILES)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=2)
def load(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 32, 32) in [-1, 1] (28x28 padded by 2 px of background) and labels (N,)."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    if not available():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {data_dir()}: `apt-get install dataset-fashion-mnist` "
            "or set EIGENEDIT_FASHION_MNIST to a folder with the idx .gz files"
        )
    images = _read_idx(data_dir() / FILES[split].format("images", 3))
    labels = _read_idx(data_dir() / FILES[split].format("labels", 1))
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1)[:, None]
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def make_batch(n: int, seed: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic batch (images, labels) drawn with replacement from an integer seed."""
    images, labels = load(split)
    idx = torch.randint(0, len(images), (n,), generator=torch.Generator().manual_seed(seed))
    return images[idx], labels[idx]
