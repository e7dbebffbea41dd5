import torch

from eigenedit.data import shapes


def test_dataset_is_deterministic_from_seed():
    a, fa = shapes.make_batch(8, seed=3)
    b, fb = shapes.make_batch(8, seed=3)
    c, _ = shapes.make_batch(8, seed=4)
    assert torch.equal(a, b) and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not torch.equal(a, c)
    assert a.shape == (8, 3, 32, 32) and a.min() >= -1 and a.max() <= 1


def test_estimator_reads_back_ground_truth():
    images, f = shapes.make_batch(500, seed=11)
    est = shapes.estimate_factors(images)
    assert est.valid.float().mean() > 0.99
    assert (est.kind == f["kind"]).float().mean() > 0.98
    for name in ("size", "x", "y"):
        assert (getattr(est, name) - f[name]).abs().max() < 0.02, name
    for name in ("shape_hue", "bg_hue"):
        assert shapes.hue_difference(getattr(est, name), f[name]).abs().max() < 0.03, name


def test_estimator_rejects_images_without_one_clean_shape():
    images, _ = shapes.make_batch(200, seed=12)
    noisy = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert shapes.estimate_factors(noisy).valid.float().mean() < 0.05
    two = images.clone()
    two[:, :, :8, :8] = images.flip(0)[:, :, 12:20, 12:20]  # paste a piece of another image's shape
    assert shapes.estimate_factors(two).valid.float().mean() < 0.05
    flat = torch.zeros(4, 3, 32, 32)
    assert not shapes.estimate_factors(flat).valid.any()


def test_hue_round_trip_and_circular_difference():
    h = torch.linspace(0, 0.99, 50)
    rgb = shapes.hsv_to_rgb(h, 0.9, 0.9)
    assert shapes.hue_difference(shapes.rgb_to_hue(rgb), h).abs().max() < 1e-5
    assert torch.isclose(shapes.hue_difference(torch.tensor(0.05), torch.tensor(0.95)), torch.tensor(0.1))
