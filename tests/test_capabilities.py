"""Every model adapter declares the capabilities of ``eigenedit.core.model.EditableModel``; core and the apps read
those declarations instead of probing a model for attributes."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from eigenedit.core.model import EditableModel, FlowModel
from eigenedit.models import DiffusionModel
from eigenedit.models.pipelines import FAMILIES, FluxModel, StableDiffusion3Model
from eigenedit.models.stable_diffusion import StableDiffusionModel
from eigenedit.models.terrain import TerrainModel

from .conftest import run

PACKAGE = Path(__file__).resolve().parent.parent / "eigenedit"
ADAPTERS = [DiffusionModel, StableDiffusionModel, TerrainModel, *FAMILIES.values()]


def members(protocol: type) -> set[str]:
    """The attributes and methods a protocol names (its own and its bases')."""
    names = set()
    for cls in protocol.__mro__:
        if cls is object or not getattr(cls, "_is_protocol", False) or cls.__name__ == "Protocol":
            continue
        names |= set(getattr(cls, "__annotations__", {})) | {n for n in vars(cls) if not n.startswith("_")}
    return names


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda c: c.__name__)
def test_every_adapter_implements_the_protocol(adapter):
    fields = {f.name for f in dataclasses.fields(adapter)}
    protocol = FlowModel if adapter.flow_matching else EditableModel
    missing = {name for name in members(protocol) if name not in fields and not hasattr(adapter, name)}
    assert not missing, f"{adapter.__name__} lacks {sorted(missing)}"
    assert {"attention_weights", "attention_layers", "set_prompt", "check_edit_location"} <= members(FlowModel)


def test_the_capabilities_say_what_each_adapter_is():
    flow = {cls for cls in ADAPTERS if cls.flow_matching}
    conditional = {cls for cls in ADAPTERS if cls.conditional}
    assert flow == {StableDiffusion3Model, FluxModel}
    assert conditional == {StableDiffusionModel, *FAMILIES.values()}
    assert all(cls.default_guidance is not None for cls in conditional)
    assert all(cls.default_guidance is None for cls in set(ADAPTERS) - conditional)


def capability_probes(folder: Path) -> list[str]:
    """hasattr/getattr calls on a model (``model``, ``self.model``, ``model.unet``, ...) in a package folder."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
            ):
                target = ast.unparse(node.args[0]) if node.args else ""
                if target == "model" or target.startswith(("model.", "self.model")):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_core_and_apps_read_declared_capabilities_instead_of_probing():
    assert capability_probes(PACKAGE / "core") == []
    assert capability_probes(PACKAGE / "apps") == []
    probe = ast.parse("if hasattr(model, 'set_prompt'): pass")  # the finder sees a probe
    assert any(isinstance(n, ast.Call) and ast.unparse(n.args[0]) == "model" for n in ast.walk(probe))


def test_difficulty_is_a_declared_capability(model_dir, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert run("sweep", "--model", model_dir, "-k", "1", "--steps", "2", "--difficulty", "5", "-o", out) == 2
    err = capsys.readouterr().err
    assert "--difficulty needs the terrain model" in err and err.count("\n") == 1 and not out.exists()

    class Unet:  # the terrain UNet's difficulty input, without loading the terrain model
        difficulty = 50

    model = TerrainModel(Unet(), None, "terrain128")
    model.set_difficulty(7)
    assert model.unet.difficulty == 7
