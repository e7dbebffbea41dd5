"""``eigenedit batch``: outputs + manifest, resuming, process-count independence, input errors."""

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eigenedit.apps import batch
from eigenedit.apps.cli import main
from eigenedit.core import sampling
from eigenedit.core.directions import Directions
from eigenedit.models import load_model

from .conftest import run

STEPS = ["--steps", "2", "--cpu"]
EDITS = ["--direction", "0", "--alphas=-1,1", "--edit", "1:0.5,2:-0.5"]


@pytest.fixture(scope="module")
def dfile(model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dirs") / "d.safetensors"
    assert main(["directions", "--model", model_dir, "-o", str(path)]) == 0
    return path


@pytest.fixture
def one_thread():
    """Bytes are only comparable at equal threads per process (float sums split differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_batch(model_dir, dfile, out, *args) -> int:
    return run("batch", "--model", model_dir, "--directions", dfile, *STEPS, "-o", out, *args)


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_seeds_write_one_png_per_item_and_edit(model_dir, dfile, tmp_path, one_thread):
    out = tmp_path / "out"
    assert run_batch(model_dir, dfile, out, "--seeds", "3,0-1", *EDITS, "--batch-size", "4") == 0
    records = manifest(out)
    edits = ["d1+0.5_d2-0.5", "d0-1", "d0+1"]
    names = [f"seed{s}__{e}.png" for s in (3, 0, 1) for e in edits]
    assert [r["output"] for r in records] == names  # items in the order given, then edits
    assert sorted(pngs(out)) == sorted(names)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "manifest.jsonl"])  # no parts, no temporaries
    first = records[0]
    assert first["input"] == "seed" and first["seed"] == 3 and first["source"] is None
    assert first["directions"] == [1, 2] and first["alphas"] == [0.5, -0.5]
    assert (first["model"], first["steps"], first["t_edit"], first["location"]) == (model_dir, 2, 500, "mid_block")
    assert first["time"].endswith("+00:00")
    for rec in records:
        assert batch.hashlib.sha256((out / rec["output"]).read_bytes()).hexdigest() == rec["sha256"]
    # the file named seed0__d0+1 holds seed 0 edited by +1 * direction 0 (uint8 rounding of other batching aside)
    model = load_model(model_dir)
    x_t = sampling.noise_from_seeds(model, [0, 0])
    dirs = Directions.load(dfile).select([0])
    want = sampling.edit_images(model, x_t, sampling.Edit(dirs, torch.tensor([[1.0], [-1.0]])), 2)
    want = batch.to_uint8(want).astype(int)
    plus, minus = (np.asarray(Image.open(out / f"seed0__d0{s}.png"), dtype=int) for s in ("+1", "-1"))
    assert np.abs(plus - want[0]).max() <= 1 and np.abs(minus - want[1]).max() <= 1
    assert np.abs(plus - minus).max() > 10  # the two edits really differ


def test_steps_default_to_the_models_own(model_dir, dfile, tmp_path):
    """Without --steps, batch samples with the steps of the model's eigenedit.json (as edit does), not 50;
    --steps still overrides them."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps({"steps": 3}))
    common = ("batch", "--model", folder, "--directions", dfile, "--force", "--cpu", "--seeds", "0", "--edit", "0:0.5")
    assert run(*common, "-o", tmp_path / "own") == 0
    assert [r["steps"] for r in manifest(tmp_path / "own")] == [3]
    assert run(*common, "--steps", "2", "-o", tmp_path / "given") == 0
    assert [r["steps"] for r in manifest(tmp_path / "given")] == [2]


def test_rerun_skips_done_outputs_and_redoes_missing_or_changed_ones(model_dir, dfile, tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    args = ("--seeds", "0-2", *EDITS, "--batch-size", "3")
    assert run_batch(model_dir, dfile, out, *args) == 0
    before = pngs(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    capsys.readouterr()
    assert run_batch(model_dir, dfile, out, *args) == 0
    assert "9 already done, 0 to write" in capsys.readouterr().out
    (out / "seed1__d0-1.png").unlink()
    (out / "seed2__d0+1.png").write_bytes(b"not what was recorded")
    assert run_batch(model_dir, dfile, out, *args) == 0
    assert "7 already done, 2 to write" in capsys.readouterr().out
    assert pngs(out) == before  # recomputed bit for bit
    changed = {p.name for p in out.glob("*.png") if p.stat().st_mtime_ns != stamps[p.name]}
    assert changed == {"seed1__d0-1.png", "seed2__d0+1.png"}
    assert len(manifest(out)) == 9
    assert run_batch(model_dir, dfile, out, *args, "--steps", "3") == 0  # other settings: all again
    assert "0 already done, 9 to write" in capsys.readouterr().out
    assert {r["steps"] for r in manifest(out)} == {3}


def test_cg_steps_are_a_setting_of_the_outputs(model_dir, dfile, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("--seeds", "0", "--direction", "0", "--alphas=0.01", "--operator", "xspace")
    assert run_batch(model_dir, dfile, out, *args) == 0
    assert [r["cg_steps"] for r in manifest(out)] == [0]
    # a manifest written before --cg-steps existed: its outputs were made without refinement
    old = [{k: v for k, v in r.items() if k != "cg_steps"} for r in manifest(out)]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    capsys.readouterr()
    assert run_batch(model_dir, dfile, out, *args) == 0
    assert "1 already done, 0 to write" in capsys.readouterr().out
    assert run_batch(model_dir, dfile, out, *args, "--cg-steps", "2") == 0
    assert "0 already done, 1 to write" in capsys.readouterr().out
    assert [r["cg_steps"] for r in manifest(out)] == [2]


def test_interrupted_run_leaves_only_complete_files_and_resumes(model_dir, dfile, tmp_path, monkeypatch, one_thread):
    reference, out = tmp_path / "reference", tmp_path / "out"
    args = ("--seeds", "0-2", *EDITS, "--batch-size", "3")
    assert run_batch(model_dir, dfile, reference, *args) == 0
    calls, real = [], batch.png_bytes

    def interrupt_fourth(*a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(batch, "png_bytes", interrupt_fourth)
    assert run_batch(model_dir, dfile, out, *args) == 130
    monkeypatch.setattr(batch, "png_bytes", real)
    written = pngs(out)
    assert len(written) == 3 and all(reference.joinpath(n).read_bytes() == b for n, b in written.items())
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == [
        "manifest.jsonl",
        "manifest.rank0.jsonl",
    ]
    (out / ".seed0__d0+1.png.x1y2.tmp").write_bytes(b"half")  # what a killed atomic write leaves behind
    with open(out / "manifest.rank0.jsonl", "a") as part:
        part.write('{"output": "seed2__d0')  # a record cut short
    assert run_batch(model_dir, dfile, out, *args) == 0
    assert pngs(out) == pngs(reference)
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == ["manifest.jsonl"]
    drop_time = [{k: v for k, v in r.items() if k != "time"} for r in manifest(out)]
    assert drop_time == [{k: v for k, v in r.items() if k != "time"} for r in manifest(reference)]


def test_images_from_a_folder_and_a_list_file(model_dir, dfile, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run_batch(model_dir, dfile, out, "--images", folder, "--edit", "0:1") == 0
    records = manifest(out)
    assert [r["output"] for r in records] == ["a__d0+1.png", "b__d0+1.png"]  # sorted, not recursive
    assert records[0]["input"] == "image" and records[0]["seed"] is None
    assert records[0]["source"] == str(folder / "a.png")
    assert records[0]["source_sha256"] == batch.file_sha256(folder / "a.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nimages/sub/c.png\n\nimages/a.png\n")
    assert run_batch(model_dir, dfile, out, "--images", listing, "--edit", "0:1") == 0
    assert "2 outputs (2 images x 1 edits): 0 already done, 2 to write" in capsys.readouterr().out
    names = ["images_sub_c__d0+1.png", "images_a__d0+1.png", "a__d0+1.png", "b__d0+1.png"]
    assert [r["output"] for r in manifest(out)] == names  # this run's outputs first, then the earlier ones
    same, other = (np.asarray(Image.open(out / n), dtype=int) for n in ("images_a__d0+1.png", "b__d0+1.png"))
    assert np.abs(same - np.asarray(Image.open(out / "a__d0+1.png"), dtype=int)).max() <= 1  # same source
    assert np.abs(same - other).max() > 10
    assert run_batch(model_dir, dfile, tmp_path / "one", "--images", folder / "sub" / "c.png", "--edit", "0:1") == 0
    assert [r["output"] for r in manifest(tmp_path / "one")] == ["c__d0+1.png"]


def test_two_processes_write_the_same_bytes_as_one(tmp_path, one_thread):
    """A real 2-process run (accelerate launch, gloo on CPU) against an in-process 1-process run, on the shipped
    model (where a batch made up differently would change some bytes)."""
    model_dir, dfile = "shapes32", tmp_path / "d.safetensors"
    assert main(["directions", "--model", model_dir, "-k", "3", "-o", str(dfile)]) == 0
    args = ["--seeds", "0-4", *EDITS, "--batch-size", "4", "--steps", "5"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_batch(model_dir, dfile, one, *args) == 0
    with socket.socket() as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, "-m", "eigenedit.apps.batch", "--model", model_dir, "--directions", str(dfile), *STEPS]
    command += ["-o", str(two), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 2 process(es)" in proc.stdout
    assert pngs(two) == pngs(one) and len(pngs(one)) == 15
    records = manifest(two)
    assert {r["process"] for r in records} == {0, 1}  # both processes did work
    strip = {"time", "process"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in records] == [
        {k: v for k, v in r.items() if k not in strip} for r in manifest(one)
    ]
    assert not list(two.glob("manifest.rank*"))


def directions_of_dim(path: Path, dim: int) -> Path:
    Directions(torch.eye(3, dim), torch.ones(3), {"model": "other", "layer": "x"}).save(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing directions", "directions file not found"),
        ("wrong dimension", "7-dimensional directions"),
        ("empty folder", "no images"),
        ("bad alpha", "alpha must be finite"),
        ("direction out of range", "out of range"),
        ("alphas without direction", "--alphas needs --direction"),
        ("no edit", "give at least one edit"),
        ("wrong image size", "is 8x8"),
        ("missing listed image", "image not found"),
        ("empty seed range", "seed range '5-2' is empty"),
        ("unknown location", "unknown edit location"),
        ("output is a file", "is a file"),
    ],
)
def test_bad_input_is_one_error_and_no_output(model_dir, dfile, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    source = ["--seeds", "0-1"]
    edits = ["--direction", "0", "--alphas=-1,1"]
    directions = dfile
    if case == "missing directions":
        directions = tmp_path / "nope.safetensors"
    elif case == "wrong dimension":
        directions = directions_of_dim(tmp_path / "other.safetensors", 7)
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        source = ["--images", tmp_path / "empty"]
    elif case == "bad alpha":
        edits = ["--direction", "0", "--alphas=-1,nan"]
    elif case == "direction out of range":
        edits = ["--edit", "0:1,99:1"]
    elif case == "alphas without direction":
        edits = ["--edit", "0:1", "--alphas=1"]
    elif case == "no edit":
        edits = []
    elif case == "wrong image size":
        (tmp_path / "imgs").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "small.png")
        source = ["--images", tmp_path / "imgs", "--resize", "none"]
    elif case == "missing listed image":
        (tmp_path / "list.txt").write_text("gone.png\n")
        source = ["--images", tmp_path / "list.txt"]
    elif case == "empty seed range":
        source = ["--seeds", "5-2"]
    elif case == "unknown location":
        edits = [*edits, "--location", "nowhere"]
    elif case == "output is a file":
        out.write_text("keep me")
    before = set(tmp_path.iterdir())
    assert run("batch", "--model", model_dir, "--directions", directions, *STEPS, "-o", out, *source, *edits) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if not err.startswith("usage:"):  # argparse adds its usage line to the message
        assert err.count("\n") == 1, err
    assert set(tmp_path.iterdir()) == before  # no output folder, nothing else


def test_seed_and_edit_parsing():
    assert batch.parse_seeds("3, 0-2,2") == [3, 0, 1, 2]
    for bad in ("", "a", "-1", "1-", "2-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="seed"):
            batch.parse_seeds(bad)
    edit = batch.parse_edit("0:1,2:-0.25")
    assert edit == batch.EditSpec((0, 2), (1.0, -0.25)) and edit.tag == "d0+1_d2-0.25"
    assert batch.EditSpec((1,), (0.1234567,)).tag == "d1+0.1234567"  # exact, so distinct alphas never share a file
    assert batch.output_stem("../cats/001.final.png") == "cats_001.final"
