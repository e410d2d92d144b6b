"""The package's import graph: imports go one way (cli -> engine -> weights -> data -> zoo -> device ->
models -> shared pieces) and no module imports itself back through others. Imports under TYPE_CHECKING
and inside functions count: they are dependencies too, only deferred. Only the CLI draws: nothing below
it imports rich or calls print."""

from __future__ import annotations

import ast
from pathlib import Path

import uniformer_cli

PACKAGE = Path(uniformer_cli.__file__).parent
# A floor may import the floors after it in this list and its own, never those before it. The last floor
# holds the pieces every other one shares (the protocol's and the run settings' vocabulary, records,
# progress events, errors, files, JSON in and out).
SHARED = (
    "protocol",
    "settings",
    "events",
    "records",
    "errors",
    "files",
    "jsonio",
    "lazy",
    "runtime",
    "plots",
    "version",
)
LAYERS = (("cli",), ("engine",), ("weights",), ("data",), ("zoo",), ("device",), ("models",), SHARED)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a `from package import name` that names a submodule
    counts as importing that submodule)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return next((level for level, names in enumerate(LAYERS) if len(parts) > 1 and parts[1] in names), None)


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if (mine := _layer(module)) is not None and (theirs := _layer(target)) is not None and theirs < mine
    ]
    assert upward == []


def test_every_module_has_a_floor() -> None:
    assert [module for module in import_graph() if "." in module and _layer(module) is None] == []


def _below_the_cli() -> dict[str, ast.Module]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: ast.parse(path.read_text(encoding="utf-8"))
        for name, path in paths.items()
        if not name.startswith("uniformer_cli.cli")
    }


def test_only_the_cli_draws() -> None:
    """The engine reports through `events` callbacks and `logging`; rich and print belong to the CLI."""
    drawing = []
    for name, tree in _below_the_cli().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                drawing += [f"{name} imports {a.name}" for a in node.names if a.name.split(".")[0] == "rich"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rich":
                drawing.append(f"{name} imports {node.module}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                drawing.append(f"{name} calls print (line {node.lineno})")
    assert drawing == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
