"""The fast path of the method: only the top k directions of a decomposition, in float32.

``factorize_top`` gives what ``factorize.factorize`` gives, restricted to the k largest |values|: each
decomposition is a symmetric operator applied to a block of vectors through the projection weights (W_q, W_k, W_v,
W_o are (inner, C) or (C, inner), so one application costs O(C * inner * block)), with no eigh/SVD of a C x C
matrix:

- ``qk``        M = sym(W_q^T W_k) / sqrt(d); its eigenpairs (both signs, sorted by |value|). With merged heads M
                is formed once (one C x C product is cheaper than four thin ones at every Krylov step).
- ``qkv``       M = A^T A, A = [W_q; W_k; W_v] with its rows scaled to unit norm as in ``factorize``; its
                eigenpairs.
- ``ov-left``   M = B B^T, B = W_o W_v; eigenvectors are the left singular vectors, values sqrt(eigenvalues).
- ``ov-right``  M = B^T B; the right singular vectors.
- ``w_q`` ...   M = W^T W for one input projection (``w_o``: M = W_o W_o^T); singular vectors of that matrix.

``top_eigh`` is a block Krylov (block Lanczos with full reorthogonalisation) solver with Rayleigh-Ritz: it grows
an orthonormal basis V of span{X, M X, M^2 X, ...} from a fixed random block X (deterministic), and stops when
every one of the k Ritz pairs has residual ||M x - theta x|| <= tol * |theta_1|, so each eigenvalue is accurate to
about tol^2 * |theta_1|^2 / gap and each vector to tol * |theta_1| / gap (gap: the distance to the next eigenvalue).
Krylov converges with the square root of the relative gap, much faster than power (subspace) iteration on the
flat spectra of randomly initialised layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from eigenedit.core.attention import AttentionWeights, get_attention_module, read_attention_weights
from eigenedit.core.factorize import DECOMPOSITIONS, fix_signs

TOL = 2e-3  # Ritz residual relative to the largest |eigenvalue| (values to ~1e-5, vectors to |cos| > 0.999 on
# random initialisation; tests/test_discovery.py)
SEED = 0  # the starting block: results are deterministic
CHECK_GROWTH = 1.2  # the basis grows by this factor between convergence checks
BLOCK = 16  # columns added to the Krylov basis per step (matrix products run faster on wider blocks)


def _orthonormalise(w: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Columns of w made orthonormal and orthogonal to ``basis`` (twice, for float32 stability); rank-deficient
    columns are dropped."""
    for _ in range(2):
        if basis is not None:
            w = w - basis @ (basis.T @ w)
        w, r = torch.linalg.qr(w)
    keep = r.diagonal().abs() > 1e-5 * max(float(r.diagonal().abs().max()), 1e-30)
    return w[:, keep]


def top_eigh(
    apply: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    k: int,
    dtype: torch.dtype = torch.float32,
    tol: float = TOL,
    block: int | None = None,
    max_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k eigenpairs of largest |value| of the symmetric n x n operator ``apply`` ((n, b) -> (n, b)).

    Returns (values (k,), vectors (n, k)) sorted by |value|, largest first. ``max_dim`` caps the Krylov basis
    (default n: at the cap the pairs are exact up to rounding).
    """
    k = min(k, n)
    block = min(n, block or BLOCK, max(k, 1) * 4)
    block = max(block, min(n, k))
    max_dim = n if max_dim is None else min(n, max_dim)
    g = torch.Generator().manual_seed(SEED)
    basis = _orthonormalise(torch.randn(n, block, generator=g, dtype=dtype), None)
    images = apply(basis)
    t = basis.T @ images
    check = min(max_dim, 4 * block)  # Rayleigh-Ritz (an eigh of the basis size) on a geometric schedule
    while True:
        exhausted = basis.shape[1] >= max_dim
        if basis.shape[1] >= check or exhausted:
            theta, s = torch.linalg.eigh((t + t.T) / 2)
            order = torch.argsort(theta.abs(), descending=True, stable=True)[:k]
            theta, s = theta[order], s[:, order]
            x = basis @ s
            residual = (images @ s - x * theta).norm(dim=0)
            if bool((residual <= tol * theta.abs().max().clamp_min(1e-30)).all()) or exhausted:
                return theta, x
            check = int(basis.shape[1] * CHECK_GROWTH)
        new = _orthonormalise(images[:, -block:], basis)[:, : max_dim - basis.shape[1]]
        if new.shape[1] == 0:  # the basis spans an invariant subspace: exact after one more Rayleigh-Ritz
            max_dim = basis.shape[1]
            continue
        new_images = apply(new)
        side = basis.T @ new_images
        t = torch.cat([torch.cat([t, side], 1), torch.cat([side.T, new.T @ new_images], 1)])
        basis, images = torch.cat([basis, new], 1), torch.cat([images, new_images], 1)


def decomposition_operator(
    weights: AttentionWeights, decomposition: str
) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """(apply, singular): the symmetric operator of a decomposition; ``singular``: its eigenvalues are squared
    singular values (ov-left, ov-right)."""
    q, k, v, o = weights.q, weights.k, weights.v, weights.o
    if decomposition == "qk":
        scale = weights.head_dim**-0.5 / 2
        if 2 * q.shape[0] >= q.shape[1]:  # merged heads: one C x C product, then cheap C x C steps
            m = q.T @ k * scale
            m = m + m.T
            return (lambda x: m @ x), False
        # one head: [W_q; W_k]^T (swap halves of [W_q; W_k] x), two thin products per step
        qk, inner = torch.cat([q, k]), q.shape[0]
        return (lambda x: qk.T @ (qk @ x).roll(inner, 0) * scale), False
    if decomposition == "qkv":
        a = torch.cat([q, k, v])
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)  # SeFa's unit-norm rows, as factorize does
        return (lambda x: a.T @ (a @ x)), False
    if decomposition == "ov-left":
        return (lambda x: o @ (v @ (v.T @ (o.T @ x)))), True
    if decomposition == "ov-right":
        return (lambda x: v.T @ (o.T @ (o @ (v @ x)))), True
    if decomposition == "w_o":
        return (lambda x: o @ (o.T @ x)), True
    if decomposition in ("w_q", "w_k", "w_v"):
        m = {"w_q": q, "w_k": k, "w_v": v}[decomposition]
        return (lambda x: m.T @ (m @ x)), True
    raise ValueError(f"unknown decomposition {decomposition!r}; choose one of {', '.join(DECOMPOSITIONS)}")


@torch.no_grad()
def factorize_top(
    weights: AttentionWeights,
    decomposition: str,
    k: int,
    head: int | None = None,
    fold_norm: bool = False,
    tol: float = TOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (k,), vectors (k, C)) in float32: the top k rows of ``factorize.factorize`` (same order, signs and
    rank truncation), computed by ``top_eigh``."""
    w = weights if head is None else weights.head(head)
    if fold_norm and w.norm_weight is not None:
        scale = w.norm_weight[None, :].to(w.q.dtype)
        w = AttentionWeights(w.name, w.q * scale, w.k * scale, w.v * scale, w.o, w.heads, w.norm_weight)
    apply, singular = decomposition_operator(w, decomposition)
    values, vectors = top_eigh(apply, w.channels, k, dtype=w.q.dtype, tol=tol)
    if singular:
        values = values.clamp_min(0).sqrt()
    rank = int((values.abs() > values.abs().max() * 1e-6).sum())  # float32: a looser cut than factorize's 1e-9
    return values[:rank], fix_signs(vectors.T[:rank].contiguous())


FAST_MIN_CHANNELS = 128  # below this a full float64 decomposition takes milliseconds anyway
FAST_MAX_FRACTION = 4  # auto: fast where k <= channels / 4


def use_fast_solver(solver: str, k: int | None, unet: torch.nn.Module, layer: str) -> bool:
    """Whether ``compute_directions`` takes the top-k path: ``solver`` "fast", "full" or "auto" (fast where k is
    given, k <= C / 4 and C >= 128, C the layer's channels)."""
    if solver not in ("auto", "fast", "full"):
        raise ValueError(f"unknown solver {solver!r}; choose auto, fast or full")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    if solver == "full" or k is None:
        if solver == "fast":
            raise ValueError("the fast solver computes the top k directions: give k")
        return False
    if solver == "fast":
        return True
    module = get_attention_module(unet, layer)
    to_q = getattr(module, "to_q", None)
    channels = to_q.in_features if isinstance(to_q, torch.nn.Linear) else None
    if channels is None:  # modules that expose attention_weights() (ADM): read them
        channels = read_attention_weights(unet, layer, torch.float32).channels
    return channels >= FAST_MIN_CHANNELS and k * FAST_MAX_FRACTION <= channels
