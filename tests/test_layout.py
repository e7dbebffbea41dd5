"""The package layout follows the pipeline, and no module imports one that imports it back."""

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


def test_pipeline_folders():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"core", "models", "data", "evaluation", "apps", "training"} <= folders
    graph = import_graph()
    core_deps = {d for m, deps in graph.items() if m.startswith("eigenedit.core") for d in deps}
    assert not {d for d in core_deps if d.startswith(("eigenedit.apps", "eigenedit.evaluation"))}
