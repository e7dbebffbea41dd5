"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``): 28x28 grey photos of clothes, padded to 32x32.

The files are read from ``$EIGENEDIT_FASHION_MNIST`` or /usr/share/datasets/fashion-mnist (idx format, gzip).
``make_batch`` draws a deterministic batch from an integer seed, like ``eigenedit.shapes.make_batch``.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch

from eigenedit.data.probe_net import ProbeNet

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


class FashionClassifier(ProbeNet):
    """A small CNN trained by the project: its class probabilities label edits, and its penultimate features
    (``features``, 128-d) define a Frechet distance on our own features (no Inception weights offline)."""

    def __init__(self, width: int = 16, feature_dim: int = 128):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim}
        c = width
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, c, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.GELU(),
            torch.nn.MaxPool2d(2),  # 16
            torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2),  # 8
            torch.nn.Conv2d(2 * c, 4 * c, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(16 * c, feature_dim), torch.nn.GELU(),
        )  # fmt: skip
        self.head = torch.nn.Linear(feature_dim, len(CLASSES))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 1, 32, 32) in [-1, 1] -> (N, feature_dim)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_classifier(
    epochs: int = 3, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, progress: bool = True
) -> tuple[FashionClassifier, float]:
    """Train the probe classifier on the training split; returns it and its test accuracy."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    images, labels = load("train")
    model = FashionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="classifier", disable=not progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(len(images) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = images[idx]
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval().requires_grad_(False)
    return model, accuracy(model, *load("test"))


@torch.no_grad()
def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    preds = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return float((preds == labels).float().mean())


ATTRIBUTES = ("area", "brightness", "width", "height")


def attributes(images: torch.Tensor, threshold: float = -0.8) -> dict[str, torch.Tensor]:
    """Simple measured attributes of garment images in [-1, 1] on a black background (per image):
    ``area`` = fraction of pixels above ``threshold``; ``brightness`` = mean intensity of those pixels in [0, 1];
    ``width``/``height`` = extent of the columns/rows holding any such pixel, as a fraction of the side."""
    mask = images[:, 0] > threshold
    area = mask.float().mean((1, 2))
    brightness = ((images[:, 0] + 1) / 2 * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)

    def extent(any_along: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(any_along.shape[1], dtype=torch.float32)
        first = torch.where(any_along, idx, torch.inf).min(1).values
        last = torch.where(any_along, idx, -torch.inf).max(1).values
        return ((last - first + 1) / any_along.shape[1]).clamp_min(0).nan_to_num(0.0)

    return {"area": area, "brightness": brightness, "width": extent(mask.any(1)), "height": extent(mask.any(2))}


def main(argv: list[str] | None = None) -> None:
    """``python -m eigenedit.data.fashion --output eigenedit/pretrained/fashion32/classifier``: train the probe."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eigenedit.data.fashion", description=main.__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    model, acc = train_classifier(epochs=args.epochs, seed=args.seed)
    model.save_pretrained(args.output)
    (args.output / "metrics.json").write_text(json.dumps({"test_accuracy": acc, "epochs": args.epochs}) + "\n")
    print(f"test accuracy {acc:.4f}; saved to {args.output}")


if __name__ == "__main__":
    main()
