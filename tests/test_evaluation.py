import pytest
import torch

from eigenedit.core.sampling import noise_from_seeds
from eigenedit.data import shapes
from eigenedit.evaluation.baselines import PullbackRecipe, pullback_directions
from eigenedit.evaluation.evaluate import EvalConfig, run_evaluation, score_direction, split_seeds, summarize


def images_with(factors: dict, **changes) -> torch.Tensor:
    f = {k: v.clone() for k, v in factors.items()}
    for name, delta in changes.items():
        f[name] = (f[name] + delta) % 1.0 if name.endswith("hue") else f[name] + delta
    return shapes.render(f)


def base_factors(n: int = 64) -> dict:
    return shapes.sample_factors(n, torch.Generator().manual_seed(7))


def test_hue_only_direction_is_fully_concentrated():
    f = base_factors()
    score = score_direction(0, shapes.render(f), images_with(f, shape_hue=0.08), images_with(f, shape_hue=-0.08))
    assert score.dominant == "shape_hue" and score.label == "+shape_hue"
    assert score.concentration > 0.95 and score.monotonic
    assert abs(score.plus["shape_hue"] - 0.08 / (1 / 12**0.5)) < 0.03
    assert score.valid_rate == 1.0


def test_negative_label_and_mixed_direction():
    f = base_factors()
    score = score_direction(0, shapes.render(f), images_with(f, size=-0.02), images_with(f, size=0.02))
    assert score.label == "-size" and score.monotonic
    mixed = score_direction(
        0, shapes.render(f), images_with(f, size=0.02, x=0.065), images_with(f, size=-0.02, x=-0.065)
    )
    assert 0.4 < mixed.concentration < 0.65 and mixed.leakage > 0.1


def test_no_op_and_destructive_directions():
    f = base_factors()
    plain = shapes.render(f)
    still = score_direction(0, plain, plain, plain)
    assert still.label == "none" and still.effect == 0 and not still.monotonic
    noise = torch.randn(plain.shape, generator=torch.Generator().manual_seed(0))
    broken = score_direction(1, plain, plain + noise, plain - noise)
    assert broken.valid_rate < 0.05
    summary = summarize([still, broken])
    assert summary["monotonic"] == 0 and summary["factors_found"] == []


def test_pullback_matches_the_explicit_jacobian(tiny_model):
    x = noise_from_seeds(tiny_model, [0])[0]
    store = {}
    handle = tiny_model.unet.mid_block.register_forward_hook(lambda m, a, o: store.update(h=o))

    def h_of(inp):
        tiny_model.unet(inp[None], torch.tensor([500]))
        return store["h"].flatten()

    jac = torch.autograd.functional.jacobian(h_of, x).flatten(1)
    handle.remove()
    _, expected, vh = torch.linalg.svd(jac.double(), full_matrices=False)
    basis, sigmas, iterations = pullback_directions(tiny_model, x, 500, rank=2, max_iter=50)
    assert torch.allclose(sigmas, expected[:2].float(), rtol=2e-2)
    assert torch.allclose(basis.flatten(1).norm(dim=1), torch.ones(2), atol=1e-5)
    alignment = (basis.flatten(1).double() @ vh[:2].T).abs().diagonal()  # same vectors up to sign
    assert (alignment > 0.98).all(), alignment
    assert 10 < iterations <= 50  # Park et al.: more than min_iter = 10 iterations, at most max_iter


def test_x_space_guidance_follows_the_eps_difference(tiny_model):
    from eigenedit.evaluation.baselines import x_space_guidance

    x = noise_from_seeds(tiny_model, [0, 1])
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = x_space_guidance(tiny_model, x, 900, v, [0, 1, 2], step=1.0, scale=0.25)
    with torch.no_grad():
        eps = tiny_model.predict_eps(torch.cat([x, x + v]), 900)
    assert torch.equal(out[0], x)
    assert torch.allclose(out[1], x + 0.25 * (eps[2:] - eps[:2]), atol=1e-5)
    assert not torch.allclose(out[2], out[1])


def tiny_eval_config(**overrides) -> EvalConfig:
    defaults = dict(
        seeds=[100, 101],
        selection_seeds=[0, 1],
        k=2,
        num_steps=3,
        pca_samples=4,
        pca_steps=2,
        pullback=PullbackRecipe(rank=2, max_iter=2, min_iter=1),
        layers=("mid_block.attentions.0",),
        timing_repeats=1,
    )
    return EvalConfig(**{**defaults, **overrides})


def test_tiny_evaluation_runs_every_method(tiny_model):
    result = run_evaluation(tiny_model, tiny_eval_config(), progress=False)
    methods = result["methods"]
    assert {"random", "pca-h", "pullback", "qk mid_block.attentions.0", "ov-left mid_block.attentions.0 head1"} <= set(
        methods
    )
    assert methods["timing"]["edit_over_plain"] > 0
    assert all(len(m["directions"]) == 2 for name, m in methods.items() if name != "timing")
    assert result["seeds"] == {"selection": [0, 1], "test": [100, 101]} and result["probe"] is None
    summary = methods["qk mid_block.attentions.0"]["summary"]
    assert {"effect_over_random", "mean_linearity", "mean_consistency", "mean_ssim", "consistent_edits"} <= set(summary)
    assert methods["random"]["summary"]["effect_over_random"] == pytest.approx(1.0)
    # the attention methods and the control are also measured on the selection seeds (which choose); baselines not
    assert "selection_summary" in methods["qk mid_block.attentions.0"] and "selection_summary" not in methods["pca-h"]


def test_overlapping_seeds_are_refused(tiny_model):
    with pytest.raises(ValueError, match="overlap"):
        run_evaluation(tiny_model, tiny_eval_config(selection_seeds=[0, 100]), progress=False)


def test_seed_split_is_disjoint():
    selection, test = split_seeds(list(range(1000, 1064)), None, None)
    assert selection == list(range(1000, 1016)) and test == list(range(1016, 1064))
    assert split_seeds(None, [0, 1, 2], [1000, 1001]) == ([0, 1, 2], [1000, 1001])
    assert split_seeds([5, 6, 7, 8], [5, 6], None) == ([5, 6], [7, 8])
    assert split_seeds([5, 6, 7, 8], None, [8, 7]) == ([5, 6], [8, 7])
    with pytest.raises(ValueError, match="overlap"):
        split_seeds(None, [0, 1, 2], [2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        split_seeds([0, 1, 2], None, None)
    with pytest.raises(ValueError, match="not all three"):
        split_seeds([0, 1], [2, 3], [4, 5])


def test_report_from_a_tiny_evaluation_at_two_locations(tiny_model, tmp_path):
    from eigenedit.evaluation.evaluate import evaluate_locations
    from eigenedit.evaluation.report import best_attention_method, markdown, method_rows, write_report

    cfg = tiny_eval_config(num_steps=2, per_head=False)
    runs = evaluate_locations(tiny_model, cfg, ["mid_block", "mid_block.attentions.0"], progress=False)
    assert [r["config"]["location"] for r in runs] == ["mid_block", "mid_block.attentions.0"]
    assert "pullback" in runs[0]["methods"] and "pullback" not in runs[1]["methods"]
    paths = write_report(runs, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    table = markdown(runs)
    assert "| random | mid_block |" in table and "| random | mid_block.attentions.0 |" in table
    assert "time saved" in table and "Pullback (Park et al. 2023" in table
    assert len(method_rows(runs)) == sum(len(r["methods"]) - 1 for r in runs)
    assert best_attention_method(runs)["family"] == "attention"


def test_zeroing_sensitivity_is_zero_for_an_unused_module(tiny_model):
    from eigenedit.evaluation.evaluate import zeroing_sensitivity

    assert zeroing_sensitivity(tiny_model, [0], 3, "mid_block") > 0
    tiny_model.unet.register_module("unused", torch.nn.Identity())
    # a module the forward pass never calls: zeroing its output changes nothing
    assert zeroing_sensitivity(tiny_model, [0], 3, "unused") == 0
