"""Fashion-MNIST data, attributes and probe classifier (skipped where the Debian dataset is not installed)."""

import pytest
import torch

from eigenedit.data import fashion
from eigenedit.training import TrainConfig, train

from .conftest import TINY_CONFIG

needs_data = pytest.mark.skipif(
    not fashion.available(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)


@needs_data
def test_load_pads_to_32_and_scales_to_unit_range():
    images, labels = fashion.load("test")
    assert images.shape == (10000, 1, 32, 32) and labels.shape == (10000,)
    assert images.min() == -1 and images.max() == 1
    assert (images[:, :, :2] == -1).all() and (images[:, :, :, -2:] == -1).all()  # the 2-px padding
    assert torch.bincount(labels).tolist() == [1000] * 10


@needs_data
def test_batches_are_deterministic_from_the_seed():
    a, la = fashion.make_batch(8, seed=3, split="test")
    b, lb = fashion.make_batch(8, seed=3, split="test")
    c, _ = fashion.make_batch(8, seed=4, split="test")
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split"):
        fashion.load("validation")


def test_attributes_of_a_drawn_rectangle():
    image = torch.full((1, 1, 32, 32), -1.0)
    image[0, 0, 4:20, 8:16] = 0.0  # 16 rows x 8 columns at intensity 0.5
    a = fashion.attributes(image)
    assert a["area"].item() == pytest.approx(16 * 8 / 1024)
    assert a["brightness"].item() == pytest.approx(0.5)
    assert a["width"].item() == pytest.approx(8 / 32) and a["height"].item() == pytest.approx(16 / 32)
    assert fashion.attributes(torch.full((1, 1, 32, 32), -1.0))["width"].item() == 0.0


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    model = fashion.FashionClassifier().eval()
    model.save_pretrained(tmp_path / "clf")
    loaded = fashion.FashionClassifier.from_pretrained(tmp_path / "clf")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loaded.features(x).shape == (2, 128)
    assert torch.allclose(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="no FashionClassifier"):
        fashion.FashionClassifier.from_pretrained(tmp_path / "missing")


@needs_data
def test_training_runs_on_fashion_mnist(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path / "fm"), dataset="fashion-mnist", max_steps=1, batch_size=2,
                      warmup_steps=1, num_threads=1, unet={**TINY_CONFIG, "sample_size": 32})  # fmt: skip
    assert cfg.unet["in_channels"] == cfg.unet["out_channels"] == 1
    assert (train(cfg) / "state.json").is_file()


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset"):
        TrainConfig(dataset="cifar")
