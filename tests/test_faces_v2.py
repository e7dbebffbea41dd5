"""Faces v2: deterministic, every attribute visible, a smile that is a large change of mouth shape, and the
stated correlations."""

import hashlib

import pytest
import torch

from eigenedit.data import faces, faces_v2


def attrs_of(n: int, seed: int = 0, **fixed: float) -> dict[str, torch.Tensor]:
    attrs = faces_v2.sample_attributes(n, torch.Generator().manual_seed(seed))
    for name, value in fixed.items():
        attrs[name] = torch.full_like(attrs[name], value)
    return attrs


def test_v2_is_deterministic_and_v1_is_untouched():
    a, fa = faces_v2.make_batch(6, seed=3)
    b, fb = faces_v2.make_batch(6, seed=3)
    assert torch.equal(a, b) and all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not torch.equal(a, faces_v2.make_batch(6, seed=4)[0])
    assert a.shape == (6, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    assert set(fa) == set(faces_v2.ATTRIBUTES) and "age" in fa
    # v1 renders exactly what it rendered before v2 existed (sha256 of seed 0's batch of 4, taken before v2)
    v1 = faces.make_batch(4, 0)[0]
    assert hashlib.sha256(v1.numpy().tobytes()).hexdigest()[:16] == V1_HASH


V1_HASH = "539a9bf9642db4c3"  # faces.make_batch(4, 0) at commit 5cf7e9a, before v2 existed


@pytest.mark.parametrize("name", faces_v2.ATTRIBUTES)
def test_every_attribute_changes_the_image(name):
    low = {"hair_style": 0, "glasses": 0.0, "beard": 0.0}.get(name, 0.1)
    high = {"hair_style": 2, "glasses": 1.0, "beard": 1.0}.get(name, 0.9)
    fixed = {"face_width": 0.8} if name == "beard" else {}
    a = faces_v2.render(attrs_of(4, **fixed, **{name: low}))
    b = faces_v2.render(attrs_of(4, **fixed, **{name: high}))
    assert (a - b).abs().mean((1, 2, 3)).min() > 0.002, name  # the smallest (brow angle) moves ~0.0026


def test_smile_is_a_large_local_change_of_the_mouth():
    """Frown to smile moves far more pixels than in v1, and only in the lower face."""
    base = attrs_of(8, glasses=0.0, beard=0.0, mouth_open=0.0)
    frown, smile = faces_v2.render({**base, "smile": torch.zeros(8)}), faces_v2.render({**base, "smile": torch.ones(8)})
    diff = (frown - smile).abs().mean(1)
    v1 = faces.sample_attributes(8, torch.Generator().manual_seed(0))
    v1 |= {"glasses": torch.zeros(8), "beard": torch.zeros(8), "mouth_open": torch.zeros(8)}
    v1_diff = (faces.render({**v1, "smile": torch.zeros(8)}) - faces.render({**v1, "smile": torch.ones(8)})).abs()
    assert diff.mean() > 2.5 * v1_diff.mean()
    assert diff[:, 32:].sum() > 0.9 * diff.sum() and diff[:, :10].max() == 0
    changed_columns = (diff.amax(1) > 0.2).float().sum(1)
    assert changed_columns.min() >= 16  # the mouth is at least a quarter of the image wide


def test_stated_correlations():
    attrs = faces_v2.sample_attributes(4000, torch.Generator().manual_seed(1))
    corr = torch.corrcoef(torch.stack([attrs["hair_color"], attrs["age"]]))[0, 1]
    assert 0.45 < corr < 0.65
    beard = attrs["beard"].bool()
    assert (attrs["face_width"][beard] > faces_v2.BEARD_MIN_FACE_WIDTH).all()
    assert 0.25 < beard.float().mean() < 0.35
    assert 0.25 < attrs["glasses"].mean() < 0.35
    assert torch.corrcoef(torch.stack([attrs["smile"], attrs["age"]]))[0, 1].abs() < 0.05


def test_training_recipe_knows_faces2():
    from eigenedit.training import TrainConfig
    from eigenedit.training.recipe import faces_unet_config, make_batch

    cfg = TrainConfig(dataset="faces2", batch_size=2)
    assert cfg.unet["sample_size"] == faces_unet_config()["sample_size"] == 64
    assert torch.equal(make_batch(cfg, 5), faces_v2.make_batch(2, 5)[0])


def test_probe_v2_reads_age():
    model, scores = faces.train_probe(steps=20, batch_size=16, progress=False, version=2)
    assert "age_r2" in scores and model.config["version"] == 2
    pred = model.predict(faces_v2.make_batch(3, 5)[0])
    assert set(pred) == set(faces_v2.ATTRIBUTES)
    with pytest.raises(ValueError, match="version"):
        faces.FaceProbe(version=3)
