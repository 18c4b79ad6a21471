"""The layering rules of docs/architecture.md, checked on the source: one-way imports, Dagster only in
pipelines, no import cycle (imports inside functions count: a cycle dodged by a late import is still one)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Lower layers first: a module may import its own layer and those before it, never one after it.
LAYERS = ("eventstore", "projections", "warehouse", "pipelines")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every Python module of the four layers, by dotted name."""
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "node_modules" not in path.parts:
                found[_module_name(path)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported name, line) of every import in ``path``, at any depth; ``from a import b`` yields ``a.b``
    when that is a module, else ``a``."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in known else base), node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target, _ in imports(path, known) if target in known and target != name}
        for name, path in known.items()
    }


def test_imports_run_one_way_and_only_pipelines_imports_dagster() -> None:
    known = modules()
    upward = []
    for name, path in known.items():
        layer = LAYERS.index(name.split(".")[0])
        for target, line in imports(path, known):
            top = target.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > layer:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if top in ("dagster", "dagster_webserver") and name.split(".")[0] != "pipelines":
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} (Dagster lives in pipelines/)")
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(graph()) == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    known = modules()
    edges = graph()
    assert "eventstore.connection" in edges["eventstore.adapters._base"]
    assert known and all(name.split(".")[0] in LAYERS for name in known)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_has_modules(layer: str) -> None:
    assert any(name.split(".")[0] == layer for name in modules())
