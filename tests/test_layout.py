"""The package layout follows the pipeline: layers import only downward (also under TYPE_CHECKING), and no module
imports one that imports it back."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "eigenedit"


def import_graph() -> dict[str, set[str]]:
    """Module -> eigenedit modules it imports anywhere (top level or inside functions)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eigenedit"):
                deps.add(node.module)
                deps.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name.startswith("eigenedit"))
        mods[name] = deps
    # a package's __init__ re-exporting its own submodules is not a cycle
    return {m: {d for d in deps if d in mods and d != m and not d.startswith(m + ".")} for m, deps in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_cycle_finder_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


# which layers each layer may import: core <- models <- evaluation <- apps, with the procedural datasets (data)
# beside models and training beside evaluation; image files and grids (imaging, a module) sit just above core, for
# every layer but core; only apps imports apps ("": eigenedit/__init__.py)
LAYERS = ("core", "imaging", "models", "data", "evaluation", "training", "apps")
ALLOWED = {
    "core": {"core"},
    "imaging": {"core", "imaging"},
    "models": {"core", "imaging", "models"},
    "data": {"core", "imaging", "data"},
    "evaluation": {"core", "imaging", "models", "data", "evaluation"},
    "training": {"core", "imaging", "models", "data", "training"},
    "apps": set(LAYERS),
    "": set(LAYERS) - {"apps"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, dependency) pairs where a layer imports one it may not (``ALLOWED``)."""
    return sorted((m, d) for m, deps in graph.items() for d in deps if layer_of(d) not in ALLOWED[layer_of(m)])


def test_pipeline_folders():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert set(LAYERS) <= folders | modules


def test_layers_import_only_downward():
    assert upward_imports(import_graph()) == []


def test_upward_imports_are_seen():
    graph = {
        "eigenedit.core.sampling": {"eigenedit.models.base"},
        "eigenedit.models.base": {"eigenedit.evaluation.metrics", "eigenedit.core.attention"},
        "eigenedit.evaluation.metrics": {"eigenedit.apps.cli"},
        "eigenedit.apps.cli": {"eigenedit.apps.guards", "eigenedit.evaluation.metrics", "eigenedit.imaging"},
        "eigenedit.core.cache": {"eigenedit.imaging"},
        "eigenedit.imaging": {"eigenedit.core.io", "eigenedit.models"},
        "eigenedit.data.faces": {"eigenedit.imaging"},
        "eigenedit": {"eigenedit.apps.ui", "eigenedit.imaging"},
    }
    assert upward_imports(graph) == [
        ("eigenedit", "eigenedit.apps.ui"),
        ("eigenedit.core.cache", "eigenedit.imaging"),
        ("eigenedit.core.sampling", "eigenedit.models.base"),
        ("eigenedit.evaluation.metrics", "eigenedit.apps.cli"),
        ("eigenedit.imaging", "eigenedit.models"),
        ("eigenedit.models.base", "eigenedit.evaluation.metrics"),
    ]


def test_benchmarks_are_a_package_without_path_hacks():
    """benchmarks/ runs as ``python -m benchmarks.NAME``: no sys.path edits, and a sibling script is imported as
    ``benchmarks.NAME`` (a bare name resolves only when run from benchmarks/, and may shadow another module)."""
    import importlib

    folder = PACKAGE.parent / "benchmarks"
    scripts = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    assert (folder / "__init__.py").is_file() and scripts
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.path"), path.name
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module not in scripts, f"{path.name} imports {node.module} without 'benchmarks.'"
            if isinstance(node, ast.Import):
                assert not {alias.name for alias in node.names} & scripts, path.name
    assert importlib.import_module("benchmarks.faces").write_card.__module__ == "benchmarks.model_card"
