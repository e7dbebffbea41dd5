"""Real-world inputs and guard rails: image conversion and resizing, edit strength, directions provenance."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eigenedit.apps.guards import model_identity
from eigenedit.core.directions import Directions
from eigenedit.imaging import MAX_IMAGE_PIXELS, read_image
from eigenedit.models import SHIPPED_MODELS

from .conftest import run

RGB16, GREY16 = (3, 16, 16), (1, 16, 16)


def one_line(err: str, kind: str = "error") -> str:
    """The single stderr line (progress bars aside), checked to be of ``kind``."""
    lines = [line.split("\r")[-1] for line in err.split("\n")]  # what a terminal shows: bars overwritten
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"eigenedit: {kind}: "), err
    return lines[0]


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says ``width`` x ``height`` (what a decompression bomb looks like to a reader)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# -- images -----------------------------------------------------------------------------------------------------


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red left half, fully transparent (black) right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels, note = read_image(tmp_path / "a.png", RGB16)
    assert note == "converted from RGBA (composited on white) to RGB"
    assert pixels[0, :, :, 8:].eq(1).all()  # white, not black
    assert pixels[0, 0, :, :8].eq(1).all() and pixels[0, 1:, :, :8].eq(-1).all()  # red stays red


def test_palette_with_transparency_and_grey_alpha(tmp_path):
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0])
    pal.info["transparency"] = 1
    pal.save(tmp_path / "p.png", transparency=1)
    pixels, note = read_image(tmp_path / "p.png", RGB16)
    assert "composited on white" in note and pixels.eq(1).all()
    Image.new("LA", (16, 16), (0, 255)).save(tmp_path / "la.png")
    pixels, note = read_image(tmp_path / "la.png", GREY16)
    assert note == "converted from LA (composited on white) to L" and pixels.eq(-1).all()  # opaque black


def test_grey_and_colour_are_turned_into_the_models_channels(tmp_path):
    Image.new("L", (16, 16), 200).save(tmp_path / "g.png")
    pixels, note = read_image(tmp_path / "g.png", RGB16)
    assert pixels.shape == (1, 3, 16, 16) and note == "converted from L to RGB"
    assert torch.equal(pixels[:, 0], pixels[:, 2])
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "c.png")
    pixels, note = read_image(tmp_path / "c.png", GREY16)
    assert pixels.shape == (1, 1, 16, 16) and note == "converted from RGB to L"
    assert pixels.unique().item() == pytest.approx(76 / 127.5 - 1)  # ITU-R 601 luma of pure red
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg", RGB16)[0].min() > 0.9  # CMYK white


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 65535]] * 4, np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels, note = read_image(tmp_path / "deep.png", (1, 4, 4))
    assert note.startswith("converted from I")
    assert pixels[0, 0, 0].tolist() == pytest.approx([-1, 128 / 127.5 - 1, 1, 1], abs=1e-6)


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.fromarray(np.arange(16 * 8 * 3, dtype=np.uint8).reshape(8, 16, 3))  # 16 wide, 8 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    img.save(tmp_path / "photo.png", exif=exif)
    pixels, note = read_image(tmp_path / "photo.png", (3, 16, 8), resize="none")  # shown 8 wide, 16 high
    assert note == ""
    want = np.asarray(img.transpose(Image.Transpose.ROTATE_270), np.float32)
    assert torch.allclose(pixels[0].permute(1, 2, 0), torch.from_numpy(want) / 127.5 - 1)


@pytest.mark.parametrize("resize", ["center-crop", "pad", "stretch"])
def test_resize_modes(tmp_path, resize):
    arr = np.zeros((16, 48, 3), np.uint8)  # three 16x16 squares side by side: red, green, blue
    arr[:, :16, 0], arr[:, 16:32, 1], arr[:, 32:, 2] = 255, 255, 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    pixels, note = read_image(tmp_path / "wide.png", RGB16, resize)
    assert pixels.shape == (1, 3, 16, 16) and note == f"resized from 48x16 to 16x16 ({resize})"
    mean = pixels[0].mean(dim=(1, 2))
    if resize == "center-crop":  # the middle square only
        assert mean[1] > 0.9 and mean[0] < -0.9 and mean[2] < -0.9
    elif resize == "stretch":  # all three, squeezed
        assert (mean > -0.5).all()
    else:  # all three in a 16x5 band; above and below, the mean edge colour
        band, border = pixels[0, :, 6:10], pixels[0, :, :4]
        assert (band.mean(dim=(1, 2)) > -0.5).all()
        assert torch.allclose(border, border[:, :1, :1].expand_as(border))


def test_resize_none_is_strict_and_names_the_way_out(tmp_path):
    Image.new("RGB", (20, 16)).save(tmp_path / "w.png")
    with pytest.raises(ValueError, match=r"is 20x16; the model needs 16x16 \(--resize center-crop"):
        read_image(tmp_path / "w.png", RGB16, "none")
    Image.new("RGBA", (16, 16)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="has mode RGBA; the model needs RGB"):
        read_image(tmp_path / "a.png", RGB16, "none")
    Image.new("RGB", (1, 2000)).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"cannot be resized \(pad\) from 1x2000 to 16x16"):
        read_image(tmp_path / "thin.png", RGB16, "pad")
    assert read_image(tmp_path / "thin.png", RGB16)[0].shape == (1, 3, 16, 16)  # center-crop copes


@pytest.mark.parametrize(
    "content, message",
    [
        (png_claiming(100_000, 100_000), "too large (10000 megapixels; at most 67 megapixels)"),
        (png_claiming(9000, 9000), "decompression bomb"),  # over our limit, under PIL's
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot read image"),
        (b"", "cannot read image"),
    ],
)
def test_unreadable_and_absurd_files_are_refused(tmp_path, capsys, model_dir, content, message):
    assert 9000 * 9000 > MAX_IMAGE_PIXELS
    path = tmp_path / "in.png"
    path.write_bytes(content)
    out = tmp_path / "out.png"
    assert run("edit", "--model", model_dir, "--image", path, "--steps", "1", "-o", out) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_cli_converts_a_photo_with_one_note(model_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 4), dtype=np.uint8), "RGBA").save(photo)
    out = tmp_path / "e.png"
    assert run("edit", "--model", model_dir, "--image", photo, "--steps", "2", "--scale", "1", "-o", out) == 0
    line = one_line(capsys.readouterr().err, "note")
    assert "converted from RGBA (composited on white) to RGB, resized from 64x40 to 16x16 (center-crop)" in line
    assert "--resize" in line and Image.open(out).size == (16, 16)
    assert run("invert", "--model", model_dir, "--image", photo, "--steps", "2", "-o", tmp_path / "i.png") == 0
    assert "resized from 64x40" in one_line(capsys.readouterr().err, "note")
    pad = tmp_path / "pad.png"
    args = ("--image", photo, "--steps", "2", "--scale", "1", "--resize", "pad", "-o", pad)
    assert run("edit", "--model", model_dir, *args) == 0
    assert not np.array_equal(np.asarray(Image.open(pad)), np.asarray(Image.open(out)))  # the mode matters
    assert run("edit", "--model", model_dir, "--image", photo, "--resize", "fill", "-o", tmp_path / "x.png") == 2


def test_batch_converts_images_and_records_how(model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGBA", (30, 20), (10, 200, 30, 128)).save(folder / "a.png")
    Image.new("RGB", (16, 16), (1, 2, 3)).save(folder / "b.png")
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "-o", dfile) == 0
    out = tmp_path / "out"
    args = ("batch", "--model", model_dir, "--directions", dfile, "--images", folder, "--edit", "0:1", "--cpu")
    capsys.readouterr()
    assert run(*args, "--steps", "2", "-o", out) == 0
    err = capsys.readouterr().err
    assert err.count("eigenedit: note:") == 1 and "a.png converted from RGBA" in err and "(and " not in err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["resize"] for r in records] == ["center-crop", "center-crop"]
    assert run(*args, "--steps", "2", "--resize", "stretch", "-o", out) == 0
    assert "0 already done, 2 to write" in capsys.readouterr().out  # another resize: other outputs


def test_ui_upload_is_converted_like_the_command_line(tmp_path):
    from eigenedit.apps.ui import prepare_image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 40, 4), dtype=np.uint8), "RGBA").save(photo)
    from_file, note = prepare_image(str(photo), RGB16)
    assert torch.equal(from_file, read_image(photo, RGB16)[0])
    assert note == "upload converted from RGBA (composited on white) to RGB, resized from 40x50 to 16x16 (center-crop)"
    from_pixels, _ = prepare_image(Image.open(photo), RGB16)
    assert torch.equal(from_pixels, from_file)


# -- strength ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("edit", "--edit", "0:1e30"), ("sweep", "-k", "1", "--alphas=0,-1e30"), ("edit", "--edit", "1:-3e25")]
)
def test_non_finite_edit_fails_without_a_file(model_dir, tmp_path, capsys, args):
    out = tmp_path / "out.png"
    assert run(*args, "--model", model_dir, "--steps", "2", "-o", out) == 2
    assert "non-finite values" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_batch_leaves_no_folder(model_dir, tmp_path, capsys):
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "-o", dfile) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    args = ("--directions", dfile, "--seeds", "0-1", "--edit", "0:1e30", "--steps", "2", "--cpu", "-o", out)
    assert run("batch", "--model", model_dir, *args) == 2
    assert "non-finite values" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_far_out_strength_warns_once(model_dir, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert run("edit", "--model", model_dir, "--edit", "0:50", "--steps", "2", "-o", out) == 0
    assert "alpha 50 is far outside this model's documented range (|alpha| <= 1)" in one_line(
        capsys.readouterr().err, "warning"
    )
    assert out.is_file()
    assert run("edit", "--model", model_dir, "--edit", "0:4", "--steps", "2", "-o", out) == 0
    assert "warning" not in capsys.readouterr().err  # within 5x the documented range


def test_ui_reports_a_non_finite_edit_in_the_status_line(model_dir, tmp_path):
    pytest.importorskip("gradio")
    from eigenedit.apps.ui import CONTROL_NAMES, N_SLIDERS, Callbacks, EditorState
    from eigenedit.models import load_model

    model = load_model(model_dir)
    cb = Callbacks(EditorState(loader=lambda name: model, workdir=tmp_path))
    controls = dict(model="tiny", head="merged", fold_norm=False, first=0, seed=0, steps=2)
    values = [controls.get(name) for name in CONTROL_NAMES] + [1e30, None, 1e30] + [0.0] * (N_SLIDERS - 1)
    plain, edited, status, png = cb.preview(*values)
    assert (plain, edited, png) == (None, None, None) and "non-finite values" in status


# -- directions provenance --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fashion") / "fashion.safetensors"
    assert run("directions", "--model", "fashion32", "-k", "4", "-o", path) == 0
    return path


def test_directions_of_another_model_with_the_same_width_are_refused(fashion_file, tmp_path, capsys):
    out = tmp_path / "out.png"
    capsys.readouterr()
    shift = ("--model", "shapes32", "--operator", "shift")  # alpha 1 is inside shift's documented range
    assert run("edit", "--directions", fashion_file, *shift, "--steps", "1", "-o", out) == 2  # shapes32: 128 channels
    line = one_line(capsys.readouterr().err)
    assert "made for model 'fashion32'" in line and "model in use is 'shapes32'" in line and "--force" in line
    assert not out.exists()
    assert run("edit", "--directions", fashion_file, *shift, "--steps", "2", "--force", "-o", out) == 0
    assert "--force: " in one_line(capsys.readouterr().err, "warning") and out.is_file()


def test_shipped_model_by_name_or_folder_is_the_same_model(tmp_path, capsys):
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", SHIPPED_MODELS["shapes32"], "-k", "2", "-o", dfile) == 0
    assert Directions.load(dfile).metadata["model"] == "shapes32"
    assert run("edit", "--model", "shapes32", "--directions", dfile, "--steps", "1", "-o", tmp_path / "o.png") == 0
    assert model_identity(str(SHIPPED_MODELS["fashion32"]) + "/") == "fashion32"
    assert model_identity("owner/name/") == "owner/name"


def test_relative_and_absolute_folders_are_the_same_model(model_dir, tmp_path, capsys, monkeypatch):
    local = tmp_path / "m"
    shutil.copytree(model_dir, local)
    monkeypatch.chdir(tmp_path)
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", "m", "-o", dfile) == 0
    assert Directions.load(dfile).metadata["model"] == str(local.resolve())
    assert run("edit", "--model", local, "--directions", dfile, "--steps", "2", "-o", tmp_path / "o.png") == 0
    assert run("edit", "--model", model_dir, "--directions", dfile, "--steps", "2", "-o", tmp_path / "p.png") == 2
    assert f"made for model '{local.resolve()}'" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layer", "down_blocks.1.attentions.0"], "holds layer 'mid_block.attentions.0', but layer"),
        (["--decomposition", "ov-left"], "holds decomposition 'qk', but decomposition 'ov-left' was asked for"),
        (["--head", "1"], "holds head None, but head 1 was asked for"),
    ],
)
def test_directions_of_another_layer_or_decomposition_are_refused(model_dir, tmp_path, capsys, flags, message):
    dfile = tmp_path / "d.safetensors"
    assert run("directions", "--model", model_dir, "--decomposition", "qk", "-o", dfile) == 0
    out = tmp_path / "o.png"
    assert run("edit", "--model", model_dir, "--directions", dfile, *flags, "--steps", "1", "-o", out) == 2
    assert message in one_line(capsys.readouterr().err) and not out.exists()
    assert run("edit", "--model", model_dir, "--directions", dfile, *flags, "--steps", "1", "--force", "-o", out) == 0


def test_files_without_provenance_get_a_clear_message(model_dir, tmp_path, capsys):
    old = tmp_path / "old.safetensors"
    Directions(torch.eye(3, 16), torch.ones(3), {}).save(old)  # what older versions or bare Python code wrote
    out = tmp_path / "o.png"
    assert run("edit", "--model", model_dir, "--directions", old, "--steps", "1", "-o", out) == 2
    line = one_line(capsys.readouterr().err)
    assert "has no model/layer/decomposition in its metadata" in line and "--force" in line and not out.exists()
    assert run("edit", "--model", model_dir, "--directions", old, "--steps", "1", "--force", "-o", out) == 0


def test_force_still_needs_fitting_dimensions(model_dir, tmp_path, capsys):
    wide = tmp_path / "wide.safetensors"
    Directions(torch.eye(3, 7), torch.ones(3), {"model": "other", "layer": "x", "decomposition": "qk"}).save(wide)
    assert run("edit", "--model", model_dir, "--directions", wide, "--force", "-o", tmp_path / "o.png") == 2
    assert "7-dimensional directions" in one_line(capsys.readouterr().err)


def test_batch_checks_provenance_too(fashion_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("batch", "--directions", fashion_file, "--seeds", "0", "--edit", "0:1", "--steps", "1", "--cpu")
    assert run(*args, "-o", out) == 2
    assert "made for model 'fashion32'" in one_line(capsys.readouterr().err) and not out.exists()
    assert run(*args, "--force", "-o", out) == 0
    assert len(list(out.glob("*.png"))) == 1
