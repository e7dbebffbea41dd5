import pytest
import torch

from eigenedit.evaluation.metrics import frechet_distance, ssim


def test_ssim_of_an_image_with_itself_is_one():
    a = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(3), atol=1e-6)


def test_ssim_of_flat_images_is_the_luminance_term():
    # flat images have zero variance: SSIM reduces to (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    m1, m2, c1 = 0.2, 0.7, 0.01**2
    a, b = torch.full((1, 1, 16, 16), m1 * 2 - 1), torch.full((1, 1, 16, 16), m2 * 2 - 1)
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_falls_with_noise_and_is_symmetric():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    light = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    heavy = (a + 0.5 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    assert (ssim(a, heavy) < ssim(a, light)).all() and (ssim(a, light) < 1).all()
    assert torch.allclose(ssim(a, heavy), ssim(heavy, a))


def test_ssim_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 15))


def test_frechet_distance_of_known_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 4, generator=g)
    y = torch.randn(20000, 4, generator=g)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(mu, I): ||mu||^2 = 4;  N(0, I) vs N(0, 4 I): D (1 - 2)^2 = 4
    assert frechet_distance(x, y + 1) == pytest.approx(4.0, abs=0.15)
    assert frechet_distance(x, 2 * y) == pytest.approx(4.0, abs=0.3)
