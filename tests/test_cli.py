import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from eigenedit.apps.cli import main

from .conftest import run
from .test_hostile_inputs import one_error


def test_layers_and_directions(model_dir, tmp_path, capsys):
    assert run("layers", "--model", model_dir) == 0
    assert "mid_block.attentions.0" in capsys.readouterr().out
    out = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "--decomposition", "ov-left", "-k", "4", "-o", out) == 0
    assert out.is_file()
    assert "ov-left directions" in capsys.readouterr().out


def test_sweep_writes_a_grid(model_dir, tmp_path):
    out = tmp_path / "grid.png"
    code = run("sweep", "--model", model_dir, "-k", "2", "--alphas=-1,0,1", "--steps", "3", "--scale", "2", "-o", out)
    assert code == 0
    img = Image.open(out)
    assert img.width >= 3 * 16 * 2 and img.height >= 2 * 16 * 2


def test_edit_seed_and_real_image(model_dir, tmp_path):
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "-o", dfile) == 0
    out = tmp_path / "e.png"
    args = ["edit", "--model", model_dir, "--directions", dfile, "--edit", "0:1", "--edit", "2:-0.5"]
    assert run(*args, "--steps", "3", "--compare", "--scale", "1", "-o", out) == 0
    assert Image.open(out).size == (32, 16)
    real = tmp_path / "real.png"
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(real)
    assert run(*args, "--image", real, "--steps", "3", "--scale", "1", "-o", out) == 0
    assert run("invert", "--model", model_dir, "--image", real, "--steps", "3", "-o", tmp_path / "inv.png") == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep", "--model", "no-such-model"], "unknown model"),
        (["sweep", "--layer", "mid_block.nope"], "unknown self-attention layer"),
        (["sweep", "-k", "999"], "out of range"),
        (["edit", "--edit", "999:1"], "out of range"),
        (["sweep", "--location", "nowhere"], "unknown edit location"),
        (["invert"], "needs --image"),
    ],
)
def test_errors_are_one_clear_message(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.png"
    if args[1:3] != ["--model", "no-such-model"]:
        args = [args[0], "--model", model_dir, *args[1:]]
    assert run(*args, "--steps", "2", "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no partial output


@pytest.mark.parametrize("alpha", ["nan", "inf", "x"])
def test_non_finite_alpha(model_dir, alpha):
    with pytest.raises(SystemExit) as exc:  # argparse refuses it
        main(["edit", "--model", model_dir, "--edit", f"0:{alpha}"])
    assert exc.value.code == 2


def test_bad_images(model_dir, tmp_path, capsys):
    wrong_size = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(wrong_size)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(gray)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    for path, message in [(wrong_size, "is 16x20"), (gray, "mode L"), (text, "cannot read image")]:
        assert run("edit", "--model", model_dir, "--image", path, "--resize", "none", "-o", tmp_path / "o.png") == 2
        assert message in capsys.readouterr().err  # --resize none: the image must already fit (strict)
    assert not (tmp_path / "o.png").exists()


def test_unwritable_output_and_corrupt_directions(model_dir, tmp_path, capsys):
    assert run("sweep", "--model", model_dir, "-o", tmp_path / "missing" / "x.png") == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    assert run("sweep", "--model", model_dir, "--directions", bad, "-o", tmp_path / "x.png") == 2
    assert "not a valid directions file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eigenedit.apps.cli",
            "sweep",
            "--model",
            "no-such-model",
            "-o",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown model" in proc.stderr


def with_defaults(model_dir, tmp_path, defaults: dict):
    """A copy of the tiny model's folder with this eigenedit.json."""
    import json
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps(defaults))
    return folder


def test_label_option_stores_the_protocol_reading(model_dir, tmp_path, capsys):
    from eigenedit.core.directions import Directions

    folder = with_defaults(model_dir, tmp_path, {"labeller": "shapes", "steps": 2})
    out = tmp_path / "d.safetensors"
    assert run("directions", "--model", folder, "-k", "2", "--label", "-o", out) == 0
    labels = Directions.load(out).labels
    assert len(labels) == 2 and all(lab[0] in "+-" and "not tested by the protocol" in lab for lab in labels)


def test_label_needs_a_probe(model_dir, tmp_path, capsys):
    assert run("directions", "--model", model_dir, "-k", "1", "--label") == 2
    assert "no attribute probe" in one_error(capsys)


def test_sweep_rows_carry_the_protocols_verdict(model_dir, tmp_path, monkeypatch):
    from eigenedit.apps import cli

    row = {"layer": "mid_block.attentions.0", "source": "qk", "index": 0, "operator": "shift", "location": "mid_block",
           "t_edit": 0, "attribute": "size", "sign": -1.0, "precise": False, "rho": [0.9, 0.85],
           "random_abs_rho_p95": [0.95, 0.9], "off_target_ratio": [2.5, 2.1]}  # fmt: skip
    folder = with_defaults(
        model_dir,
        tmp_path,
        {
            "layer": "mid_block.attentions.0",
            "decomposition": "qk",
            "operator": "shift",
            "location": "mid_block",
            "protocol_rows": [row],
        },
    )
    seen = {}
    real = cli.image_grid
    monkeypatch.setattr(cli, "image_grid", lambda *a, **kw: seen.setdefault("rows", a[3]) and real(*a, **kw))
    assert run("sweep", "--model", folder, "-k", "2", "--steps", "2", "--scale", "1", "-o", tmp_path / "s.png") == 0
    assert seen["rows"] == ["0: -size: rho +0.90/+0.85 (random p95 0.95/0.90), not precise",
                            "1: not measured by the protocol"]  # fmt: skip


def test_directions_file_of_another_model_is_refused(model_dir, tmp_path, capsys):
    import torch

    from eigenedit.core.directions import Directions

    other = tmp_path / "other.safetensors"
    Directions(torch.eye(3, 7), torch.ones(3), {"model": "other", "layer": "x"}).save(other)
    assert run("edit", "--model", model_dir, "--directions", other, "-o", tmp_path / "o.png") == 2
    assert "7-dimensional directions" in capsys.readouterr().err


def test_model_defaults_file_fills_unset_options(model_dir, tmp_path, capsys):
    import json
    import shutil

    folder = tmp_path / "with_defaults"
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps({"decomposition": "ov-right", "alphas": [-2, 2]}))
    assert run("directions", "--model", folder, "-k", "1") == 0
    assert "ov-right directions" in capsys.readouterr().out
    assert run("directions", "--model", folder, "-k", "1", "--decomposition", "qkv") == 0
    assert "qkv directions" in capsys.readouterr().out  # the command line wins
    two, three = tmp_path / "two.png", tmp_path / "three.png"
    assert run("sweep", "--model", folder, "-k", "1", "--steps", "2", "--scale", "1", "-o", two) == 0
    assert (
        run("sweep", "--model", folder, "-k", "1", "--steps", "2", "--scale", "1", "--alphas=-1,0,1", "-o", three) == 0
    )
    assert Image.open(three).width - Image.open(two).width == 16  # the model's two alphas vs three given


def test_train_subcommand_passes_its_options_through(tmp_path):
    import json

    assert (
        run("train", "--output-dir", tmp_path / "run", "--max-steps", "1", "--batch-size", "2", "--log-every", "1") == 0
    )
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1 and state["config"]["batch_size"] == 2


def test_label_uses_the_models_edit_location(model_dir, tmp_path, monkeypatch):
    from eigenedit.evaluation import reading

    folder = with_defaults(model_dir, tmp_path, {"location": "mid_block.attentions.0", "t_edit": 100,
                                                 "labeller": "shapes", "steps": 2})  # fmt: skip
    seen = {}
    real = reading.read_directions

    def spy(model, dirs, operator, location, t_edit, steps, **kw):
        seen.update(t_edit=t_edit, location=location)
        return real(model, dirs, operator, location, t_edit, steps, **kw)

    monkeypatch.setattr(reading, "read_directions", spy)
    assert run("directions", "--model", folder, "-k", "1", "--label") == 0
    assert seen == {"t_edit": 100, "location": "mid_block.attentions.0"}


def test_cg_steps_reach_the_edit_of_edit_and_sweep(model_dir, tmp_path, monkeypatch, capsys):
    from eigenedit.core import sampling

    seen = []
    real = sampling.edit_images

    def spy(model, x_t, edit, *args, **kwargs):
        seen.append((edit.operator, edit.cg_steps))
        return real(model, x_t, edit, *args, **kwargs)

    monkeypatch.setattr(sampling, "edit_images", spy)
    common = ["--model", model_dir, "--steps", "2", "--operator", "xspace", "--scale", "1", "-o", tmp_path / "o.png"]
    assert run("edit", *common, "--edit", "0:0.01", "--cg-steps", "2") == 0
    assert run("sweep", *common, "-k", "1", "--alphas=0.01", "--cg-steps", "3") == 0
    assert run("sweep", *common, "-k", "1", "--alphas=0.01") == 0
    assert seen == [("xspace", 2), ("xspace", 3), ("xspace", 0)]
    capsys.readouterr()
    assert run("edit", *common, "--cg-steps=-1") == 2
    assert "whole number >= 0" in capsys.readouterr().err
