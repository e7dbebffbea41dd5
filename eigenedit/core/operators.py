"""Edit operators: how a direction acts on the model during sampling (``OPERATORS``; ``make_operator``).

- ``shift`` adds ``alpha * ||h|| * u`` to the output h of one module (default: the mid-block, i.e. Asyrp/Haas
  "h-space"). u is the unit vector of the direction spread over all positions (a C-dim direction n becomes
  n / sqrt(H*W) at each of the H*W positions), and ||h|| is the norm of that sample's h at that step: alpha = 1
  moves h by its own length. Several directions compose as a sum.
- ``scale`` is content-aware: ``h_p += alpha * <h_p, n> n`` at every position p (n the unit C-dim direction; the
  whole flattened h for C*H*W directions): alpha = -1 removes the direction where the image has it, +1 doubles it.
- ``spectral`` edits the attention layer the directions came from, not a hidden state: it adds
  ``alpha * s * left right^T`` to the decomposed matrix (qk: W_q^T W_k / sqrt(d), in the attention logits;
  ov: W_o W_v, in what the layer writes; qkv: A = [W_q; W_k; W_v], i.e. A (I + alpha u u^T)). With merged heads
  head h gets its own share s_h = left^T M_h right (they sum to the eigen/singular value), so alpha = -1 removes
  the mode from every head and +1 doubles it. It runs through an attention processor (diffusers) or a forward
  hook (ADM blocks); the weights are never copied or changed.
- ``xspace`` (Park et al.) moves x_t, not h: at every edited step, ``x_t += |alpha| * ||x_t|| * g / ||g||`` with
  g = J^T U, J = d h / d x_t and U the shift's field of ``alpha * u`` (one VJP per step; ``cg_steps`` > 0 refines
  g by conjugate gradients toward J g = U). The rest of sampling stays under no_grad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from eigenedit.core.directions import Directions

if TYPE_CHECKING:
    from collections.abc import Callable

    from eigenedit.core.attention import AttentionWeights
    from eigenedit.models.base import DiffusionModel


def check_batch(alphas: torch.Tensor, x: torch.Tensor) -> None:
    """An edit needs one row of alphas per sample of the batch it edits."""
    if alphas.shape[0] != x.shape[0]:
        raise ValueError(f"edit has {alphas.shape[0]} rows of alphas for a batch of {x.shape[0]}")


def check_finite(x: torch.Tensor, alphas: torch.Tensor | None) -> None:
    """Refuse a sample holding NaN or inf (it would be written as a black image); ``alphas``: the edit's, if any."""
    if torch.isfinite(x).all():
        return
    if alphas is None:
        raise ValueError("sampling produced non-finite values (NaN or inf): the model's output is broken")
    raise ValueError(
        f"sampling produced non-finite values (NaN or inf) (largest |alpha| {alphas.abs().max().item():g}): the edit "
        "is far too strong for this model; use a smaller alpha"
    )


def direction_field(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """sum_k alpha_k u_k shaped like h (B, C, H, W) or (B, N, C): C-dim directions spread evenly over positions
    (unit norm per direction), or C*H*W directions as they are."""
    combo = alphas.to(h) @ vectors.to(h)  # (B, D)
    if h.ndim == 4:
        channels, positions = h.shape[1], h.shape[2] * h.shape[3]
    elif h.ndim == 3:
        channels, positions = h.shape[2], h.shape[1]
    else:
        raise ValueError(f"cannot edit a hidden state of shape {tuple(h.shape)}")
    if combo.shape[1] == channels:
        u = combo / math.sqrt(positions)
        return (u[:, :, None, None] if h.ndim == 4 else u[:, None, :]).expand_as(h)
    if combo.shape[1] == h[0].numel():
        return combo.view_as(h)
    raise ValueError(
        f"directions have dimension {combo.shape[1]}, but the hidden state has {channels} channels "
        f"({h[0].numel()} values per sample)"
    )


def shift_hidden(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``shift``: h + alpha * ||h|| * u for h of shape (B, C, H, W) or (B, N, C) (tokens)."""
    u = direction_field(h, vectors, alphas)
    norm = h.reshape(h.shape[0], -1).norm(dim=1).view(h.shape[0], *([1] * (h.ndim - 1)))
    return h + norm * u


def scale_hidden(h: torch.Tensor, vectors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``scale``: h_p + sum_k alpha_k <h_p, n_k> n_k at each position p (C-dim directions), or
    h + sum_k alpha_k <h, n_k> n_k over the flattened h (C*H*W directions)."""
    n, a = vectors.to(h), alphas.to(h)
    if h.ndim not in (3, 4):
        raise ValueError(f"cannot edit a hidden state of shape {tuple(h.shape)}")
    channels = h.shape[1] if h.ndim == 4 else h.shape[2]
    if n.shape[1] == channels:
        tokens = h.flatten(2).transpose(1, 2) if h.ndim == 4 else h  # (B, N, C)
        delta = (tokens @ n.T * a[:, None, :]) @ n
        return h + (delta.transpose(1, 2).view_as(h) if h.ndim == 4 else delta)
    if n.shape[1] == h[0].numel():
        flat = h.reshape(h.shape[0], -1)
        return h + ((flat @ n.T * a) @ n).view_as(h)
    raise ValueError(
        f"directions have dimension {n.shape[1]}, but the hidden state has {channels} channels "
        f"({h[0].numel()} values per sample)"
    )


def batch_alphas(alphas: torch.Tensor, batch: int) -> torch.Tensor:
    """Alphas (B, k) for a UNet batch of ``batch`` rows: stacked copies of the batch (classifier-free guidance:
    [uncond; cond]) give every copy of a sample that sample's alphas."""
    if batch != len(alphas) and batch % len(alphas) == 0:
        return alphas.repeat(batch // len(alphas), 1)
    return alphas


def get_module(unet: torch.nn.Module, location: str) -> torch.nn.Module:
    modules = dict(unet.named_modules())
    if not location or location not in modules:
        hint = ", ".join(n for n in modules if n.count(".") <= 1 and n)[:400]
        raise ValueError(f"unknown edit location {location!r}; modules include: {hint}")
    return modules[location]


def hidden_at(model: DiffusionModel, location: str, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """The output of module ``location`` (its first tensor) in one UNet forward pass on (x, t).

    Under classifier-free guidance the UNet runs on [unconditional; conditional] copies of x: this returns the
    conditional (last) copy.
    """
    store = {}
    hook = get_module(model.unet, location).register_forward_hook(
        lambda m, a, o: store.update(h=o[0] if isinstance(o, tuple) else o)
    )
    try:
        model.predict_eps(x, torch.as_tensor(t, device=x.device))
    finally:
        hook.remove()
    return store["h"][-x.shape[0] :]


@torch.no_grad()
def location_dims(model: DiffusionModel, location: str) -> tuple[int, int]:
    """(channels, values per sample) of the output of ``location``, from one dry forward pass."""
    h = hidden_at(model, location, torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype), 0)
    return (h.shape[1] if h.ndim == 4 else h.shape[-1]), h[0].numel()


class HiddenShift:
    """A forward hook that edits a module's output (``fn``: ``shift_hidden`` or ``scale_hidden``) while
    ``active``; use as a context manager."""

    def __init__(self, module: torch.nn.Module, vectors: torch.Tensor, alphas: torch.Tensor, fn=shift_hidden):
        self.module, self.vectors, self.alphas, self.fn = module, vectors, alphas, fn
        self.active = False
        self.handle = None

    def _hook(self, module, args, output):
        if not self.active:
            return output
        h = output[0] if isinstance(output, tuple) else output
        edited = self.fn(h, self.vectors, batch_alphas(self.alphas, h.shape[0]))
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Operators on h leave x_t alone."""
        return x

    def __enter__(self) -> HiddenShift:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# ------------------------------------------------------------------------------------------------- spectral


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

    def __init__(self, unet: torch.nn.Module, directions: Directions, alphas: torch.Tensor):
        from eigenedit.core.attention import get_attention_module, read_attention_weights

        layer = directions.metadata.get("layer")
        if not layer:
            raise ValueError("spectral needs directions that name their attention layer (metadata 'layer')")
        self.module = get_attention_module(unet, layer)
        self.modes = layer_modes(directions, read_attention_weights(unet, layer))
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

    def _adm_hook(self, module, args, output):
        """ADM ``AttentionBlock``: x + proj_out(attention(qkv(norm(x)))), recomputed with ``attend``."""
        if not self.active or not self.alphas.any():
            return output
        x = args[0]
        b, c, *spatial = x.shape
        h = module.norm(x)
        if isinstance(module.qkv, torch.nn.Conv1d):
            h = h.reshape(b, c, -1)
        qkv = module.qkv(h).reshape(b, 3 * c, -1)
        heads, length = module.num_heads, qkv.shape[-1]
        if module.use_new_attention_order:
            q, k, v = qkv.chunk(3, dim=1)
        else:
            per_head = qkv.reshape(b, heads, 3, c // heads, length)
            q, k, v = (per_head[:, :, i].reshape(b, c, length) for i in range(3))
        tokens = h.reshape(b, c, length).transpose(1, 2)
        out, extra = self.attend(tokens, *(t.transpose(1, 2) for t in (q, k, v)), heads, (c // heads) ** -0.5)
        a = out.transpose(1, 2)
        if isinstance(module.proj_out, torch.nn.Conv2d):
            a = a.reshape(b, c, *spatial)
        y = module.proj_out(a).reshape(b, c, length)
        if not isinstance(extra, float):
            y = y + extra.transpose(1, 2)
        return self._splice(x + y.reshape(x.shape), lambda: output)

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return x

    def __enter__(self) -> Spectral:
        if hasattr(self.module, "set_processor"):
            self.base = self.module.processor
            self.module.set_processor(self)
        elif hasattr(self.module, "qkv") and hasattr(self.module, "proj_out"):
            self.handle = self.module.register_forward_hook(self._adm_hook)
        else:
            raise ValueError(f"spectral is not supported for attention modules of type {type(self.module).__name__}")
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()
        else:
            self.module.set_processor(self.base)


# --------------------------------------------------------------------------------------------------- xspace


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the edit location's output is known."""


def hidden_prefix(model: DiffusionModel, location: str, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """Like ``hidden_at``, but the forward pass stops at ``location`` (a gradient then flows only through the
    part of the UNet before it)."""
    store = {}

    def hook(module, args, output):
        store["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    handle = get_module(model.unet, location).register_forward_hook(hook)
    try:
        model.predict_eps(x, torch.as_tensor(t, device=x.device))
    except _Stop:
        pass
    finally:
        handle.remove()
    return store["h"][-x.shape[0] :]


class XSpace:
    """``xspace``: at every edited step, x_t += |alpha| * ||x_t|| * g / ||g||, g = J^T U (see the docstring)."""

    def __init__(self, model: DiffusionModel, location: str, vectors: torch.Tensor, alphas: torch.Tensor, cg_steps=0):
        self.model, self.location, self.vectors, self.alphas, self.cg_steps = model, location, vectors, alphas, cg_steps
        self.active = False

    def direction(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """g (same shape as x): J^T U, or with ``cg_steps`` the CG solution of min ||J g - U|| started at 0."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            if self.cg_steps == 0:
                h = hidden_prefix(self.model, self.location, xg, t)
                target = direction_field(h.detach(), self.vectors, self.alphas).contiguous()
                return torch.autograd.grad(h, xg, target)[0].detach()
            return self._cg(xg, t).detach()

    def _cg(self, xg: torch.Tensor, t: int) -> torch.Tensor:
        """CG on the normal equations J^T J g = J^T U, per sample; J p as the VJP of w -> J^T w (double backward)."""
        from diffusers.models.attention_processor import Attention, AttnProcessor

        attentions = [m for m in self.model.unet.modules() if isinstance(m, Attention)]
        processors = [m.processor for m in attentions]
        for m in attentions:
            m.set_processor(AttnProcessor())  # plain ops: fused SDPA has no double backward on CPU
        try:
            h = hidden_prefix(self.model, self.location, xg, t)
            target = direction_field(h.detach(), self.vectors, self.alphas).contiguous()
            w = torch.zeros_like(h, requires_grad=True)
            (jt_w,) = torch.autograd.grad(h, xg, w, create_graph=True)

            def normal(p: torch.Tensor) -> torch.Tensor:  # J^T J p
                jp = torch.autograd.grad(jt_w, w, p, retain_graph=True)[0]
                return torch.autograd.grad(h, xg, jp, retain_graph=True)[0]

            def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.ndim - 1)))

            r = torch.autograd.grad(h, xg, target, retain_graph=True)[0]  # J^T U - J^T J 0
            g, p, rr = torch.zeros_like(r), r, dot(r, r)
            for _ in range(self.cg_steps):
                ap = normal(p)
                step = rr / dot(p, ap).clamp_min(1e-30)
                g, r = g + step * p, r - step * ap
                rr_new = dot(r, r)
                p, rr = r + rr_new / rr.clamp_min(1e-30) * p, rr_new
            return g
        finally:
            for m, proc in zip(attentions, processors, strict=True):
                m.set_processor(proc)

    def move(self, x: torch.Tensor, t: int) -> torch.Tensor:
        alphas = self.alphas.to(x)
        if not alphas.any():
            return x
        g = self.direction(x, t)
        shape = (-1, *([1] * (x.ndim - 1)))
        size = alphas.norm(dim=1).view(shape) * x.flatten(1).norm(dim=1).view(shape)
        return x + size * g / g.flatten(1).norm(dim=1).view(shape).clamp_min(1e-30)

    def __enter__(self) -> XSpace:
        return self

    def __exit__(self, *exc) -> None:
        pass


OPERATORS = ("shift", "scale", "spectral", "xspace")


def make_operator(
    model: DiffusionModel, operator: str, directions: Directions, alphas: torch.Tensor, location: str, cg_steps: int = 0
):
    """The operator object ``sampling.sample`` drives: a context manager with ``active`` (set during the UNet call
    of an edited step) and ``move(x, t)`` (called before it)."""
    if operator == "shift":
        return HiddenShift(get_module(model.unet, location), directions.vectors, alphas, shift_hidden)
    if operator == "scale":
        return HiddenShift(get_module(model.unet, location), directions.vectors, alphas, scale_hidden)
    if operator == "spectral":
        return Spectral(model.unet, directions, alphas)
    if operator == "xspace":
        get_module(model.unet, location)
        return XSpace(model, location, directions.vectors, alphas, cg_steps)
    raise ValueError(f"unknown operator {operator!r}; choose one of {', '.join(OPERATORS)}")


def predict_step(op, t_edit: float | None, x: torch.Tensor, t, predict) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One denoiser call of a sampling loop: at steps t >= t_edit (``t_edit`` None: no edit) the operator moves x
    (``move``) and is active for that call only. Returns (x, prediction, whether the step was edited)."""
    if t_edit is None or float(t) < t_edit:
        return x, predict(x, t), False
    x = op.move(x, int(t))
    op.active = True
    try:
        return x, predict(x, t), True
    finally:
        op.active = False
