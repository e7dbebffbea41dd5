"""Issue 16, hostile and careless inputs: each test reproduces one defect of the issue (numbered as there) and
checks the clean outcome: one error line naming the option or file, exit code 2, nothing sampled where the input
could be judged before, and no file written or replaced."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eigenedit.apps import batch, guards
from eigenedit.core import sampling

from .conftest import run, tiny_unet


def lines_of(err: str) -> list[str]:
    """The stderr lines a terminal shows (progress bars overwritten)."""
    lines = [line.split("\r")[-1] for line in err.split("\n")]
    return [line for line in lines if line.strip()]


def one_error(capsys) -> str:
    """The single stderr line, an error."""
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("eigenedit: error: "), lines
    return lines[0]


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if anything is sampled: these inputs must be refused before any compute."""

    def refuse(*args, **kwargs):
        raise AssertionError("sampled before refusing the input")

    for name in ("sample", "edit_images", "invert"):
        monkeypatch.setattr(sampling, name, refuse)


@pytest.fixture(scope="module")
def dfile(model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dirs") / "d.safetensors"
    assert run("directions", "--model", model_dir, "-k", "3", "-o", path) == 0
    return path


def edit(model_dir, out, *extra) -> int:
    return run("edit", "--model", model_dir, "--steps", "2", "--edit", "0:0.5", "-o", out, *extra)


# -- 1: device nodes, FIFOs, folders, links ---------------------------------------------------------------------


def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "char device":  # what /dev/null is
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "char device", "socket", "folder"])
def test_1_special_files_are_never_replaced(model_dir, tmp_path, capsys, no_sampling, kind):
    if kind == "char device" and os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    target = tmp_path / "out.png"
    make_special(target, kind)
    before = os.lstat(target)
    assert edit(model_dir, target) == 2
    line = one_error(capsys)
    assert str(target) in line and "not a regular file" in line
    after = os.lstat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left beside it


def test_1_a_link_writes_its_target_and_stays_a_link(model_dir, tmp_path):
    target, link = tmp_path / "target.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert edit(model_dir, link) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert Image.open(target).format == "PNG"


# -- 2: outputs too large for memory ----------------------------------------------------------------------------


def test_2_an_output_too_large_is_refused_before_sampling(model_dir, tmp_path, capsys, no_sampling, monkeypatch):
    out = tmp_path / "out.png"
    assert edit(model_dir, out, "--scale", "100000") == 2
    assert "megapixels" in (line := one_error(capsys)) and "--scale" in line
    sweep = ("sweep", "--model", model_dir, "-k", "2", "--alphas=-1,1", "--steps", "2", "-o", out)
    assert run(*sweep, "--scale", "100000") == 2
    assert "--scale, -k or --alphas" in one_error(capsys)
    monkeypatch.setattr(guards, "available_memory", lambda: 10**6)  # 1 MB left: a 4x grid of 16 px no longer fits
    assert run(*sweep, "--scale", "64") == 2
    assert "MB of memory" in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


# -- 3: tracebacks after all the compute ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/proc/x.png", "/sys/x.png", "long"])
def test_3_unwritable_outputs_are_one_error_before_sampling(model_dir, tmp_path, capsys, no_sampling, where):
    if where != "long" and not Path(where).parent.is_dir():
        pytest.skip(f"no {Path(where).parent} here")
    out = tmp_path / ("a" * 296 + ".png") if where == "long" else Path(where)
    assert edit(model_dir, out) == 2
    line = one_error(capsys)
    assert ("too long" in line) if where == "long" else (where in line)
    assert list(tmp_path.iterdir()) == []


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_3_a_full_disk_is_one_error_for_edit_batch_and_directions(model_dir, dfile, tmp_path, capsys, monkeypatch):
    keep = tmp_path / "keep.png"
    assert edit(model_dir, keep) == 0
    old = keep.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(Image.Image, "save", no_space)  # the disk fills up while the PNG is written
    assert edit(model_dir, keep) == 2
    assert "No space left on device" in (line := one_error(capsys)) and str(keep) in line
    assert keep.read_bytes() == old  # the old file is kept, whole
    monkeypatch.setattr(Path, "write_bytes", no_space)  # batch PNGs and directions files are written as bytes
    out = tmp_path / "batch"
    args = ("--directions", dfile, "--seeds", "0-1", "--edit", "0:1", "--steps", "2", "--cpu", "-o", out)
    assert run("batch", "--model", model_dir, *args) == 2
    assert "No space left on device" in one_error(capsys)
    assert not list(out.glob("*.png"))
    assert run("directions", "--model", model_dir, "-k", "2", "-o", tmp_path / "d.safetensors") == 2
    assert "No space left on device" in one_error(capsys)
    assert not (tmp_path / "d.safetensors").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]


@pytest.fixture(scope="module")
def adm_dir(tmp_path_factory) -> Path:
    from eigenedit.models.adm import ADMConfig, ADMUNet, save_adm_folder

    folder = tmp_path_factory.mktemp("adm")
    config = ADMConfig(
        image_size=16,
        in_channels=3,
        model_channels=32,
        out_channels=3,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 2),
        num_head_channels=8,
    )
    torch.manual_seed(0)
    save_adm_folder(ADMUNet(config), folder)
    return folder


def adm_copy(adm_dir: Path, tmp_path: Path, weights: bytes | None = None, **unet) -> Path:
    """A copy of the ADM folder, with ``weights`` as model.pt and ``unet`` fields changed."""
    folder = tmp_path / "adm"
    shutil.copytree(adm_dir, folder)
    meta = json.loads((folder / "adm_config.json").read_text())
    meta["unet"].update(unet)
    if weights is not None:
        (folder / "model.pt").write_bytes(weights)
        meta["weights"] = "model.pt"
    (folder / "adm_config.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("content", [b"", b"garbage, not a pickle", "truncated"])
def test_3_a_broken_pickle_checkpoint_is_one_error(adm_dir, tmp_path, capsys, content):
    if content == "truncated":
        from safetensors.torch import load_file

        buffer = tmp_path / "full.pt"
        torch.save(load_file(adm_dir / "model.safetensors"), buffer)
        content = buffer.read_bytes()[: buffer.stat().st_size // 2]
    folder = adm_copy(adm_dir, tmp_path, content)
    assert run("layers", "--model", folder, "--allow-pickle") == 2
    assert "model.pt" in one_error(capsys)


def test_3_num_heads_that_do_not_divide_the_channels_are_one_error(adm_dir, tmp_path, capsys, no_sampling):
    folder = adm_copy(adm_dir, tmp_path, num_heads=3, num_head_channels=-1)
    assert edit(folder, tmp_path / "out.png") == 2
    line = one_error(capsys)
    assert "adm_config.json" in line and "num_heads 3" in line


# -- 4: the UI passes --allow-pickle on -------------------------------------------------------------------------


def test_4_ui_passes_allow_pickle_to_the_model_it_loads(adm_dir, tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio")
    from safetensors.torch import load_file

    from eigenedit.apps import ui

    buffer = tmp_path / "w.pt"
    torch.save(load_file(adm_dir / "model.safetensors"), buffer)
    folder = adm_copy(adm_dir, tmp_path, buffer.read_bytes())
    loaded = []

    def stop_after_loading(state, model, steps):  # the model loaded: stop before any server starts
        loaded.append(state.model(model))
        raise ValueError("stopped before serving")

    monkeypatch.setattr(ui, "build_app", stop_after_loading)
    assert run("ui", "--model", folder, "--allow-pickle") == 2
    assert "stopped before serving" in one_error(capsys) and len(loaded) == 1
    assert run("ui", "--model", folder) == 2  # without the flag: refused, naming it
    assert "--allow-pickle" in one_error(capsys)


# -- 5: pickles load only with --allow-pickle, and never fully unpickled ---------------------------------------


@pytest.fixture(scope="module")
def pickle_model(tmp_path_factory) -> Path:
    """The tiny model as a diffusers folder with pickle weights only (unet/diffusion_pytorch_model.bin)."""
    from diffusers import DDIMScheduler

    folder = tmp_path_factory.mktemp("pickled")
    tiny_unet().save_pretrained(folder / "unet", safe_serialization=False)
    DDIMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    assert not list(folder.rglob("*.safetensors"))
    return folder


def test_5_pickle_weights_need_allow_pickle(pickle_model, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert edit(pickle_model, out) == 2
    line = one_error(capsys)
    assert "diffusion_pytorch_model.bin" in line and "--allow-pickle" in line and not out.exists()
    assert edit(pickle_model, out, "--allow-pickle") == 0 and out.is_file()
    from eigenedit.apps.ui import EditorState

    with pytest.raises(ValueError, match="--allow-pickle"):  # the UI's model box loads the same way
        EditorState(workdir=tmp_path).model(str(pickle_model))


MARKER = []  # what the malicious pickle below appends to when it is unpickled


def mark(text: str) -> str:
    MARKER.append(text)
    return text


class RunsCode:
    def __reduce__(self):
        return (mark, ("the pickle ran code",))


def test_5_a_checkpoint_that_needs_full_unpickling_is_refused(adm_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    state = dict(load_file(adm_dir / "model.safetensors"), extra=RunsCode())
    buffer = tmp_path / "w.pt"
    with open(buffer, "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    folder = adm_copy(adm_dir, tmp_path, buffer.read_bytes())
    MARKER.clear()
    assert run("layers", "--model", folder, "--allow-pickle") == 2
    assert "weights_only" in one_error(capsys) and MARKER == []


# -- 6: two batches into one folder -----------------------------------------------------------------------------


def test_6_a_second_batch_into_a_locked_folder_refuses_or_waits(model_dir, dfile, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another batch's main process: it holds the folder's lock until its stdin closes
        [sys.executable, "-c", HOLD_LOCK, str(out / batch.LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        args = ["batch", "--model", model_dir, "--directions", dfile, "--seeds", "0-2", "--edit", "0:1"]
        args += ["--steps", "2", "--cpu", "-o", out]
        assert run(*args) == 2
        assert f"pid {holder.pid}" in (line := one_error(capsys)) and "--wait" in line
        assert not list(out.glob("*.png"))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        waiter = subprocess.Popen(
            [sys.executable, "-m", "eigenedit.apps.batch", *map(str, args[1:]), "--wait"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert any(b"waiting for it (--wait)" in line for line in iter(waiter.stderr.readline, b""))  # it waits
        holder.stdin.close()  # ... until the other run ends
        stdout, stderr = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, stderr.decode()[-2000:]
        assert b"wrote 3 images" in stdout
    finally:
        holder.kill()
        holder.wait()
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["output"] for r in records) == sorted(p.name for p in out.glob("*.png")) and len(records) == 3
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == ["manifest.jsonl"]


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


# -- 7: t_edit and seeds outside their range ---------------------------------------------------------------------


def test_7_t_edit_out_of_range_is_refused_and_an_unreached_one_warns(model_dir, tmp_path, capsys, no_sampling):
    out = tmp_path / "out.png"
    assert edit(model_dir, out, "--t-edit", "5000") == 2
    assert "--t-edit 5000 is outside 0..1000" in one_error(capsys)
    assert edit(model_dir, out, "--t-edit", "-1") == 2
    assert "--t-edit -1" in one_error(capsys)
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps({"t_edit": 10**30}))
    assert edit(folder, out) == 2
    assert "eigenedit.json" in (line := one_error(capsys)) and "'t_edit'" in line
    assert not out.exists()


def test_7_an_edit_no_step_reaches_warns(model_dir, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert edit(model_dir, out, "--steps", "3", "--t-edit", "700") == 0  # DDIM 3 steps: t = 666, 333, 0
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 1 and "--t-edit 700: no step of 3 DDIM steps reaches it" in lines[0]
    assert edit(model_dir, out, "--steps", "3", "--t-edit", "600") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", "18446744073709551616", "1e3"])
def test_7_seeds_are_validated_by_name(model_dir, tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as exc:  # argparse's one line names the option
        from eigenedit.apps.cli import main

        main(["edit", "--model", model_dir, "--seed", seed, "-o", str(tmp_path / "o.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and err.count("\n") == 1 and not (tmp_path / "o.png").exists()


# -- 8: strength warnings of the operator in use ----------------------------------------------------------------


@pytest.fixture
def two_operator_model(model_dir, tmp_path) -> Path:
    """The tiny model whose default operator is xspace (tiny alphas) and whose shift alphas are +-4."""
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    defaults = {"operator": "xspace", "alphas": [-0.002, 0.002], "operator_alphas": {"shift": [-4, 4]}}
    (folder / "eigenedit.json").write_text(json.dumps(defaults))
    return folder


def test_8_strength_warnings_use_the_range_of_the_operator_in_use(two_operator_model, dfile, tmp_path, capsys):
    sweep = ("sweep", "--model", two_operator_model, "--steps", "2", "-k", "2", "--operator", "shift")
    assert run(*sweep, "--alphas=-2,2", "-o", tmp_path / "s.png") == 0
    assert "warning" not in capsys.readouterr().err  # inside shift's +-4
    assert run(*sweep, "--alphas=-30,30", "-o", tmp_path / "s.png") == 0
    assert "(|alpha| <= 4) of the shift operator" in lines_of(capsys.readouterr().err)[-1]
    args = ("--directions", dfile, "--seeds", "0", "--edit", "0:2", "--operator", "shift", "--steps", "2", "--cpu")
    assert run("batch", "--model", two_operator_model, *args, "--force", "-o", tmp_path / "b") == 0
    assert "alpha" not in capsys.readouterr().err


# -- 9: bad defaults files are named ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "defaults, key",
    [
        ({"operator_alphas": {"shift": ["x"]}}, "operator_alphas"),
        ({"operator_alphas": {"nope": [1]}}, "operator_alphas"),
        ({"operator": "nope"}, "operator"),
        ({"decomposition": "nope"}, "decomposition"),
        ({"layer": "nope"}, "layer"),
        ({"location": "nope"}, "location"),
        ({"steps": 5000}, "steps"),
        ({"protocol_rows": [1, 2]}, "protocol_rows"),
    ],
)
@pytest.mark.parametrize("command", ["edit", "sweep"])
def test_9_a_bad_defaults_file_is_named_with_its_key(model_dir, tmp_path, capsys, no_sampling, defaults, key, command):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    (folder / "eigenedit.json").write_text(json.dumps(defaults))
    assert run(command, "--model", folder, "-o", tmp_path / "o.png") == 2
    line = one_error(capsys)
    assert str(folder / "eigenedit.json") in line and repr(key) in line


# -- 10: output formats, folders and "-" ------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("x.jpg", "JPEG"), ("x.jpeg", "JPEG"), ("x.webp", "WEBP"), ("x.PNG", "PNG")])
def test_10_the_suffix_names_the_format(model_dir, tmp_path, name, fmt):
    out = tmp_path / name
    assert edit(model_dir, out, "--scale", "1") == 0
    with Image.open(out) as img:
        assert img.format == fmt and img.size == (16, 16)


@pytest.mark.parametrize("name", ["noext", "x.gif", "newdir/", "-"])
def test_10_other_names_are_refused(model_dir, tmp_path, capsys, monkeypatch, no_sampling, name):
    monkeypatch.chdir(tmp_path)
    assert edit(model_dir, name) == 2
    assert name in one_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no file called noext, newdir or -


# -- 11: more steps than train timesteps ------------------------------------------------------------------------


def test_11_too_many_steps_is_our_own_error(model_dir, tmp_path, capsys, no_sampling):
    assert edit(model_dir, tmp_path / "o.png", "--steps", "1001") == 2
    line = one_error(capsys)
    assert "--steps 1001" in line and "1 to 1000" in line and "`" not in line


# -- 12: directions of another layer ----------------------------------------------------------------------------


def test_12_directions_of_another_layer_say_where_they_are_applied(model_dir, tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    assert run("directions", "--model", model_dir, "--layer", "down_blocks.1.attentions.0", "-o", other) == 0
    capsys.readouterr()
    assert edit(model_dir, tmp_path / "o.png", "--directions", other) == 0
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("eigenedit: note: ")
    assert "down_blocks.1.attentions.0" in lines[0] and "applied at mid_block" in lines[0]
    mine = tmp_path / "mine.safetensors"
    assert run("directions", "--model", model_dir, "-o", mine) == 0
    capsys.readouterr()
    assert edit(model_dir, tmp_path / "o.png", "--directions", mine) == 0  # the default layer's: no note
    assert lines_of(capsys.readouterr().err) == []


# -- 13: the web UI ---------------------------------------------------------------------------------------------


@pytest.fixture
def callbacks(model_dir, tmp_path):
    pytest.importorskip("gradio")
    from eigenedit.apps.ui import Callbacks, EditorState
    from eigenedit.models import load_model

    model = load_model(model_dir)

    def loader(name: str):
        return model if name == "tiny" else load_model(name)

    return Callbacks(EditorState(loader=loader, workdir=tmp_path))


def values(alpha_max=1.0, upload=None, model="tiny", seed=0) -> list:
    from eigenedit.apps.ui import CONTROL_NAMES, N_SLIDERS

    controls = dict(model=model, head="merged", fold_norm=False, first=0, seed=seed, steps=2)
    return [controls.get(name) for name in CONTROL_NAMES] + [alpha_max, upload, 0.5] + [0.0] * (N_SLIDERS - 1)


def test_13_ui_errors_go_to_the_status_line(callbacks, adm_dir, tmp_path):
    for bad, message in [
        (values(alpha_max=float("nan")), "finite"),
        (values(alpha_max="x"), "number"),
        (values(seed=-1), "seed -1"),
        (values(seed=[1]), "seed"),
        (values(model="a" * 300), "too long"),
        (values(model=str(adm_copy(adm_dir, tmp_path, num_heads=3, num_head_channels=-1))), "num_heads 3"),
    ]:
        for handler in (callbacks.refresh, callbacks.preview):
            out = handler(*bad)
            assert out[0] is None and out[2].startswith("**Error:**") and message in out[2], (message, out[2])
    assert "rendered in" in callbacks.preview(*values())[2]  # and a normal request still works


def test_13_ui_uploads_are_capped(callbacks, tmp_path, monkeypatch):
    from eigenedit.apps import ui

    picture = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(picture)
    monkeypatch.setattr(ui, "MAX_UPLOAD_BYTES", picture.stat().st_size - 1)
    assert "at most" in callbacks.preview(*values(upload=str(picture)))[2]
    monkeypatch.setattr(ui, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    assert "megapixels" in callbacks.preview(*values(upload=np.zeros((64, 64, 3), np.uint8)))[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_13_ui_removes_its_temporary_files_when_stopped(model_dir, tmp_path):
    pytest.importorskip("gradio")
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(temp), OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GRADIO_TEMP_DIR", None)
    command = [sys.executable, "-m", "eigenedit.apps.cli", "ui", "--model", model_dir, "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert any(b"eigenedit ui: model" in line for line in iter(server.stdout.readline, b""))  # serving
        boundary = "x" * 16
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + b"\x89PNG"
            + os.urandom(4096)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/gradio_api/upload",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        for _ in range(50):  # the upload route can lag the first line by a moment
            try:
                uploaded = json.load(urllib.request.urlopen(request, timeout=30))
                break
            except OSError:
                time.sleep(0.2)
        assert str(temp) in uploaded[0]  # the upload is in our temporary folder (moved there in the background)
        for _ in range(50):
            if Path(uploaded[0]).is_file():
                break
            time.sleep(0.2)
        assert Path(uploaded[0]).is_file()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert list(temp.iterdir()) == []  # and gone once the server stopped


# -- 14: animations and multi-page files ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gif", ".tiff"])
def test_14_only_the_first_frame_is_used_and_said(model_dir, tmp_path, capsys, suffix):
    frames = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(3)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert edit(model_dir, tmp_path / "o.png", "--image", path) == 0
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("eigenedit: note: ") and "3 frames" in lines[0]
