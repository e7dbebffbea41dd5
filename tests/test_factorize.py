import pytest
import torch

from eigenedit.core.attention import AttentionWeights
from eigenedit.core.factorize import DECOMPOSITIONS, factorize, fix_signs, random_directions


def orthogonal(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def weights(q, k, v, o, heads=1) -> AttentionWeights:
    return AttentionWeights("hand", q, k, v, o, heads)


def same_direction(a: torch.Tensor, b: torch.Tensor) -> bool:
    return abs(abs(float(a @ b)) - 1) < 1e-8


def test_qk_recovers_known_eigenvectors():
    c = 6
    basis = orthogonal(c, 0)
    eig = torch.tensor([5.0, -4.0, 3.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    # W_q^T W_k * d^-1/2 = B diag(eig) B^T with W_q = I, W_k = sqrt(d) B diag B^T
    k = basis @ torch.diag(eig) @ basis.T * c**0.5
    values, vectors = factorize(weights(torch.eye(c, dtype=torch.float64), k, k, k), "qk")
    assert torch.allclose(values, eig, atol=1e-9)  # sorted by |value|, signs kept
    for i in range(c):
        assert same_direction(vectors[i], basis[:, i])


def test_qk_uses_symmetric_part_only():
    c = 5
    sym = torch.diag(torch.arange(1.0, c + 1, dtype=torch.float64))
    skew = torch.triu(torch.ones(c, c, dtype=torch.float64), 1)
    skew = skew - skew.T
    q = torch.eye(c, dtype=torch.float64)
    v1, _ = factorize(weights(q, (sym + skew) * c**0.5, q, q), "qk")
    v2, _ = factorize(weights(q, sym * c**0.5, q, q), "qk")
    assert torch.allclose(v1, v2)


def test_ov_left_and_right_singular_vectors():
    c = 6
    u, v = orthogonal(c, 1), orthogonal(c, 2)
    s = torch.tensor([6.0, 5, 4, 3, 2, 1], dtype=torch.float64)
    o = u @ torch.diag(s)
    wv = v.T  # W_o W_v = U S V^T
    eye = torch.eye(c, dtype=torch.float64)
    values, left = factorize(weights(eye, eye, wv, o), "ov-left")
    _, right = factorize(weights(eye, eye, wv, o), "ov-right")
    assert torch.allclose(values, s)
    for i in range(c):
        assert same_direction(left[i], u[:, i])
        assert same_direction(right[i], v[:, i])


def test_qkv_is_sefa_on_stacked_projections():
    c = 4
    a = torch.randn(9, c, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    values, vectors = factorize(weights(a[:3], a[3:6], a[6:], torch.eye(c, dtype=torch.float64)), "qkv")
    a = a / a.norm(dim=1, keepdim=True)  # SeFa scales every output unit's weights (row of A) to unit norm first
    expected = torch.linalg.svdvals(a) ** 2
    assert torch.allclose(values, expected)
    assert torch.allclose(vectors @ (a.T @ a) @ vectors.T, torch.diag(expected), atol=1e-9)


def test_rank_truncation_drops_null_space():
    c, d = 8, 2
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(d, c, generator=g, dtype=torch.float64) for _ in range(3))
    o = torch.randn(c, d, generator=g, dtype=torch.float64)
    assert len(factorize(weights(q, k, v, o), "ov-left")[0]) == d
    assert len(factorize(weights(q, k, v, o), "qk")[0]) == 2 * d
    assert len(factorize(weights(q, k, v, o), "qkv")[0]) == min(3 * d, c)


def test_per_head_matches_a_layer_built_from_that_head_alone():
    c, heads, d = 8, 2, 4
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(heads * d, c, generator=g, dtype=torch.float64) for _ in range(3))
    o = torch.randn(c, heads * d, generator=g, dtype=torch.float64)
    full = weights(q, k, v, o, heads=heads)
    for decomposition in DECOMPOSITIONS:
        vals, vecs = factorize(full, decomposition, head=1)
        alone = weights(q[d:], k[d:], v[d:], o[:, d:])
        vals2, vecs2 = factorize(alone, decomposition)
        assert torch.allclose(vals, vals2) and torch.allclose(vecs, vecs2)
    with pytest.raises(ValueError, match="head 2 out of range"):
        factorize(full, "qk", head=2)


def test_fixed_sign_convention_and_determinism():
    vec = torch.tensor([[0.1, -0.9, 0.2], [0.5, 0.1, -0.2]], dtype=torch.float64)
    fixed = fix_signs(vec)
    assert fixed[0, 1] > 0 and fixed[1, 0] > 0
    assert torch.equal(fix_signs(-vec), fixed)
    w = weights(*(torch.randn(4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64),) * 4)
    assert torch.equal(factorize(w, "qk")[1], factorize(w, "qk")[1])


def test_fold_norm_scales_the_input_side():
    c = 4
    gamma = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    w = AttentionWeights("hand", eye, eye, eye, eye, 1, norm_weight=gamma)
    values, vectors = factorize(w, "ov-right", fold_norm=True)
    assert torch.allclose(values, gamma.flip(0))
    assert same_direction(vectors[0], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))


def test_unknown_decomposition():
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown decomposition"):
        factorize(weights(eye, eye, eye, eye), "svd")


def test_random_directions_are_unit_and_seeded():
    a, b = random_directions(5, 16, seed=1), random_directions(5, 16, seed=1)
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("name", ["w_q", "w_k", "w_v", "w_o"])
def test_single_matrices_give_that_matrix_alone_its_singular_vectors(name):
    """Each matrix alone: known singular vectors planted in it and noise in the three others."""
    c = 6
    basis, out = orthogonal(c, 1), orthogonal(c, 2)
    sigma = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    planted = out @ torch.diag(sigma) @ basis.T  # right singular vectors: the columns of basis
    noise = [torch.randn(c, c, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(4)]
    mats = dict(zip(["w_q", "w_k", "w_v", "w_o"], noise, strict=True))
    mats[name] = planted.T if name == "w_o" else planted  # W_o writes: its left vectors are what it writes
    values, vectors = factorize(weights(mats["w_q"], mats["w_k"], mats["w_v"], mats["w_o"]), name)
    assert torch.allclose(values, sigma, atol=1e-9)
    for i in range(c):
        assert same_direction(vectors[i], basis[:, i])
