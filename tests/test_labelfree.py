"""Label-free metrics on constructed cases whose answer is known."""

import pytest
import torch

from eigenedit.evaluation import labelfree

STRENGTHS = (-1.0, -0.5, 0.5, 1.0)


def images(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_a_perfectly_linear_edit_has_r2_one_and_a_symmetric_one_zero():
    plain = images()
    change = torch.randn(plain.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    linear = {a: plain + a * change for a in STRENGTHS}
    assert torch.allclose(labelfree.linearity_r2(plain, linear), torch.ones(len(plain)), atol=1e-6)
    even = {a: plain + a * a * change for a in STRENGTHS}  # +alpha and -alpha do the same thing
    assert labelfree.linearity_r2(plain, even).abs().max() < 1e-6
    noisy = {a: plain + a * change + 0.05 * torch.randn(plain.shape) for a in STRENGTHS}
    assert 0.2 < float(labelfree.linearity_r2(plain, noisy).mean()) < 0.9


def test_random_noise_edits_are_inconsistent_and_a_shared_change_is_consistent():
    plain = images()
    noise = torch.randn(plain.shape, generator=torch.Generator().manual_seed(2))
    assert abs(labelfree.consistency(plain, plain + 0.1 * noise)) < 0.05
    shared = torch.randn(1, *plain.shape[1:], generator=torch.Generator().manual_seed(3))
    assert labelfree.consistency(plain, plain + 0.1 * shared) == pytest.approx(1.0, abs=1e-6)
    assert labelfree.consistency(plain, plain - 0.1 * shared + 0.01 * noise) > 0.9
    with pytest.raises(ValueError, match="2 seeds"):
        labelfree.consistency(plain[:1], plain[:1] + 0.1)


def test_identical_images_give_ssim_one_and_no_effect():
    plain = images(8)
    score = labelfree.score(plain, {a: plain.clone() for a in STRENGTHS}, features=lambda x: x.flatten(1)[:, :4])
    assert score.ssim == pytest.approx(1.0, abs=1e-6)
    assert score.pixel_change == 0 and score.linearity == 0 and score.consistency == 0
    assert score.fd == pytest.approx(0.0, abs=1e-6)
    assert not labelfree.is_consistent_edit(score, random_pixel_change=0.01)


def test_consistent_edit_needs_effect_consistency_and_linearity():
    plain = images(16)
    shared = torch.randn(1, *plain.shape[1:], generator=torch.Generator().manual_seed(4)) * 0.1
    score = labelfree.score(plain, {a: plain + a * shared for a in STRENGTHS})
    assert score.linearity == pytest.approx(1.0, abs=1e-5) and score.consistency > 0.99
    assert score.ssim < 1.0
    assert labelfree.is_consistent_edit(score, random_pixel_change=score.pixel_change / 2)
    assert not labelfree.is_consistent_edit(score, random_pixel_change=score.pixel_change * 2)
