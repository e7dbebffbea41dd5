import pytest
import torch

from eigenedit.core import operators, sampling
from eigenedit.core.directions import compute_directions


def dirs_for(model, k=3):
    return compute_directions(model.unet, decomposition="qk").top(k)


def test_alpha_zero_is_bit_identical_to_plain_sampling(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [0, 1])
    plain = sampling.sample(tiny_model, x, 8)
    zero = sampling.edit_images(tiny_model, x, sampling.Edit(dirs_for(tiny_model), torch.zeros(2, 3), t_edit=0), 8)
    assert torch.equal(plain, zero)


def test_asymmetric_alpha_zero_matches_plain(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [3])
    plain = sampling.sample(tiny_model, x, 8)
    zero = sampling.edit_images(
        tiny_model, x, sampling.Edit(dirs_for(tiny_model), torch.zeros(1, 3), t_edit=0, asymmetric=True), 8
    )
    assert torch.allclose(plain, zero, atol=1e-5)


def test_edit_changes_output_and_respects_t_edit(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [0])
    d = dirs_for(tiny_model, 1)
    plain = sampling.sample(tiny_model, x, 8)
    edited = sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[2.0]]), t_edit=0), 8)
    assert (edited - plain).abs().max() > 1e-3
    never = sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[2.0]]), t_edit=1000), 8)
    assert torch.equal(never, plain)


def test_hook_is_removed_after_sampling_and_after_an_error(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [0])
    mid = tiny_model.unet.mid_block
    sampling.edit_images(tiny_model, x, sampling.Edit(dirs_for(tiny_model, 1), torch.tensor([[1.0]]), t_edit=0), 4)
    assert len(mid._forward_hooks) == 0

    def boom(*args):
        raise RuntimeError("boom")

    handle = tiny_model.unet.conv_out.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            sampling.edit_images(
                tiny_model, x, sampling.Edit(dirs_for(tiny_model, 1), torch.tensor([[1.0]]), t_edit=0), 4
            )
    finally:
        handle.remove()
    assert len(mid._forward_hooks) == 0


def test_shift_is_relative_to_the_norm_of_h():
    h = torch.randn(2, 4, 3, 3)
    n = torch.zeros(1, 4)
    n[0, 1] = 1.0
    out = operators.shift_hidden(h, n, torch.tensor([[0.5], [2.0]]))
    delta = out - h
    for b, alpha in enumerate([0.5, 2.0]):
        assert torch.allclose(delta[b].norm(), alpha * h[b].norm(), rtol=1e-5)
        assert torch.allclose(delta[b, [0, 2, 3]], torch.zeros(3, 3, 3))


def test_composition_is_the_sum_of_directions():
    h = torch.randn(1, 4, 2, 2)
    v = torch.eye(4)[:2]
    both = operators.shift_hidden(h, v, torch.tensor([[1.0, -0.5]]))
    separate = operators.shift_hidden(h, v[:1], torch.tensor([[1.0]])) + operators.shift_hidden(
        h, v[1:], torch.tensor([[-0.5]])
    )
    assert torch.allclose(both - h, separate - 2 * h, atol=1e-6)


def test_composed_edit_differs_from_each_part(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [1])
    d = dirs_for(tiny_model, 2)
    a = sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[2.0, 0.0]]), t_edit=0), 6)
    b = sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[0.0, 2.0]]), t_edit=0), 6)
    ab = sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[2.0, 2.0]]), t_edit=0), 6)
    assert (ab - a).abs().max() > 1e-4 and (ab - b).abs().max() > 1e-4


def test_batched_sweep_equals_one_by_one(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [5])
    d = dirs_for(tiny_model, 2)
    alphas = sampling.sweep_alphas(2, [-1.0, 1.0])
    assert alphas.tolist() == [[-1, 0], [1, 0], [0, -1], [0, 1]]
    batch = sampling.edit_images(
        tiny_model, x.expand(4, -1, -1, -1), sampling.Edit(d, alphas, t_edit=0), 6, batch_size=3
    )
    for i in range(4):
        single = sampling.edit_images(tiny_model, x, sampling.Edit(d, alphas[i : i + 1], t_edit=0), 6)
        assert torch.allclose(batch[i], single[0], atol=1e-4)  # batched convs round differently


def test_bad_alphas_and_locations(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [0])
    d = dirs_for(tiny_model, 1)
    with pytest.raises(ValueError, match="finite"):
        sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[float("nan")]])), 2)
    with pytest.raises(ValueError, match="unknown edit location"):
        sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[1.0]]), location="nowhere"), 2)
    with pytest.raises(ValueError, match="alphas must be"):
        sampling.edit_images(tiny_model, x, sampling.Edit(d, torch.tensor([[1.0, 2.0]])), 2)


def test_edit_at_the_attention_layer(tiny_model):
    x = sampling.noise_from_seeds(tiny_model, [0])
    d = dirs_for(tiny_model, 1)
    plain = sampling.sample(tiny_model, x, 4)
    edited = sampling.edit_images(
        tiny_model, x, sampling.Edit(d, torch.tensor([[1.0]]), t_edit=0, location="mid_block.attentions.0"), 4
    )
    assert (edited - plain).abs().max() > 1e-4


def test_noise_is_deterministic_per_seed(tiny_model):
    a = sampling.noise_from_seeds(tiny_model, [1, 2])
    b = sampling.noise_from_seeds(tiny_model, [2])
    assert torch.equal(a[1], b[0])


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_sample_like_diffusers(tmp_path, prediction_type):
    """Our epsilon-based DDIM on a v/x0-predicting UNet equals diffusers' own DDIM for that prediction type."""
    from diffusers import DDIMScheduler

    from eigenedit.models import DiffusionModel, load_model

    from .conftest import tiny_unet

    unet = tiny_unet()
    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    DiffusionModel(unet, sched, "tiny", prediction_type).save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert model.prediction_type == prediction_type
    x = sampling.noise_from_seeds(model, [0, 1])
    ours = sampling.sample(model, x, 6)
    sched.set_timesteps(6)
    ref = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
    assert torch.allclose(ours, ref.clamp(-1, 1), atol=1e-4)
