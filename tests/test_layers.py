"""The layers point one way: core; then models, export and runtime; then the API (atman_onnx); then the shells
(the CLI, serve, cluster). Read from the source, so a lazy import inside a function counts too; an import made
for type checking only (under ``if TYPE_CHECKING:``) does not."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "core": "core",
    "models": "models",
    "export": "export",
    "runtime": "runtime",
    "atman_onnx": "api",
    "serve": "serve",
    "cluster": "cluster",
}
CLI = "atman_onnx.cli"  # the command line: a shell in a folder of its own
# what each part may import besides itself
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "export": {"core", "models"},
    "runtime": {"core"},
    "api": {"core", "models", "export", "runtime"},
    "serve": {"core", "models", "export", "runtime", "api"},
    "cluster": {"core", "models", "export", "runtime", "api", "serve"},
    "cli": {"core", "models", "export", "runtime", "api", "serve", "cluster"},
}


def modules() -> dict[str, Path]:
    """Every project module by its import name (the folders install as atman_onnx.<folder>)."""
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            package = ".".join(
                (
                    "atman_onnx" if folder == "atman_onnx" else f"atman_onnx.{folder}",
                    *path.relative_to(ROOT / folder).parent.parts,
                )
            )
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def part(module: str) -> str:
    if module == CLI or module.startswith(CLI + "."):
        return "cli"
    parts = module.split(".")
    return FOLDERS.get(parts[1], "api") if len(parts) > 1 and parts[1] in FOLDERS else "api"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports at run time (at the top or inside functions)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            names = []
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name, "atman_onnx"} for name, path in found.items()}


def test_no_upward_import():
    upward = [
        f"{module} ({part(module)}) imports {target} ({part(target)})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if part(target) != part(module) and part(target) not in ALLOWED[part(module)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    cycles = []
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif state[target] == 0:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_the_project():
    edges = graph()
    assert len(edges) > 40
    assert "atman_onnx.runtime.plan" in edges["atman_onnx.runtime.execute"]


def test_no_module_over_300_lines():
    """Small modules with one job each: a module past 300 lines has grown a second job."""
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 300}
    assert not long, long
