"""The strict protocol: its statistics on known inputs, a planted precise edit it must find, random "weight"
directions it must not call precise, and one end-to-end quick run on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eigenedit.evaluation import protocol, protocol_run
from eigenedit.evaluation.metrics import pixel_change
from eigenedit.evaluation.probes import Probe

ATTRS = ("a", "b", "c", "d", "e", "brightness")
TARGETS = ATTRS[:-1]


def simulate(loadings: dict[str, float], seeds: int, noise: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Change series (5, seeds): each attribute moves by loading x strength plus per-seed noise (0 at strength 0)."""
    s = np.asarray(protocol.STRENGTHS)[:, None]
    out = {}
    for name in ATTRS:
        d = loadings.get(name, 0.0) * s + noise * rng.standard_normal((5, seeds))
        d[2] = 0.0
        out[name] = d
    return out


def random_loadings(rng: np.random.Generator) -> dict[str, float]:
    """A random direction: moves every attribute a little, brightness included."""
    return {name: 0.4 * rng.standard_normal() for name in ATTRS}


PLANTED = {"c": 1.0, "a": 0.05, "brightness": 0.05}


def run_family(weight_loadings: list[dict], rng: np.random.Generator, n_random: int = 64, seeds: int = 32) -> dict:
    """Select the best weight candidate on selection seeds, then judge it on two test blocks beside random ones."""
    random_dirs = [random_loadings(rng) for _ in range(n_random)]
    r_sel = [protocol.best_attribute(simulate(w, 12, 0.3, rng), TARGETS) for w in random_dirs]
    selections = [protocol.best_attribute(simulate(w, 12, 0.3, rng), TARGETS) for w in weight_loadings]
    best = int(np.argmax([s["score"] for s in selections]))
    sel = selections[best]
    blocks = []
    for b in range(2):
        r_test = [simulate(w, seeds, 0.3, rng) for w in random_dirs]
        own = simulate(weight_loadings[best], seeds, 0.3, rng)
        blocks.append(protocol.judge_block(own, sel["attribute"], sel["sign"], r_test, r_sel, len(weight_loadings),
                                           seed=b))  # fmt: skip
    return {"best": best, "selection": sel, "blocks": blocks, "precise": protocol.is_precise(blocks)}


def test_planted_precise_edit_is_found_in_both_blocks():
    rng = np.random.default_rng(0)
    candidates = [random_loadings(rng) for _ in range(5)] + [PLANTED]
    out = run_family(candidates, rng, n_random=128)
    assert out["best"] == 5 and out["selection"]["attribute"] == "c"
    for block in out["blocks"]:
        assert block["p_value"] < 0.01, block
        assert block["rho"] >= 0.8 and block["off_target_ratio"] >= 2
        assert block["rho_ci"][0] > block["random_abs_rho_p95"]
    assert out["precise"]


def test_random_weight_directions_are_rarely_significant():
    """False positives: 'weight' directions that are random draws; p < 0.05 in at most 10% of 48 block tests, and
    never precise in both blocks more than twice in 24 repeats."""
    rng = np.random.default_rng(1)
    hits, precise = 0, 0
    for _ in range(24):
        out = run_family([random_loadings(rng) for _ in range(6)], rng, n_random=48, seeds=24)
        hits += sum(b["p_value"] < protocol.MAX_P for b in out["blocks"])
        precise += out["precise"]
    assert hits / 48 <= 0.10, hits
    assert precise <= 2


def test_brightness_edit_is_not_precise():
    """An edit that moves its target through brightness, with the other attributes along, fails off-target."""
    rng = np.random.default_rng(2)
    loadings = {"c": 1.0, "brightness": 1.0, "a": 0.8, "b": -0.7}
    row = protocol.attribute_row(simulate(loadings, 32, 0.1, rng), "c", 1.0)
    assert row["rho"] > 0.9 and row["off_target_ratio"] < 2 and row["brightness_share"] > 0.8


def test_bootstrap_and_percentiles_on_known_inputs():
    assert protocol.bootstrap_ci(np.full(10, 0.7)) == pytest.approx([0.7, 0.7])
    values = np.random.default_rng(3).standard_normal(400)
    lo, hi = protocol.bootstrap_ci(values)
    half = 1.96 / np.sqrt(400)
    assert lo < values.mean() < hi and abs((hi - lo) / 2 - half) < 0.2 * half
    assert protocol.percentile_of(5.0, range(10)) == pytest.approx(55.0)
    assert protocol.percentile_of(100.0, range(10)) == 100.0 and protocol.percentile_of(-1.0, range(10)) == 0.0
    assert protocol.spearman(np.arange(5), np.arange(5) ** 3) == pytest.approx(1.0)
    assert protocol.spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
    assert protocol.best_of_m_p_value(10.0, [0, 1, 2], [0, 1, 2], 2) == pytest.approx(1 / 4001)
    assert protocol.best_of_m_p_value(-1.0, [0, 1, 2], [0, 1, 2], 2) == 1.0


def test_pixel_change_is_on_the_unit_scale():
    a = torch.full((2, 3, 4, 4), -1.0)
    assert pixel_change(a, a) == 0.0
    assert pixel_change(a, -a) == pytest.approx(1.0)
    assert pixel_change(a, a + 0.2) == pytest.approx(0.1)
    assert pixel_change(a, torch.full_like(a, float("nan"))) == 1.0


def _tiny_probe() -> Probe:
    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        w = torch.linspace(-1, 1, images.shape[-1])
        mass = (images[:, 0] + 1).clamp_min(1e-6)
        return {
            "red_x": (mass * w).sum((1, 2)) / mass.sum((1, 2)),
            "contrast": images.std((1, 2, 3)),
            "kind": (images[:, 1].mean((1, 2)) > 0).float(),
        }

    return Probe("tiny", read, {"red_x": "px", "contrast": "value", "kind": "class"},
                 categorical=frozenset({"kind"}))  # fmt: skip


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    from diffusers import DDIMScheduler

    from eigenedit.models import DiffusionModel
    from tests.conftest import tiny_unet

    model = DiffusionModel(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), "tiny")
    plan = protocol_run.plan_for("tiny", quick=True)
    result = protocol_run.run(plan, probe=_tiny_probe(), model=model, progress=False)
    out = tmp_path_factory.mktemp("protocol")
    return result, protocol_run.write(result, out)


def test_quick_run_writes_the_output_contract(quick_result):
    result, paths = quick_result
    saved = json.loads(paths[0].read_text())
    for key in ("model", "selection_seeds", "calibration_seeds", "command", "test_blocks", "random_per_row", "rows",
                "ceiling", "alignment", "timing", "screen"):  # fmt: skip
        assert key in saved, key
    blocks = [set(b) for b in saved["test_blocks"]]
    assert len(blocks) >= 2 and not blocks[0] & blocks[1]
    assert not (blocks[0] | blocks[1]) & set(saved["selection_seeds"] + saved["calibration_seeds"])
    assert saved["rows"], "the quick run must give at least one fully treated weight row"
    for row in saved["rows"] + saved["ceiling"]:
        for key in ("source", "operator", "layer", "location", "attribute", "precise"):
            assert key in row
        for b in row["blocks"]:
            for key in ("rho", "rho_ci", "agree", "reached_change", "percentile_vs_random", "p_value",
                        "off_target_ratio", "brightness_share"):  # fmt: skip
                assert key in b, key
            assert b["attribute"] in ("red_x", "contrast")  # never a nuisance read or a categorical one
    assert all(r["source"] == "supervised" for r in saved["ceiling"])
    assert "kind" in saved["rows"][0]["blocks"][0]["flips"]
    assert paths[1].read_text().startswith("# Strict protocol") and paths[2].stat().st_size > 0


def test_quick_run_is_deterministic(quick_result):
    from diffusers import DDIMScheduler

    from eigenedit.models import DiffusionModel
    from tests.conftest import tiny_unet

    result, _ = quick_result
    model = DiffusionModel(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), "tiny")
    plan = protocol_run.plan_for("tiny", quick=True)
    plan.groups = plan.groups[:1]
    again = protocol_run.run(plan, probe=_tiny_probe(), model=model, progress=False)
    first = [r for r in result["screen"] if r["operator"] == plan.groups[0][0]][0]
    assert again["screen"][0]["rows"] == first["rows"]


def test_windows_single_matrices_and_no_colour_sources_run_through_the_protocol():
    """A group with its own edit window, and sources beyond the four products, reach the full treatment."""
    from dataclasses import replace

    from diffusers import DDIMScheduler

    from eigenedit.models import DiffusionModel
    from tests.conftest import tiny_unet

    model = DiffusionModel(tiny_unet(), DDIMScheduler(num_train_timesteps=1000), "tiny")
    quick = protocol_run.plan_for("tiny", quick=True)
    layer, location = quick.groups[0][1], quick.groups[0][2]
    plan = replace(quick, groups=[("shift", layer, location, 0, 0.05)], sources=("w_v", "ov-left:no-colour"),
                   full_groups=1, full_rows=2)  # fmt: skip
    result = protocol_run.run(plan, probe=_tiny_probe(), model=model, progress=False)
    group = result["screen"][0]
    assert (group["t_edit"], group["target_change"]) == (0, 0.05)
    assert {r["source"] for r in group["rows"]} == {"w_v", "ov-left:no-colour"}
    assert result["rows"] and all(r["t_edit"] == 0 and r["target_change"] == 0.05 for r in result["rows"])
    assert "(t_edit 0, change 0.05)" in protocol_run.markdown(result)
    assert protocol_run.defaults_from(result, result["rows"][0])["t_edit"] == 0


def test_ridge_strength_is_chosen_by_cross_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 40, generator=g, dtype=torch.float64)
    clean = x[:, 0] * 2.0
    noise = torch.randn(96, generator=g, dtype=torch.float64)
    assert protocol_run._cv_strength(x, clean) == min(protocol_run.RIDGE_STRENGTHS)  # no noise: no shrinkage
    assert protocol_run._cv_strength(x, noise) >= 1.0  # pure noise: shrink hard


def test_no_colour_directions_are_orthogonal_to_the_colour_axes(tiny_model):
    from eigenedit.core.colour_axes import colour_axes, without_colour
    from eigenedit.core.directions import compute_directions

    layer = tiny_model.attention_layers()[0].name
    location = layer  # the attention layer's own output has the layer's channels
    axes = colour_axes(tiny_model, location, 4, 0)
    assert axes.shape[0] == tiny_model.sample_shape[0] and torch.allclose(axes.norm(dim=1), torch.ones(len(axes)))
    assert torch.equal(axes, colour_axes(tiny_model, location, 4, 0))  # deterministic
    dirs = compute_directions(tiny_model.unet, layer, "ov-left", k=3)
    out = without_colour(dirs, axes)
    assert (out.vectors @ axes.T).abs().max() < 1e-5
    assert torch.allclose(out.vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(out.vectors, dirs.vectors)  # something was taken out
