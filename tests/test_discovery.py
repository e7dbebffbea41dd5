"""Fast top-k discovery (``core.topk``) against the full float64 decomposition, the automatic solver choice, and
the cache of directions by weight hash (``core.cache``)."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from eigenedit.core import cache, directions
from eigenedit.core.attention import AttentionWeights
from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, factorize
from eigenedit.core.topk import factorize_top, top_eigh


class Block(torch.nn.Module):
    """A transformer block's self-attention with its LayerNorm, as in Stable Diffusion (``norm1`` + ``attn1``)."""

    def __init__(self, channels: int, heads: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm1 = torch.nn.LayerNorm(channels)
        self.attn1 = Attention(channels, heads=heads, dim_head=channels // heads)
        with torch.no_grad():
            self.norm1.weight.uniform_(0.5, 1.5)


def power_law_weights(channels: int = 256, heads: int = 4, seed: int = 0) -> AttentionWeights:
    """Projections with singular values falling as i^-0.7, the decaying spectra of trained attention layers."""
    g = torch.Generator().manual_seed(seed)

    def matrix() -> torch.Tensor:
        u, _ = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
        s = torch.arange(1, channels + 1, dtype=torch.float64) ** -0.7
        return u @ torch.diag(s) @ v.T

    return AttentionWeights("power", matrix(), matrix(), matrix(), matrix(), heads)


def check(fast: tuple[torch.Tensor, torch.Tensor], full: tuple[torch.Tensor, torch.Tensor], k: int) -> None:
    """Top-k values to 1e-4 (relative) and each vector to |cos| > 0.999 with the full decomposition's."""
    (fv, fx), (v, x) = fast, full
    assert fv.shape == (k,) and fx.shape == (k, x.shape[1]) and fv.dtype == torch.float32
    assert torch.allclose(fv.double(), v[:k], rtol=1e-4, atol=0)
    cos = (fx.double() * x[:k]).sum(1)
    assert cos.min() > 0.999, cos  # same sign convention too: largest entry positive
    assert torch.allclose(fx.norm(dim=1), torch.ones(k), atol=1e-5)


@pytest.mark.parametrize("decomposition", DECOMPOSITIONS)
def test_fast_top_k_matches_the_full_decomposition_on_random_init(decomposition):
    """Random initialisation: flat spectra with small gaps, the hard case for a top-k solver."""
    block = Block(320, heads=8)
    weights = AttentionWeights(
        "attn1",
        *(m.weight.detach() for m in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v)),
        block.attn1.to_out[0].weight.detach(),
        8,
        block.norm1.weight.detach(),
    )
    full = factorize(weights.to(torch.float64), decomposition)
    check(factorize_top(weights, decomposition, 8), full, 8)


@pytest.mark.parametrize("decomposition", DECOMPOSITIONS)
def test_fast_top_k_on_decaying_spectra_per_head_and_folded(decomposition):
    weights = power_law_weights()
    weights.norm_weight = torch.linspace(0.5, 1.5, weights.channels, dtype=torch.float64)
    for head, fold in [(None, False), (2, False), (None, True)]:
        full = factorize(weights, decomposition, head=head, fold_norm=fold)
        check(factorize_top(weights.to(torch.float32), decomposition, 10, head=head, fold_norm=fold), full, 10)


def test_top_eigh_on_an_indefinite_matrix():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    spectrum = torch.linspace(-3, 2, 200, dtype=torch.float64)  # the largest |value| is negative
    matrix = (q * spectrum) @ q.T
    values, vectors = top_eigh(lambda x: matrix.float() @ x, 200, 5)
    assert torch.allclose(values.double(), spectrum[:5], rtol=1e-4)
    assert ((vectors.double().T @ q[:, :5]).diagonal().abs() > 0.999).all()


def test_auto_solver_choice_and_metadata():
    block = Block(256, heads=4)
    fast = compute_directions(block, "attn1", "qk", k=8, cache=False)
    assert fast.metadata["solver"] == "fast" and len(fast) == 8
    full = compute_directions(block, "attn1", "qk", cache=False)
    assert full.metadata["solver"] == "full" and len(full) == 256
    assert compute_directions(block, "attn1", "qk", k=100, cache=False).metadata["solver"] == "full"  # k > C / 4
    small = Block(64, heads=4)
    assert compute_directions(small, "attn1", "qk", k=4, cache=False).metadata["solver"] == "full"
    assert compute_directions(small, "attn1", "qk", k=4, solver="fast", cache=False).metadata["solver"] == "fast"
    assert torch.allclose(fast.values.double(), full.values[:8].double(), rtol=1e-4)
    random = compute_directions(block, "attn1", "random", k=3)
    assert len(random) == 3 and random.metadata["solver"] == "full"
    with pytest.raises(ValueError, match="give k"):
        compute_directions(block, "attn1", "qk", solver="fast")
    with pytest.raises(ValueError, match="unknown solver"):
        compute_directions(block, "attn1", "qk", k=2, solver="lanczos")


@pytest.fixture
def counted(monkeypatch):
    """Count the decompositions compute_directions really runs."""
    calls = []
    real = directions.factorize_top

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(directions, "factorize_top", counting)
    cache.clear_memory()
    cache.set_cache_dir(None)
    yield calls
    cache.clear_memory()
    cache.set_cache_dir(False)


def test_cache_hits_identical_weights_and_misses_changed_ones(counted):
    block = Block(256, heads=4)
    first = compute_directions(block, "attn1", "ov-left", k=5, model_id="a")
    again = compute_directions(block, "attn1", "ov-left", k=5, model_id="b")
    twin = compute_directions(Block(256, heads=4), "attn1", "ov-left", k=5)  # same seed: same weights
    assert len(counted) == 1
    assert torch.equal(first.vectors, again.vectors) and torch.equal(first.vectors, twin.vectors)
    assert again.metadata["model"] == "b"
    compute_directions(block, "attn1", "ov-left", k=6)  # another k
    compute_directions(block, "attn1", "qk", k=5)  # another decomposition
    assert len(counted) == 3
    with torch.no_grad():
        block.attn1.to_v.weight[0, 0] += 1e-3  # one changed weight, in place
    changed = compute_directions(block, "attn1", "ov-left", k=5)
    assert len(counted) == 4 and not torch.equal(changed.vectors, first.vectors)
    block.attn1.to_out[0].weight = torch.nn.Parameter(block.attn1.to_out[0].weight * 2)  # a replaced weight
    compute_directions(block, "attn1", "ov-left", k=5)
    assert len(counted) == 5
    first.vectors.zero_()  # callers get copies: changing one does not change the cache
    assert compute_directions(Block(256, heads=4), "attn1", "ov-left", k=5).vectors.abs().sum() > 0


def test_disk_cache(counted, tmp_path, monkeypatch):
    block = Block(256, heads=4)
    cache.set_cache_dir(tmp_path / "cache")
    first = compute_directions(block, "attn1", "qkv", k=4)
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1 and len(counted) == 1
    cache.clear_memory()  # a new process: read from disk
    assert torch.equal(compute_directions(block, "attn1", "qkv", k=4).vectors, first.vectors)
    assert len(counted) == 1
    files[0].write_bytes(b"corrupt")
    cache.clear_memory()
    assert torch.equal(compute_directions(block, "attn1", "qkv", k=4).vectors, first.vectors)
    assert len(counted) == 2  # recomputed and rewritten
    cache.set_cache_dir(False)  # back to the environment variable
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    assert cache.cache_dir() == tmp_path / "env"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() is None
    cache.set_cache_dir(True)
    assert cache.cache_dir() == cache.default_cache_dir()
    assert cache.default_cache_dir().name == "eigenedit"
