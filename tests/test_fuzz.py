"""Fuzzing the command line with garbled files, random arguments and hostile output paths, and the web UI's HTTP API
with garbage requests: every outcome is success with a complete file, or exit code 2 with one error line and no
file written or replaced; never a traceback. Deterministic (derandomized hypothesis)."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eigenedit.apps.cli import main
from eigenedit.core.directions import FORMAT

hypothesis = pytest.importorskip("hypothesis", reason="fuzz tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OUTCOMES: dict[str, list[int]] = {}  # exit codes per fuzz target, to check that both outcomes were reached


@pytest.fixture(scope="module")
def good(model_dir, tmp_path_factory) -> dict[str, bytes]:
    """Valid files to garble: a PNG, a directions file, an eigenedit.json."""
    folder = tmp_path_factory.mktemp("good")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    assert main(["directions", "--model", str(model_dir), "-k", "3", "-o", str(folder / "d.safetensors")]) == 0
    defaults = {"layer": "mid_block.attentions.0", "location": "mid_block", "t_edit": 400, "alphas": [-1, 1]}
    return {
        "png": buffer.getvalue(),
        "directions": (folder / "d.safetensors").read_bytes(),
        "eigenedit.json": json.dumps(defaults).encode(),
    }


def outcome(args: list, out: Path, capsys, target: str) -> int:
    """Run ``eigenedit ARGS`` and check the contract; returns the exit code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    lines = [seg.split("\r")[-1] for seg in err.split("\n")]
    lines = [line for line in lines if line.strip() and not line.startswith("eigenedit: note: ")]
    lines = [line for line in lines if not line.startswith("eigenedit: warning: ")]
    assert "Traceback" not in err
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert leftovers == [], leftovers  # no partial file
    if code == 0:
        assert lines == [], err
        if out.suffix == ".png" and out.exists():
            Image.open(out).load()  # complete
    else:
        assert code == 2, (code, err)
        assert len(lines) == 1 and ": error: " in lines[0], err
        assert not out.exists()
    OUTCOMES.setdefault(target, []).append(code)
    return code


def mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Truncate at ``cut`` (a fraction of the length, in 0..1000) and overwrite bytes at the given positions."""
    out = bytearray(data[: len(data) * cut // 1000])
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


garble = st.tuples(
    st.integers(0, 1000) | st.just(1000),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=4),
)


@FUZZ
@given(garble)
def test_garbled_png(model_dir, good, tmp_path, capsys, case):
    image, out = tmp_path / "in.png", tmp_path / "out.png"
    out.unlink(missing_ok=True)
    image.write_bytes(mutate(good["png"], *case))
    if outcome(["edit", "--model", model_dir, "--image", image, "--steps", "1", "-o", out], out, capsys, "png") == 0:
        assert out.is_file()


@FUZZ
@given(garble)
def test_garbled_directions_file(model_dir, good, tmp_path, capsys, case):
    dfile, out = tmp_path / "d.safetensors", tmp_path / "out.png"
    out.unlink(missing_ok=True)
    dfile.write_bytes(mutate(good["directions"], *case))
    outcome(["edit", "--model", model_dir, "--directions", dfile, "--steps", "1", "-o", out], out, capsys, "dirs")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
metadata_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.just("tiny"),
        "layer": json_values | st.just("mid_block.attentions.0"),
        "decomposition": json_values | st.just("qk"),
        "labels": json_values | st.lists(st.text(max_size=4), min_size=3, max_size=3),
        "head": json_values,
        "fold_norm": json_values,
    },
)


@FUZZ
@given(
    st.one_of(metadata_fields.map(json.dumps), json_values.map(json.dumps), st.text(max_size=30)),
    st.sampled_from(["fine", "nan", "int", "half", "1d", "empty"]),
)
def test_directions_metadata(model_dir, tmp_path, capsys, metadata, tensors):
    from safetensors.torch import save_file

    vectors, values = torch.nn.functional.normalize(torch.randn(3, 16), dim=1), torch.ones(3)
    if tensors == "nan":
        vectors[1, 2] = float("nan")
    elif tensors == "int":
        vectors = vectors.round().to(torch.int32)
    elif tensors == "half":
        vectors = vectors.half()
    elif tensors == "1d":
        vectors = vectors[0]
    elif tensors == "empty":
        vectors, values = vectors[:0], values[:0]
    dfile, out = tmp_path / "d.safetensors", tmp_path / "out.png"
    out.unlink(missing_ok=True)
    save_file({"vectors": vectors, "values": values}, dfile, metadata={"format": FORMAT, "metadata": metadata})
    args = ["edit", "--model", model_dir, "--directions", dfile, "--steps", "1", "--force", "-o", out]
    outcome(args, out, capsys, "metadata")


edit_defaults = st.fixed_dictionaries(
    {},
    optional={
        key: json_values | st.just(value)
        for key, value in {
            "layer": "mid_block.attentions.0",
            "location": "mid_block",
            "decomposition": "ov-left",
            "t_edit": 300,
            "alphas": [-2, 0, 2],
            "steps": 3,
        }.items()
    },
)


@FUZZ
@given(st.one_of(edit_defaults.map(json.dumps).map(str.encode), garble.map(lambda c: ("mutate", c))))
def test_eigenedit_json(model_dir, good, tmp_path, capsys, content):
    folder, out = tmp_path / "m", tmp_path / "out.png"
    out.unlink(missing_ok=True)
    if not folder.exists():
        shutil.copytree(model_dir, folder)
    if isinstance(content, tuple):
        content = mutate(good["eigenedit.json"], *content[1])
    (folder / "eigenedit.json").write_bytes(content)
    args = ["sweep", "--model", folder, "-k", "1", "--steps", "1", "--scale", "1", "-o", out]
    outcome(args, out, capsys, "eigenedit.json")


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


adm_fields = st.dictionaries(
    st.sampled_from(
        ["image_size", "model_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "num_heads"]
        + ["num_head_channels", "dropout", "use_scale_shift_norm", "in_channels", "bogus"]
    ),
    json_values | st.integers(-3, 5000) | st.lists(st.integers(-1, 5000), max_size=5),
    max_size=3,
)


@FUZZ
@given(st.one_of(adm_fields, garble, st.sampled_from(["[]", "{}", '{"unet": 3}', '{"unet": {}, "weights": 5}'])))
def test_adm_config(adm_dir, tmp_path, capsys, change):
    folder, out = tmp_path / "adm", tmp_path / "layers.txt"
    if not folder.exists():
        shutil.copytree(adm_dir, folder)
    original = (adm_dir / "adm_config.json").read_text()
    if isinstance(change, dict):
        meta = json.loads(original)
        meta["unet"].update(change)
        text = json.dumps(meta).encode()
    elif isinstance(change, tuple):
        text = mutate(original.encode(), *change)
    else:
        text = change.encode()
    (folder / "adm_config.json").write_bytes(text)
    outcome(["layers", "--model", folder], out, capsys, "adm_config.json")


OPTIONS = {  # option: (valid values, invalid values)
    "--model": (["MODEL"], ["no-such-model", "", "a/b/c", "DIR"]),
    "--layer": (["mid_block.attentions.0", "down_blocks.1.attentions.0"], ["x", ""]),
    "--decomposition": (["qk", "ov-left", "ov-right", "qkv", "random"], ["nope"]),
    "--head": (["0", "1"], ["7", "-1", "x"]),
    "--steps": (["1", "2"], ["0", "-3", "1e3", "x"]),
    "--t-edit": (["0", "500", "1000"], ["-5", "99999", "x"]),
    "--location": (["mid_block", "mid_block.attentions.0"], ["conv_in", "nowhere", ""]),
    "--seed": (["0", "7"], ["-1", "18446744073709551616", "x"]),
    "--scale": (["1", "2"], ["0", "x"]),
    "--edit": (["0:1", "1:-0.5", "0:40", "0:1e30"], ["0:nan", "99:1", "x", "0:"]),
    "--alphas=": (["-1,0,1", "0", "1e30"], ["nan", "", ",", "1e400"]),
    "-k": (["1", "2"], ["0", "9999", "x"]),
    "--image": (["IMAGE"], ["missing.png", "DIR", "DIRS"]),
    "--directions": (["DIRS"], ["missing.safetensors", "IMAGE", "DIR"]),
    "--resize": (["center-crop", "pad", "stretch", "none"], ["fill"]),
    "--guidance": (["7"], ["-1", "nan"]),
    "--difficulty": (["5"], ["0"]),
    "--prompt": (["a cat"], []),
    "--fold-norm": ([None], []),
    "--asymmetric": ([None], []),
    "--compare": ([None], []),
    "--force": ([None], []),
}
COMMON = {"--model"}
DIRS = COMMON | {"--layer", "--decomposition", "--head", "--fold-norm", "--directions", "--force"}
SAMPLING = {"--seed", "--image", "--steps", "--t-edit", "--location", "--asymmetric", "--scale", "--resize"}
SAMPLING |= {"--difficulty", "--prompt", "--guidance"}
ACCEPTS = {
    "layers": COMMON,
    "directions": DIRS | {"-k"},
    "edit": DIRS | SAMPLING | {"--edit", "--compare"},
    "sweep": DIRS | SAMPLING | {"-k", "--alphas="},
    "invert": COMMON | SAMPLING,
    "batch": COMMON
    | {"--directions", "--edit", "--steps", "--t-edit", "--location", "--asymmetric", "--scale"}
    | {"--resize", "--force"},
    "frobnicate": COMMON,
}


@st.composite
def command_lines(draw) -> tuple[str, list[tuple[str, str | None]]]:
    """A command and up to 4 options: mostly ones it accepts with valid values, sometimes anything."""
    command = draw(st.sampled_from(sorted(ACCEPTS)))
    accepted, everything = st.sampled_from(sorted(ACCEPTS[command])), st.sampled_from(sorted(OPTIONS))
    options = []
    for _ in range(draw(st.integers(0, 4))):
        option = draw(st.one_of(accepted, accepted, accepted, everything))
        valid, invalid = OPTIONS[option]
        pool = [st.sampled_from(valid)] * 4 + ([st.sampled_from(invalid)] if invalid else [])
        options.append((option, draw(st.one_of(pool))))
    return command, options


@settings(FUZZ, max_examples=80)
@given(command_lines())
def test_random_command_lines(model_dir, good, tmp_path, capsys, line):
    command, options = line
    image, dfile = tmp_path / "in.png", tmp_path / "d.safetensors"
    image.write_bytes(good["png"])
    dfile.write_bytes(good["directions"])
    names = {"MODEL": model_dir, "IMAGE": image, "DIRS": dfile, "DIR": tmp_path}
    out = tmp_path / ("out" if command == "batch" else "out.png")
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    given_options = {o for o, _ in options}
    args = [command]
    if "--model" not in given_options:
        args += ["--model", model_dir]
    for option, value in options:
        value = None if value is None else str(names.get(value, value))
        args += [option] if value is None else [option + value] if option.endswith("=") else [option, value]
    if command == "batch":
        args += ["--seeds", "0", "--cpu"] + ([] if "--directions" in given_options else ["--directions", dfile])
    if command in ("edit", "sweep", "invert", "batch"):
        args += ["-o", out] + ([] if "--steps" in given_options else ["--steps", "1"])
    if command == "sweep" and "-k" not in given_options:
        args += ["-k", "2"]
    if outcome(args, out, capsys, "cli") == 0 and command in ("edit", "sweep", "invert", "batch"):
        assert (out / "manifest.jsonl").is_file() if command == "batch" else out.is_file()


# -- output paths: special files, links, long names, suffixes ----------------------------------------------------

SUFFIX_FORMATS = {".png": "PNG", ".PNG": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
PATH_KINDS = ["new", "file", "fifo", "socket", "folder", "char device", "link to file", "link to nothing"]
PATH_KINDS += ["link to folder", "link to fifo", "link loop", "in a missing folder", "in a file", "/proc", "/sys"]


def make_output(folder: Path, kind: str, name: str) -> Path:
    """The output path ``name`` in ``folder`` as ``kind`` (what exists there before the command runs)."""
    path = folder / name
    if kind == "/proc":
        return Path("/proc") / name
    if kind == "/sys":
        return Path("/sys") / name
    if kind == "in a missing folder":
        return folder / "missing" / name
    if kind == "in a file":
        (folder / "afile").write_text("x")
        return folder / "afile" / name
    if kind in ("file", "link to file"):
        (folder / "target").write_bytes(b"old")
    elif kind in ("fifo", "link to fifo"):
        os.mkfifo(folder / "target")
    elif kind in ("folder", "link to folder"):
        (folder / "target").mkdir()
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(folder / "target"))
    elif kind == "char device":  # what /dev/null is (created here only as root)
        os.mknod(folder / "target", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    if kind.startswith("link"):
        path.symlink_to(path if kind == "link loop" else folder / "target")
    elif kind != "new":
        (folder / "target").rename(path)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(file type, inode) of everything in ``folder`` (links not followed)."""
    return {p.name: (stat.S_IFMT(p.lstat().st_mode), p.lstat().st_ino) for p in folder.iterdir()}


@settings(FUZZ, max_examples=60)
@given(
    st.sampled_from(PATH_KINDS),
    st.sampled_from([*SUFFIX_FORMATS, ".gif", ".txt", "", ".png/", "/"]),
    st.integers(1, 300) | st.sampled_from([1, 4, 8]),
    st.sampled_from(["", "-", "x.png/"]) | st.just(None),
)
def test_output_paths(model_dir, tmp_path_factory, capsys, kind, suffix, length, special):
    if kind == "char device" and os.geteuid() != 0:
        kind = "fifo"
    folder = tmp_path_factory.mktemp("out")
    name = special if special is not None else "o" * length + suffix
    if len(name) > 200 and kind not in ("/proc", "/sys"):
        kind = "new"  # nothing of that name can be made to be there
    out = make_output(folder, kind, name) if special is None else Path(name)
    before = snapshot(folder)
    given_text = str(out) + ("/" if name.endswith("/") and not str(out).endswith("/") else "")
    args = ["edit", "--model", model_dir, "--steps", "1", "--scale", "1", "--edit", "0:0.5", "-o", given_text]
    cwd = os.getcwd()
    os.chdir(folder)  # relative names ("-") land in the folder
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.split("\n")]
    lines = [line for line in lines if line.strip() and not line.startswith("eigenedit: warning: ")]
    assert "Traceback" not in err
    assert not [p for p in folder.rglob("*.tmp")], "a temporary file was left behind"
    after = snapshot(folder)
    if code == 0:
        assert lines == [], err
        written = Path(os.path.realpath(folder / given_text))
        assert written.is_file() and not written.is_symlink()
        suffix = Path(given_text).suffix  # the name given picks the format (a link's target gets it)
        assert suffix in SUFFIX_FORMATS, f"wrote {written} although {given_text!r} names no image format"
        with Image.open(written) as img:
            assert img.format == SUFFIX_FORMATS[suffix]
        for entry, (mode, _) in before.items():  # links stay links; a file replaced stays a file
            assert stat.S_IFMT(mode) in (stat.S_IFREG, stat.S_IFLNK) and after[entry][0] == mode, (kind, entry)
    else:
        assert code == 2, (code, err)
        assert len(lines) == 1 and lines[0].startswith("eigenedit: error: "), err
        assert after == before, f"{kind} {name!r}: the folder changed although the command failed"
    OUTCOMES.setdefault("output paths", []).append(code)


# -- the web UI's HTTP API: garbage bodies, wrong types, oversized uploads ---------------------------------------

UPLOAD_LIMIT = 64 * 1024  # the server's upload limit in this test (the real one, MAX_UPLOAD_BYTES, is 64 MB)
ESCAPED: list[str] = []  # exceptions that escaped a UI handler (they should all be status lines)


@pytest.fixture(scope="module")
def ui_server(model_dir, tmp_path_factory):
    """The UI (tiny model) served from this process on a free port, its handlers watched for escaping errors."""
    pytest.importorskip("gradio")
    from eigenedit.apps import ui
    from eigenedit.models import load_model

    model = load_model(model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setattr(ui, "MAX_UPLOAD_BYTES", UPLOAD_LIMIT)
        for name in ("refresh", "preview", "model_changed", "operator_changed", "layer_changed", "label"):
            mp.setattr(ui.Callbacks, name, watched(getattr(ui.Callbacks, name)))
        state = ui.EditorState(loader=lambda name: model if name == "tiny" else load_model(name))
        demo = ui.build_app(state, "tiny", 1)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ui.serve(demo, "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            demo.close()
            state.close()


def watched(handler):
    @functools.wraps(handler)  # gradio names the API endpoints after the handlers
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            ESCAPED.append(f"{handler.__name__}: {type(err).__name__}: {err}"[:300])
            raise

    return wrapper


def http(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, bytes]:
    """(status, body) of a request; an HTTP error status is an answer too."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def call(base: str, endpoint: str, body: bytes) -> tuple[int, str]:
    """POST a call of ``endpoint`` and read its result stream: (HTTP status, the event stream or the error)."""
    status, answer = http(f"{base}/gradio_api/call/{endpoint}", body)
    if status != 200:
        return status, answer.decode(errors="replace")
    status, stream = http(f"{base}/gradio_api/call/{endpoint}/{json.loads(answer)['event_id']}")
    return status, stream.decode(errors="replace")


def widget_values(**change) -> list:
    from eigenedit.apps.ui import CONTROL_NAMES, N_SLIDERS

    controls = dict(model="tiny", layer="mid_block.attentions.0", decomposition="qk", head="merged", fold_norm=False)
    controls |= dict(first=0, seed=0, steps=1, t_edit=500, location="mid_block", operator="shift")
    values = [controls[name] for name in CONTROL_NAMES] + [1.0, None, 0.5] + [0.0] * (N_SLIDERS - 1)
    for index, value in change.items():
        values[int(index[1:])] = value
    return values


def multipart(content: bytes, filename: str = "a.png") -> tuple[bytes, str]:
    boundary = "eigenedit-fuzz-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n\r\n'
    return head.encode() + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def normal_request_works(base: str) -> None:
    status, stream = call(base, "preview", json.dumps({"data": widget_values()}).encode())
    assert status == 200 and "event: complete" in stream and "rendered in" in stream, stream[-500:]


requests = st.one_of(
    st.binary(max_size=200).map(lambda b: ("call", b)),
    json_values.map(lambda v: ("call", json.dumps(v).encode())),
    st.lists(json_values, max_size=20).map(lambda v: ("call", json.dumps({"data": v}).encode())),
    st.tuples(st.integers(0, 17), json_values | st.sampled_from([float("nan"), -1, 2**70, "a" * 300])).map(
        lambda c: ("call", json.dumps({"data": widget_values(**{f"i{c[0]}": c[1]})}).encode())
    ),
    st.tuples(st.binary(max_size=2000), st.booleans()).map(lambda c: ("upload", *c)),
    st.integers(UPLOAD_LIMIT + 1, 4 * UPLOAD_LIMIT).map(lambda n: ("oversized", n)),
    st.binary(max_size=300).map(lambda b: ("bad multipart", b)),
)


@settings(FUZZ, max_examples=40)
@given(requests)
def test_ui_http_api(ui_server, request):
    base, kind = ui_server, request[0]
    ESCAPED.clear()
    if kind == "call":
        status, stream = call(base, "preview", request[1])
        assert status < 500, (status, stream[-300:])
        if status == 200:
            assert "event: complete" in stream or "event: error" in stream, stream[-300:]
    elif kind == "upload":  # a file of any bytes, then edited: an error in the status line, or an edit
        content = request[1] if not request[2] else png_bytes()
        status, answer = http(f"{base}/gradio_api/upload", *multipart(content))
        assert status == 200, answer[-300:]
        upload = {"path": json.loads(answer)[0], "meta": {"_type": "gradio.FileData"}}
        status, stream = call(base, "preview", json.dumps({"data": widget_values(i12=upload)}).encode())
        assert status == 200, stream[-300:]  # gradio refuses what it cannot decode ("error"), or we render it
        if request[2]:
            assert "event: complete" in stream and "uploaded image" in stream, stream[-300:]
    elif kind == "oversized":
        status, answer = http(f"{base}/gradio_api/upload", *multipart(os.urandom(request[1])))
        assert status == 413, (status, answer[-300:])
    else:
        body = b"--x\r\n" + request[1]
        status, _ = http(f"{base}/gradio_api/upload", body, "multipart/form-data; boundary=x")
        assert status < 500
    assert ESCAPED == [], ESCAPED  # every error of ours reached the status line
    normal_request_works(base)  # and the server still answers a normal request


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_target_reached_both_outcomes():
    """The fuzzers above ran (same process) and produced successes as well as refusals, so they test something."""
    if not OUTCOMES:
        pytest.skip("run together with the fuzz tests above")
    for target, codes in OUTCOMES.items():
        assert 2 in codes, target
    assert 0 in OUTCOMES.get("cli", [0]) and 0 in OUTCOMES.get("png", [0])
