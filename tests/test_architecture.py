"""The shape of the code: no import cycle anywhere (see docs/architecture.rst).

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING`` (a cycle
hidden there is still a cycle in the design). ``benchmarks/`` is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "proxystore": "proxystore",
    "integrations": "proxystore.integrations",
    "benchmarks": "benchmarks",
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            parts = [p for p in parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of ours that ``name`` imports anywhere (functions and ``TYPE_CHECKING`` too)."""
    out: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {module for module in out if module in known and module != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return found


def test_no_import_cycle() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert "proxystore.store.base" in graph["proxystore.store.registry"]  # the walk works
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_walk_sees_type_checking_and_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.b import B\n"
        "def f() -> None:\n"
        "    import pkg.c\n"
        "class K:\n"
        "    def g(self) -> None:\n"
        "        from . import d\n",
        encoding="utf-8",
    )
    known = {name: source for name in ("pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e")}
    assert _imports("pkg.a", source, known) == {"pkg.b", "pkg.c", "pkg.d"}


def _calls_at_import(path: Path) -> list[str]:
    """Calls a module makes at its top level to names it imported from our packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    ours: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] in PACKAGES
        ):
            ours.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            ours.update(
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] in PACKAGES
            )
    found = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            target = node.value.func
            while isinstance(target, ast.Attribute):
                target = target.value
            if isinstance(target, ast.Name) and target.id in ours:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node.value)}")
    return found


def test_the_hook_finder_finds_a_hook(tmp_path: Path) -> None:
    source = tmp_path / "registry.py"
    source.write_text(
        "from proxystore.store.description import set_locator\n"
        "import proxystore.store._table as table\n"
        "print('fine: not ours')\n"
        "set_locator(print)\n"
        "table.install(print)\n",
        encoding="utf-8",
    )
    assert _calls_at_import(source) == [
        "registry.py:4: set_locator(print)",
        "registry.py:5: table.install(print)",
    ]


def test_no_module_installs_a_hook_by_import() -> None:
    """No module calls into another of ours when imported (a hook set by an import)."""
    found = [call for path in _modules().values() for call in _calls_at_import(path)]
    assert found == []
