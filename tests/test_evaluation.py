import torch

from eigenedit.core.sampling import noise_from_seeds
from eigenedit.data import shapes
from eigenedit.evaluation.baselines import pullback_directions
from eigenedit.evaluation.evaluate import EvalConfig, run_evaluation, score_direction, summarize


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
    expected = torch.linalg.svdvals(jac)[:2]
    basis, sigmas = pullback_directions(tiny_model, x, 500, rank=2, iterations=30)
    assert torch.allclose(sigmas, expected, rtol=2e-2)
    assert torch.allclose(basis.flatten(1).norm(dim=1), torch.ones(2), atol=1e-5)


def tiny_eval_config(**overrides) -> EvalConfig:
    defaults = dict(
        seeds=2,
        k=2,
        num_steps=3,
        pca_samples=4,
        pca_steps=2,
        pullback_rank=2,
        pullback_iterations=1,
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
    assert "time saved vs pullback" in table
    assert len(method_rows(runs)) == sum(len(r["methods"]) - 1 for r in runs)
    assert best_attention_method(runs)["family"] == "attention"


def test_zeroing_sensitivity_is_zero_for_an_unused_module(tiny_model):
    from eigenedit.evaluation.evaluate import zeroing_sensitivity

    assert zeroing_sensitivity(tiny_model, [0], 3, "mid_block") > 0
    tiny_model.unet.register_module("unused", torch.nn.Identity())
    # a module the forward pass never calls: zeroing its output changes nothing
    assert zeroing_sensitivity(tiny_model, [0], 3, "unused") == 0
