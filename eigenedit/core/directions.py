"""A set of editing directions with its provenance, saved as one safetensors file (JSON metadata inside)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize

from eigenedit.core import cache as direction_cache
from eigenedit.core.attention import DEFAULT_LAYER, WeightReader, read_attention_weights
from eigenedit.core.factorize import factorize, random_directions
from eigenedit.core.io import atomic_write
from eigenedit.core.topk import factorize_top, use_fast_solver

FORMAT = "eigenedit.directions/1"


@dataclass
class Directions:
    """Unit row vectors (k, D) with their eigen/singular values (k,) and metadata.

    D is the channel count of the space they act on (broadcast over positions) or C*H*W for full h-space
    directions. ``labels`` is an optional list of short strings, one per direction (e.g. "+size").
    ``partners`` (k, D'), optional: the other side of each rank-one mode, for the ``spectral`` operator (ov-left:
    right singular vectors; random controls: random ones); without them it derives them from the weights.
    """

    vectors: torch.Tensor
    values: torch.Tensor
    metadata: dict = field(default_factory=dict)
    partners: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.values.shape != (self.vectors.shape[0],):
            raise ValueError(f"vectors must be (k, D) and values (k,); got {self.vectors.shape}, {self.values.shape}")
        if self.partners is not None and (self.partners.ndim != 2 or len(self.partners) != len(self.vectors)):
            raise ValueError(f"partners must be (k, D'); got {tuple(self.partners.shape)} for k={len(self.vectors)}")

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
        if self.metadata.get("head_values"):
            meta["head_values"] = [self.metadata["head_values"][i] for i in indices]
        partners = None if self.partners is None else self.partners[indices].clone()
        return Directions(self.vectors[indices].clone(), self.values[indices].clone(), meta, partners)

    def top(self, k: int) -> Directions:
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} out of range: this set has {len(self)} directions (1..{len(self)})")
        return self.select(list(range(k)))

    def save(self, path: str | Path) -> None:
        """Write atomically: a failed write leaves no partial file."""
        meta = {"format": FORMAT, "metadata": json.dumps(self.metadata)}
        tensors = {"vectors": self.vectors.contiguous(), "values": self.values.contiguous()}
        if self.partners is not None:
            tensors["partners"] = self.partners.contiguous()
        data = serialize(tensors, metadata=meta)  # serialized here, written by Python: a full disk is an OSError
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

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
        if header.get("format") != FORMAT or set(tensors) - {"partners"} != {"vectors", "values"}:
            raise ValueError(f"{path} is a safetensors file but not an eigenedit directions file")
        try:
            metadata = json.loads(header["metadata"])
            check_contents(tensors, metadata)
            out = cls(tensors["vectors"], tensors["values"], metadata, tensors.get("partners"))
        except (KeyError, json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{path} has corrupt directions metadata: {err}"[:400]) from None
        allowed = (expect_dim,) if isinstance(expect_dim, int) else expect_dim
        if allowed is not None and out.dim not in allowed:
            raise ValueError(
                f"{path} holds {out.dim}-dimensional directions (layer {metadata.get('layer')!r} of model "
                f"{metadata.get('model')!r}), but the edit location has {allowed[0]} channels"
            )
        return out


def check_contents(tensors: dict[str, torch.Tensor], metadata: object) -> None:
    """What ``Directions.load`` read must be usable: finite floating-point vectors (k >= 1 rows) and values, and
    a JSON object of metadata whose ``labels`` and ``head_values``, if any, hold one entry per direction."""
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, not {type(metadata).__name__}")
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all() or tensor.numel() == 0:
            raise ValueError(f"{name} must be a non-empty tensor of finite floating-point numbers")
    k = len(tensors["vectors"])
    for name in ("labels", "head_values"):
        value = metadata.get(name)
        if value and (not isinstance(value, list) or len(value) != k):
            raise ValueError(f"{name} must be a list of {k} entries, one per direction")
    labels = metadata.get("labels")
    if labels and not all(isinstance(label, str) for label in labels):
        raise ValueError("labels must be strings")


def compute_directions(
    unet: torch.nn.Module,
    layer: str = DEFAULT_LAYER,
    decomposition: str = "qk",
    head: int | None = None,
    fold_norm: bool = False,
    model_id: str = "",
    k: int | None = None,
    solver: str = "auto",
    cache: bool = True,
    read: WeightReader | None = None,
) -> Directions:
    """Directions of one decomposition of one self-attention layer (``random`` gives the control set).

    k: keep only the top k (None: all). solver: "full" (float64 eigh/SVD of the whole matrix), "fast" (float32
    block Krylov for the top k, ``core.topk``), or "auto": fast where k is small against the channels.
    cache: reuse the result for identical weights (``core.cache``: in memory, and on disk where a folder is set).
    read: how the model reads the layer's weights (``model.attention_weights``; default ``read_attention_weights``
    on ``unet``, which refuses the layers only their model can read: SD3.5's and Flux's).
    """
    fast = decomposition != "random" and use_fast_solver(solver, k, unet, layer)
    dtype = torch.float32 if fast else torch.float64
    weights = (
        read_attention_weights(unet, layer, dtype, copy=not fast) if read is None else read(layer, dtype, not fast)
    )
    if decomposition == "random":
        vectors = random_directions(weights.channels, weights.channels, seed=0)[:k]
        values = torch.zeros(len(vectors), dtype=torch.float64)
    else:

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            if fast:
                return factorize_top(weights, decomposition, k, head=head, fold_norm=fold_norm)
            values, vectors = factorize(weights, decomposition, head=head, fold_norm=fold_norm)
            return values[:k], vectors[:k]

        parts = {"decomposition": decomposition, "head": head, "fold_norm": fold_norm, "k": k, "fast": fast}
        values, vectors = direction_cache.cached(parts, weights, run) if cache else run()
    meta = {
        "model": model_id,
        "layer": layer,
        "decomposition": decomposition,
        "head": head,
        "fold_norm": fold_norm,
        "channels": weights.channels,
        "heads": weights.heads,
        "solver": "fast" if fast else "full",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return Directions(vectors.float(), values.float(), meta)
