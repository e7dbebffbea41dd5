"""The method: editing directions are eigen/singular vectors of a self-attention layer's weights.

For one head (or all heads merged) with input x in R^C:
- ``qk``       eigenvectors of sym(W_q^T W_k) * d^-1/2: the bilinear form of the attention logits q.k.
- ``ov-left``  left singular vectors of W_o W_v: what the layer can write into the residual stream.
- ``ov-right`` right singular vectors of W_o W_v: what the layer reads from its input.
- ``qkv``      eigenvectors of A^T A, A = [W_q; W_k; W_v] with every row (output unit) scaled to unit norm first:
               SeFa's recipe (genforce/sefa ``utils.factorize_weight``) applied to the three projections.
               Without the normalisation it measured no better (docs/measurements-2026-11.md), so it is not
               offered.
- ``w_q``, ``w_k``, ``w_v``  right singular vectors of one input projection (eigenvectors of W^T W): the input
               directions that projection is most sensitive to ("the eigenvectors of these weight matrices" read
               as each matrix on its own).
- ``w_o``      left singular vectors of the output projection (eigenvectors of W_o W_o^T): what it writes.
Vectors are unit rows sorted by |value| (largest first), truncated to the numerical rank (the null space is
arbitrary), with a fixed sign: the entry of largest magnitude is positive. Everything runs in float64.
"""

from __future__ import annotations

import torch

from eigenedit.core.attention import AttentionWeights

DECOMPOSITIONS = ("qk", "ov-left", "ov-right", "qkv", "w_q", "w_k", "w_v", "w_o")
SINGLE_MATRICES = ("w_q", "w_k", "w_v", "w_o")


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so that its largest-magnitude entry is positive (deterministic output)."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    return vectors * torch.sign(vectors.gather(1, idx))


def factorize(
    weights: AttentionWeights, decomposition: str = "qk", head: int | None = None, fold_norm: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (values (k,), vectors (k, C)) of one decomposition of an attention layer.

    head: None merges all heads (the layer's full matrices); an int uses that head alone.
    fold_norm: multiply the input side by the GroupNorm scale, so that directions live in the normalised space.
    """
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"unknown decomposition {decomposition!r}; choose one of {', '.join(DECOMPOSITIONS)}")
    w = weights if head is None else weights.head(head)
    q, k, v = w.q, w.k, w.v
    if fold_norm and w.norm_weight is not None:
        q, k, v = (m * w.norm_weight[None, :] for m in (q, k, v))
    if decomposition == "qk":
        bilinear = q.T @ k * w.head_dim**-0.5
        values, vectors = torch.linalg.eigh((bilinear + bilinear.T) / 2)
        vectors = vectors.T
    elif decomposition == "qkv":
        a = torch.cat([q, k, v])
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)  # SeFa: weight / norm(weight, axis=0), weight = W^T
        values, vectors = torch.linalg.eigh(a.T @ a)
        vectors = vectors.T
    elif decomposition in SINGLE_MATRICES:
        matrix = {"w_q": q, "w_k": k, "w_v": v, "w_o": w.o.T}[decomposition]  # (out, C): its right vectors
        _, values, vectors = torch.linalg.svd(matrix, full_matrices=False)
    else:
        u, values, vh = torch.linalg.svd(w.o @ v)
        vectors = u.T if decomposition == "ov-left" else vh
    order = torch.argsort(values.abs(), descending=True, stable=True)
    values, vectors = values[order], vectors[order]
    rank = int((values.abs() > values.abs().max() * 1e-9).sum())
    return values[:rank], fix_signs(vectors[:rank])


def random_directions(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The control: ``count`` random unit vectors in R^dim (float64), deterministic from a seed."""
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(count, dim, generator=g, dtype=torch.float64)
    return vectors / vectors.norm(dim=1, keepdim=True)
