"""A set of editing directions with its provenance, saved as one safetensors file (JSON metadata inside)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from eigenedit.core.attention import DEFAULT_LAYER, read_attention_weights
from eigenedit.core.factorize import factorize, random_directions
from eigenedit.core.io import atomic_write

FORMAT = "eigenedit.directions/1"


@dataclass
class Directions:
    """Unit row vectors (k, D) with their eigen/singular values (k,) and metadata.

    D is the channel count of the space they act on (broadcast over positions) or C*H*W for full h-space
    directions. ``labels`` is an optional list of short strings, one per direction (e.g. "+size").
    """

    vectors: torch.Tensor
    values: torch.Tensor
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.values.shape != (self.vectors.shape[0],):
            raise ValueError(f"vectors must be (k, D) and values (k,); got {self.vectors.shape}, {self.values.shape}")

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels") or [""] * len(self))

    def select(self, indices: list[int]) -> Directions:
        """A new Directions with the given rows (metadata labels follow)."""
        for i in indices:
            if not 0 <= i < len(self):
                raise ValueError(f"direction index {i} out of range: this set has {len(self)} directions")
        meta = dict(self.metadata, indices=[int(i) for i in indices])
        if self.metadata.get("labels"):
            meta["labels"] = [self.metadata["labels"][i] for i in indices]
        return Directions(self.vectors[indices].clone(), self.values[indices].clone(), meta)

    def top(self, k: int) -> Directions:
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} out of range: this set has {len(self)} directions (1..{len(self)})")
        return self.select(list(range(k)))

    def save(self, path: str | Path) -> None:
        """Write atomically: a failed write leaves no partial file."""
        meta = {"format": FORMAT, "metadata": json.dumps(self.metadata)}
        tensors = {"vectors": self.vectors.contiguous(), "values": self.values.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, expect_dim: int | tuple[int, ...] | None = None) -> Directions:
        """Read a file written by ``save``; raise ValueError with a clear reason if it is corrupt or mismatched."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"directions file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path} is not a valid directions file (safetensors): {err}") from None
        if header.get("format") != FORMAT or set(tensors) != {"vectors", "values"}:
            raise ValueError(f"{path} is a safetensors file but not an eigenedit directions file")
        try:
            metadata = json.loads(header["metadata"])
            out = cls(tensors["vectors"], tensors["values"], metadata)
        except (KeyError, json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{path} has corrupt directions metadata: {err}") from None
        allowed = (expect_dim,) if isinstance(expect_dim, int) else expect_dim
        if allowed is not None and out.dim not in allowed:
            raise ValueError(
                f"{path} holds {out.dim}-dimensional directions (layer {metadata.get('layer')!r} of model "
                f"{metadata.get('model')!r}), but the edit location has {allowed[0]} channels"
            )
        return out


def compute_directions(
    unet: torch.nn.Module,
    layer: str = DEFAULT_LAYER,
    decomposition: str = "qk",
    head: int | None = None,
    fold_norm: bool = False,
    model_id: str = "",
) -> Directions:
    """Directions of one decomposition of one self-attention layer (``random`` gives the control set)."""
    weights = read_attention_weights(unet, layer)
    if decomposition == "random":
        vectors = random_directions(weights.channels, weights.channels, seed=0)
        values = torch.zeros(weights.channels, dtype=torch.float64)
    else:
        values, vectors = factorize(weights, decomposition, head=head, fold_norm=fold_norm)
    meta = {
        "model": model_id,
        "layer": layer,
        "decomposition": decomposition,
        "head": head,
        "fold_norm": fold_norm,
        "channels": weights.channels,
        "heads": weights.heads,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Directions(vectors.float(), values.float(), meta)
