"""The web UI's logic, without a browser: EditorState (renders, caches, files) and the gradio callbacks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from eigenedit.apps.cli import main
from eigenedit.apps.ui import N_SLIDERS, EditorState, View, prepare_image, view_from
from eigenedit.core import sampling
from eigenedit.core.directions import Directions
from eigenedit.evaluation.metrics import psnr
from eigenedit.imaging import load_image, to_uint8

STEPS = 3  # few DDIM steps: these tests check plumbing, not image quality
VIEW = View(model="shapes32", steps=STEPS)


@pytest.fixture
def state(shapes_model, tmp_path) -> EditorState:
    """An EditorState that loads the session's shapes model (no disk reads per test)."""
    return EditorState(loader=lambda name: shapes_model if name == "shapes32" else _fail(name), workdir=tmp_path)


def _fail(name: str):
    raise ValueError(f"unknown model {name!r}")


def test_alpha_zero_is_the_unedited_image(state, shapes_model):
    preview = state.render(VIEW, [0.0] * N_SLIDERS)
    expected = sampling.sample(shapes_model, sampling.noise_from_seeds(shapes_model, [0]), STEPS)
    assert torch.equal(preview.plain, expected)
    assert torch.equal(preview.edited, expected)


def test_a_slider_changes_only_the_edited_image(state):
    plain = state.render(VIEW, [0.0] * N_SLIDERS)
    moved = state.render(VIEW, [0.0, 4.0, 0.0, 0.0, 0.0])
    assert torch.equal(moved.plain, plain.plain)
    assert (moved.edited - moved.plain).abs().mean() > 1e-3
    other = state.render(VIEW, [0.0, -4.0, 0.0, 0.0, 0.0])
    assert not torch.equal(other.edited, moved.edited)


def test_cache_hits_do_not_recompute(state):
    state.render(VIEW, [1.0, 0, 0, 0, 0])
    first = dict(state.misses)
    state.render(VIEW, [2.0, 0, 0, 0, 0])
    state.render(VIEW, [0.0, 3.0, 0, 0, 0])
    for kind in ("model", "directions", "plain", "location"):
        assert state.misses[kind] == first[kind] == 1, kind
    assert state.misses["edit"] == 3
    state.render(View(model="shapes32", steps=STEPS, decomposition="qkv"), [1.0])  # not the model's default
    assert state.misses["directions"] == 2 and state.misses["plain"] == 1  # same seed and steps


def test_an_upload_is_inverted_once(state, shapes_model):
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    first = state.render(VIEW, [0.0] * N_SLIDERS, image)
    again = state.render(VIEW, [2.0, 0, 0, 0, 0], image.copy())
    assert state.misses["inversion"] == 1
    assert torch.equal(again.plain, first.plain) and not torch.equal(again.edited, first.edited)
    assert "resized from 50x40 to 32x32" in first.note and "reconstruction PSNR" in first.note
    pixels, _ = prepare_image(image, shapes_model.sample_shape)
    x_t = sampling.invert(shapes_model, pixels, STEPS)
    assert torch.equal(first.plain, sampling.sample(shapes_model, x_t, STEPS))  # edits start from the inversion
    state.render(View(model="shapes32", steps=STEPS + 1), [0.0], image)
    assert state.misses["inversion"] == 2  # inversion depends on the step count


def test_a_generated_image_reconstructs_from_its_inversion(state):
    generated = to_uint8(state.render(VIEW, [0.0]).plain)[0]
    again = state.render(VIEW, [0.0], generated)
    assert psnr(again.plain, torch.from_numpy(generated).permute(2, 0, 1)[None] / 127.5 - 1) > 18


def test_prepare_image_keeps_a_right_sized_image():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255
    tensor, note = prepare_image(image, (3, 32, 32))
    assert note == "" and tensor.shape == (1, 3, 32, 32)
    assert tensor[0, :, :, :16].eq(1).all() and tensor[0, :, :, 16:].eq(-1).all()
    gray, _ = prepare_image(Image.fromarray(image), (1, 32, 32))
    assert gray.shape == (1, 1, 32, 32)


def test_directions_table_and_sliders(state):
    table = state.table(VIEW)
    assert [row[0] for row in table] == list(range(len(table)))
    values = [abs(row[1]) for row in table]
    assert values == sorted(values, reverse=True)
    labels = state.slider_labels(View(model="shapes32", first=2))
    assert len(labels) == N_SLIDERS and labels[0].startswith("direction 2 (value ")
    with pytest.raises(ValueError, match="first direction 999 out of range"):
        state.render(View(model="shapes32", first=999, steps=STEPS), [1.0])


def test_downloads_are_a_png_and_a_directions_file(state, shapes_model, tmp_path):
    preview = state.render(VIEW, [3.0, 0, 0, 0, 0])
    png = state.image_file(preview.edited)
    assert torch.allclose(load_image(png, shapes_model.sample_shape), preview.edited, atol=1 / 127)
    dirs = Directions.load(state.directions_file(VIEW), expect_dim=128)
    defaults = shapes_model.edit_defaults
    assert dirs.metadata["layer"] == defaults["layer"] and dirs.metadata["decomposition"] == defaults["decomposition"]
    assert torch.equal(dirs.vectors, state.directions(VIEW).vectors)


def test_labels_reach_table_sliders_and_file(state, monkeypatch):
    from eigenedit.evaluation import reading

    calls = []

    def fake_read(model, dirs, operator, location, t_edit, steps, **kw):
        calls.append((len(dirs), operator, location))
        return [{"attribute": f"f{i}", "sign": 1.0} for i in range(len(dirs))]

    monkeypatch.setattr(reading, "read_directions", fake_read)
    view = View(model="shapes32", first=1)
    found = state.label(view)
    assert found == [f"+f{i} (not tested by the protocol)" for i in range(N_SLIDERS)]
    assert calls == [(N_SLIDERS, state.resolve(view).operator, "up_blocks.0.attentions.1")]
    assert [row[2] for row in state.table(view)[:3]] == ["", found[0], found[1]]
    assert state.slider_labels(view)[0].endswith(found[0])
    assert Directions.load(state.directions_file(view)).labels[1] == found[0]


@pytest.mark.parametrize("model_id", ["faces64", "terrain128", "fashion32", "shapes32"])
def test_every_shipped_model_has_a_label_reader(model_id):
    from eigenedit.evaluation import reading

    model = type("Model", (), {"model_id": model_id, "edit_defaults": {}})()
    assert reading.probe_of(model) is not None


def test_labels_say_precise_only_where_the_protocol_did():
    from eigenedit.evaluation.reading import label_text

    stored = {"attribute": "face_width", "sign": 1.0, "precise": True}
    assert label_text({"attribute": "face_width", "sign": 1.0}, stored) == "+face_width (protocol: precise)"
    assert label_text({"attribute": "face_width", "sign": 1.0}, stored | {"precise": False}) == (
        "+face_width (protocol: not precise)"
    )
    assert label_text({"attribute": "brightness", "sign": -1.0}, stored) == (
        "-brightness (protocol: +face_width, precise)"  # the reading and the protocol's row disagree: both shown
    )
    assert "precise" not in label_text({"attribute": "yaw", "sign": 1.0}, {}).replace("not tested", "")


def test_labels_need_a_probe(tiny_model, tmp_path):
    state = EditorState(loader=lambda name: tiny_model, workdir=tmp_path)
    with pytest.raises(ValueError, match="automatic labels need a model with a probe"):
        state.label(View(model="tiny", layer="mid_block.attentions.0"))


def test_direction_and_location_mismatch_is_a_clear_error(state):
    view = View(model="shapes32", steps=STEPS, location="conv_in")
    with pytest.raises(ValueError, match="have 128 channels, but the edit location conv_in has 16"):
        state.render(view, [1.0])


def test_view_from_widget_values():
    values = ["shapes32 ", "", "ov-left", "2", True, 3.0, 7.0, 12, 400.0, "", "scale"]
    view = view_from(values)
    assert view == View("shapes32", None, "ov-left", 2, True, 3, 7, 12, 400, None, "scale")
    assert view_from(["m", None, None, "merged", False, None, None, None, None, None, None]).head is None


def widget_values(model: str = "shapes32", location=None, alphas=(0.0,) * N_SLIDERS) -> list:
    """Widget values in the order the gradio callbacks receive them."""
    return [model, None, None, "merged", False, 0, 0, STEPS, None, location, None, 4.0, None, *alphas]


def test_callbacks_show_errors_in_the_status_line(state):
    pytest.importorskip("gradio")
    from eigenedit.apps.ui import Callbacks

    cb = Callbacks(state)
    out = cb.refresh(*widget_values("no-such-model"))
    assert out[:2] == (None, None) and out[2].startswith("**Error:**") and "unknown model" in out[2]
    assert "unknown model" in cb.model_changed("no-such-model")[-1]
    assert "unknown model" in cb.preview(*widget_values("no-such-model"))[2]
    assert "unknown edit location" in cb.preview(*widget_values(location="nowhere", alphas=(1, 0, 0, 0, 0)))[2]


def test_callbacks_refresh_and_preview(state):
    pytest.importorskip("gradio")
    from eigenedit.apps.ui import Callbacks

    cb = Callbacks(state)
    plain, edited, status, png, dirs_file, table, label_button, *sliders = cb.refresh(*widget_values())
    assert plain.size == edited.size == (256, 256) and np.array_equal(np.asarray(plain), np.asarray(edited))
    assert f"{STEPS} DDIM steps" in status and png.endswith(".png") and dirs_file.endswith(".safetensors")
    assert len(table) == 128 and label_button["interactive"] is True
    assert len(sliders) == N_SLIDERS and sliders[0]["maximum"] == 4.0 and sliders[0]["label"].startswith("direction 0")
    plain2, edited2, _, png2 = cb.preview(*widget_values(alphas=(4.0, 0, 0, 0, 0)))
    assert np.array_equal(np.asarray(plain2), np.asarray(plain)) and not np.array_equal(np.asarray(edited2), edited)
    assert png2 != png


def test_build_app(state):
    """The page starts on the model's own defaults: its layer, operator, preview steps and slider range, one
    slider per shown direction, and its events wired."""
    gr = pytest.importorskip("gradio")
    from eigenedit.apps.ui import build_app
    from eigenedit.core import operators

    demo = build_app(state, "shapes32")
    assert isinstance(demo, gr.Blocks)
    d = state.defaults("shapes32")
    components = list(demo.blocks.values())
    by_label = {getattr(c, "label", None): c for c in components}
    layer, operator = by_label["self-attention layer"], by_label["edit operator"]
    assert layer.value == d["layer"] and [value for _, value in layer.choices] == d["layers"]
    assert operator.value == d["operator"] and [value for _, value in operator.choices] == list(operators.OPERATORS)
    assert (
        by_label["DDIM steps"].value == d["preview_steps"] and by_label["edit at timesteps t >="].value == d["t_edit"]
    )
    sliders = [c for c in components if isinstance(c, gr.Slider) and str(c.label).startswith("direction ")]
    assert len(sliders) == N_SLIDERS and {(s.minimum, s.maximum) for s in sliders} == {
        (-d["alpha_max"], d["alpha_max"])
    }
    assert len(demo.fns) > 0


def test_cli_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes "import gradio" fail
    assert main(["ui"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "eigenedit[ui]"' in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args, message", [(["--model", "no-such-model"], "unknown model"), (["--port", "70000"], "port must be")]
)
def test_cli_errors_before_serving(args, message, capsys):
    pytest.importorskip("gradio")
    assert main(["ui", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_new_model_resets_the_controls_to_its_defaults(tiny_model, tmp_path):
    pytest.importorskip("gradio")
    from eigenedit.apps.ui import Callbacks

    tiny_model.edit_defaults = {"steps": 1, "alphas": [-2.0, 2.0], "t_edit": 300}
    cb = Callbacks(EditorState(loader=lambda name: tiny_model, workdir=tmp_path))
    layer, _, head, _, _, steps, t_edit, location, operator, alpha_max, *sliders, status = cb.model_changed("tiny")
    assert layer["value"] == "mid_block.attentions.0" and "mid_block.attentions.0" in location["choices"]
    assert head["choices"] == ["merged", "0", "1"]  # 16 channels, head_dim 8
    assert (steps["value"], t_edit["value"], alpha_max["value"], operator["value"]) == (1, 300, 2.0, "shift")
    assert cb.operator_changed("tiny", "xspace")[0]["value"] == 0.02  # each operator's own strength range
    assert all(s["value"] == 0.0 for s in sliders) and "tiny" in status
