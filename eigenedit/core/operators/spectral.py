"""The ``spectral`` operator: edits the attention layer the directions came from, not a hidden state.

It adds ``alpha * s * left right^T`` to the decomposed matrix (qk: W_q^T W_k / sqrt(d), in the attention logits;
ov: W_o W_v, in what the layer writes; qkv: A = [W_q; W_k; W_v], i.e. A (I + alpha u u^T)). With merged heads
head h gets its own share s_h = left^T M_h right (they sum to the eigen/singular value), so alpha = -1 removes
the mode from every head and +1 doubles it. It runs through an attention processor (diffusers) or a forward
hook (ADM blocks); the weights are never copied or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_processor import Attention

from eigenedit.core.attention import AttentionWeights, OwnAttention, get_attention_module
from eigenedit.core.directions import Directions
from eigenedit.core.operators.hidden import batch_alphas

if TYPE_CHECKING:
    from collections.abc import Callable

    from eigenedit.core.model import EditableModel


@dataclass
class Modes:
    """k rank-one modes ``s * left right^T`` of one matrix of an attention layer (see the module docstring).

    kind: "qk", "ov" or "qkv"; left (k, C) or (k, 3*inner) for qkv; right (k, C); strengths (k, heads) for qk
    and ov (each head's share), (k, 1) for qkv.
    """

    kind: str
    left: torch.Tensor
    right: torch.Tensor
    strengths: torch.Tensor


def _head_matrices(weights: AttentionWeights, kind: str) -> list[torch.Tensor]:
    heads = [weights.head(h) for h in range(weights.heads)]
    if kind == "qk":
        return [w.q.T @ w.k * w.head_dim**-0.5 for w in heads]
    return [w.o @ w.v for w in heads]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


def layer_modes(directions: Directions, weights: AttentionWeights) -> Modes:
    """The rank-one modes of ``directions`` in the layer they came from (metadata: decomposition, head).

    Without stored ``partners`` the other side of each mode comes from the weights (ov-left u -> v = M^T u / |.|;
    qkv u -> A u / |A u|); without ``metadata["head_values"]`` the strengths too (s_h = left^T M_h right).
    Random controls (``random_modes``) carry both.
    """
    meta = directions.metadata
    decomposition, head = meta.get("decomposition"), meta.get("head")
    if decomposition not in ("qk", "ov-left", "ov-right") and not str(decomposition).startswith("qkv"):
        raise ValueError(
            f"spectral needs directions of an attention decomposition (qk, ov-left, ov-right, qkv); "
            f"got {decomposition!r}"
        )
    if meta.get("fold_norm"):
        raise ValueError("spectral edits the layer's own matrices: use directions computed without --fold-norm")
    vectors = directions.vectors.double()
    partners = None if directions.partners is None else directions.partners.double()
    stored = meta.get("head_values")
    if decomposition.startswith("qkv"):
        if head is not None:
            raise ValueError("spectral qkv edits all heads at once: use directions with merged heads")
        a = torch.cat([weights.q, weights.k, weights.v])
        left = _unit(vectors @ a.T) if partners is None else partners
        strengths = (vectors @ a.T).norm(dim=1, keepdim=True) if stored is None else torch.tensor(stored)
        return Modes("qkv", left, vectors, strengths.double())
    kind = "qk" if decomposition == "qk" else "ov"
    mats = _head_matrices(weights, kind)
    total = sum(mats) if head is None else mats[head]
    if decomposition == "ov-right":
        left = _unit(vectors @ total.T) if partners is None else partners
        right = vectors
    else:
        left = vectors
        right = (vectors if kind == "qk" else _unit(vectors @ total)) if partners is None else partners
    if stored is not None:
        strengths = torch.tensor(stored, dtype=torch.float64)
    else:
        strengths = torch.stack([torch.einsum("kc,cd,kd->k", left, m, right) for m in mats], dim=1)
        if head is not None:
            strengths = strengths * (torch.arange(weights.heads) == head)
    return Modes(kind, left, right, strengths)


def random_modes(directions: Directions, weights: AttentionWeights, seed: int = 0) -> Directions:
    """The control of ``directions``: random unit vectors with, for ``spectral``, random rank-one modes of the
    same per-head strengths (the same norm); qk modes stay symmetric. Other operators use just the vectors."""
    modes = layer_modes(directions, weights)
    g = torch.Generator().manual_seed(seed)
    vectors = _unit(torch.randn(directions.vectors.shape, generator=g, dtype=torch.float64))
    if modes.kind == "qk":
        partners = vectors
    else:  # partners hold the side that ``vectors`` do not: ov-left's right, ov-right's and qkv's left
        other = modes.right if directions.metadata["decomposition"] == "ov-left" else modes.left
        partners = _unit(torch.randn(other.shape, generator=g, dtype=torch.float64))
    meta = dict(directions.metadata, control="random-mode", seed=seed, head_values=modes.strengths.tolist())
    return Directions(vectors.float(), directions.values.clone(), meta, partners=partners.float())


class Spectral:
    """``spectral``: adds the modes, weighted by alphas (B, k), to one attention layer while ``active``."""

    def __init__(self, module: torch.nn.Module, modes: Modes, alphas: torch.Tensor):
        self.module, self.modes = module, modes
        self.alphas, self.active, self.handle, self.base = alphas, False, None, None

    def attend(self, x, q, k, v, heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Self-attention on tokens x (B, N, C) with projections q, k, v (B, N, inner) and the modes added:
        returns the head outputs (B, N, inner) and the ov term (B, N, C) to add after the output projection."""
        b, n, inner = q.shape
        m = Modes(self.modes.kind, *(t.to(x) for t in (self.modes.left, self.modes.right, self.modes.strengths)))
        a = batch_alphas(self.alphas, b).to(x)  # (B, k)
        xr = x @ m.right.T  # (B, N, k)
        if m.kind == "qkv":
            add = (xr * a[:, None, :] * m.strengths[:, 0]) @ m.left  # (B, N, 3 * inner)
            q, k, v = q + add[..., :inner], k + add[..., inner : 2 * inner], v + add[..., 2 * inner :]
        q, k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, N, d)
        scores = q @ k.transpose(-1, -2) * scale
        if m.kind == "qk":
            scores = scores + torch.einsum("bk,kh,bik,bjk->bhij", a, m.strengths, x @ m.left.T, xr)
        probs = scores.float().softmax(dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, n, inner)
        if m.kind != "ov":
            return out, 0.0
        coef = torch.einsum("bk,kh,bhik->bik", a, m.strengths, probs @ xr[:, None])
        return out, coef @ m.left

    def _splice(self, edited: torch.Tensor, plain: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Rows whose alphas are all zero keep the unedited output bit for bit (the edit path computes attention
        in another order, so its rounding differs); the others take the edited output. ``plain`` is called only
        when some row is unedited."""
        rows = batch_alphas(self.alphas, len(edited)).ne(0).any(dim=1).to(edited.device)
        if bool(rows.all()):
            return edited
        return torch.where(rows.view(-1, *[1] * (edited.ndim - 1)), edited, plain())

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        """The diffusers attention processor: AttnProcessor's computation, with ``attend`` at its centre."""

        def plain() -> torch.Tensor:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

        if not self.active or encoder_hidden_states is not None or not self.alphas.any():
            return plain()
        if attention_mask is not None:
            raise ValueError("spectral does not support attention masks")
        return self._splice(self._edited(attn, hidden_states, temb), plain)

    def _edited(self, attn, hidden_states: torch.Tensor, temb) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        x = hidden_states
        out, extra = self.attend(x, attn.to_q(x), attn.to_k(x), attn.to_v(x), attn.heads, attn.scale)
        hidden_states = attn.to_out[1](attn.to_out[0](out) + extra)
        if len(shape) == 4:
            hidden_states = hidden_states.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _own_hook(self, module: OwnAttention, args, output):
        """An ``OwnAttention`` module (ADM's ``AttentionBlock``) recomputed with ``attend``."""
        if not self.active or not self.alphas.any():
            return output
        return self._splice(module.forward_with(args[0], self.attend), lambda: output)

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return x

    def __enter__(self) -> Spectral:
        if isinstance(self.module, Attention):
            self.base = self.module.processor
            self.module.set_processor(self)
        elif isinstance(self.module, OwnAttention):
            self.handle = self.module.register_forward_hook(self._own_hook)
        else:
            raise ValueError(f"spectral is not supported for attention modules of type {type(self.module).__name__}")
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()
        else:
            self.module.set_processor(self.base)


def build_spectral(
    model: EditableModel, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
) -> Spectral:
    layer = directions.metadata.get("layer")
    if not layer:
        raise ValueError("spectral needs directions that name their attention layer (metadata 'layer')")
    module = get_attention_module(model.unet, layer)
    return Spectral(module, layer_modes(directions, model.attention_weights(layer)), alphas)
