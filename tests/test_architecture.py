"""The layering the design promises, checked on the import graph of the source (no import executed).

- the domain core imports neither the web layer (app) nor the workers;
- the workers never import the web layer;
- drivers know no agents, providers do no I/O and never import a driver;
- client code (SDK, client CLI commands, MCP server) imports no server module;
- no import cycles between modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agentruns", "app", "core", "workers", "drivers", "providers")
SERVER = ("app", "core", "workers", "drivers", "providers", "migrations")
# The operator's commands (api, worker, beat, db, keys, dev) import the server inside their functions;
# every other module of agentruns/ is client code that runs on a user's machine.
OPERATOR_MODULES = ("agentruns.cli", "agentruns.dev")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    """Modules `path` imports (absolute names); with top_level_only, not those inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # typing only: never executed
            if top_level_only and nested:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, name, top_level_only=top_level_only) if m in modules}
            for name, path in modules.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_known_edges():
    """Guards the checks below against passing vacuously (a parser that finds nothing)."""
    graph = _graph(top_level_only=False)
    assert "core.runstate" in graph["workers.runner"]
    assert "core.models" in graph["core.runstate"]
    assert "agentruns.vocabulary" in graph["core.models"]


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("core", ("app", "workers")),
    ("workers", ("app",)),
    ("drivers", ("app", "core", "workers", "providers")),
    ("providers", ("app", "core", "workers", "drivers")),
])
def test_layers_import_only_downwards(layer, forbidden):
    graph = _graph(top_level_only=False)
    bad = sorted((m, dep) for m, deps in graph.items() if _top(m) == layer for dep in deps if _top(dep) in forbidden)
    assert not bad, f"{layer} must not import {forbidden}: {bad}"


def test_client_code_imports_no_server_module():
    graph = _graph(top_level_only=False)
    client = [m for m in graph if _top(m) == "agentruns" and m not in OPERATOR_MODULES]
    assert "agentruns.client" in client and "agentruns._sdk_protocol" in client
    bad = sorted((m, dep) for m in client for dep in graph[m] if _top(dep) in SERVER)
    assert not bad, bad


def test_operator_commands_import_the_server_only_when_run():
    graph = _graph(top_level_only=True)
    bad = sorted((m, dep) for m in OPERATOR_MODULES for dep in graph[m] if _top(dep) in SERVER)
    assert not bad, bad


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := dfs(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    """No cycle, counting imports inside functions too: a lazy import that dodges a cycle is still one."""
    graph = _graph(top_level_only=False)
    for name, deps in graph.items():
        # A module always imports the packages above it first: those edges are no design cycle.
        ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        deps.difference_update(ancestors | {name})
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
