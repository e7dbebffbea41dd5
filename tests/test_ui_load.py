"""The web UI under load: concurrent sessions never see each other's images, and every cache is bounded."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from diffusers import DDIMScheduler

from eigenedit.apps.ui import FILE_CACHE, EditorState, View
from eigenedit.models import DiffusionModel

from .conftest import tiny_unet

pytest.importorskip("gradio", reason='the web UI needs gradio (pip install "eigenedit[ui]")')

STEPS = 2
LAYERS = ("mid_block.attentions.0", "down_blocks.1.attentions.0", "up_blocks.0.attentions.0")


@pytest.fixture(scope="module")
def models() -> dict[str, DiffusionModel]:
    """Two different tiny models, so sessions can also differ by model."""
    schedulers = [DDIMScheduler(num_train_timesteps=1000) for _ in range(2)]
    return {f"tiny{i}": DiffusionModel(tiny_unet(i), schedulers[i], f"tiny{i}") for i in (0, 1)}


def state_for(models: dict, workdir) -> EditorState:
    workdir.mkdir(exist_ok=True)
    return EditorState(loader=lambda name: models[name], workdir=workdir)


def widget_values(model: str, seed: int, layer: str, alphas: list[float]) -> list:
    """The gradio inputs of one session's slider move (CONTROL_NAMES order, as the page sends them)."""
    from eigenedit.apps.ui import CONTROL_NAMES, N_SLIDERS

    controls = dict(model=model, layer=layer, head="merged", fold_norm=False, first=0, seed=seed, steps=STEPS)
    return [controls.get(name) for name in CONTROL_NAMES] + [2.0, None, *alphas, *[0.0] * (N_SLIDERS - len(alphas))]


def session_moves(model: str, seed: int, layer: str, n: int = 8) -> list[list]:
    """One session dragging its first slider through n positions."""
    return [widget_values(model, seed, layer, [round(-2 + 4 * i / (n - 1), 3), 0.5]) for i in range(n)]


def pixels(out: tuple) -> tuple[np.ndarray, np.ndarray]:
    plain, edited, status, _ = out
    assert plain is not None, status
    return np.asarray(plain), np.asarray(edited)


def test_sessions_at_once_get_only_their_own_images(models, tmp_path):
    from eigenedit.apps.ui import Callbacks

    sessions = {
        "a": session_moves("tiny0", seed=1, layer=LAYERS[0]),
        "b": session_moves("tiny0", seed=2, layer=LAYERS[1]),  # the same model: its UNet and scheduler are shared
        "c": session_moves("tiny1", seed=1, layer=LAYERS[0]),  # another model at the same time
    }
    reference = Callbacks(state_for(models, tmp_path / "ref"))  # each move rendered alone, one at a time
    expected = {name: [pixels(reference.preview(*values)) for values in moves] for name, moves in sessions.items()}
    assert not np.array_equal(expected["a"][0][1], expected["b"][0][1])  # the sessions' images differ
    assert not np.array_equal(expected["a"][0][1], expected["a"][-1][1])  # and moving the slider changes them

    shared = Callbacks(state_for(models, tmp_path / "shared"))  # one server, two sessions moving at once
    got: dict[str, list] = {name: [] for name in sessions}
    start, errors = threading.Barrier(len(sessions)), []

    def drag(name: str) -> None:
        try:
            start.wait()
            for _ in range(2):  # twice: the second pass is served from the caches while the other session renders
                for values in sessions[name]:
                    got[name].append(pixels(shared.preview(*values)))
        except Exception as err:  # reported below; a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=drag, args=(name,)) for name in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for name in sessions:
        assert len(got[name]) == 2 * len(expected[name])
        for (plain, edited), (want_plain, want_edited) in zip(got[name], expected[name] * 2, strict=True):
            assert np.array_equal(plain, want_plain) and np.array_equal(edited, want_edited), name


def test_caches_and_files_stay_bounded(models, tmp_path):
    state = state_for(models, tmp_path)
    for i in range(2 * FILE_CACHE + 10):
        view = View(model=f"tiny{i % 2}", layer=LAYERS[i % 3], seed=i, steps=1, decomposition="qk")
        preview = state.render(view, [1.0 + i / 100])
        state.image_file(preview.edited)
        state.directions_file(view)
    caches = {name: cache for name, cache in vars(state).items() if hasattr(cache, "get_or_make")}
    assert {"_models", "_directions", "_noise", "_plain", "_labels", "_files", "_images"} <= set(caches)
    for name, cache in caches.items():
        assert len(cache) <= cache.size, name
    assert len(state._plain) == state._plain.size  # the plain-image cache filled up and evicted
    assert len(list(tmp_path.glob("edited-*.png"))) == FILE_CACHE  # older downloads deleted from disk
    assert len(list(tmp_path.glob("*.safetensors"))) <= FILE_CACHE
