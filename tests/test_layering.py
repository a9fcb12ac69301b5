"""The package's layering, read from its source (ast, nothing imported): the lower units
(``modeling``, ``data``, ``ops``) import nothing of the units built on them, and no module
imports itself back through others.

What counts as an import: every ``import`` / ``from ... import`` statement of a module,
module-level and inside functions alike (a function-level import still needs the other
module by the time it runs, and hiding a cycle in a function is what this check exists to
prevent); only those under ``if TYPE_CHECKING:`` are left out (they never run). Importing
``a.b.c`` runs the packages ``a`` and ``a.b`` first, so they are imported too, except the
importer's own packages (a package's ``__init__`` re-exporting its modules is no cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dimaskdino"
LOWER = ("dimaskdino.modeling", "dimaskdino.data", "dimaskdino.ops")
UPPER = ("dimaskdino.engine", "dimaskdino.analysis", "dimaskdino.experiments",
         "dimaskdino.reports", "dimaskdino.cli")


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package by its ``__init__``)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST) -> set[str]:
    """Every dotted name ``tree`` imports (``from a import b``: ``a`` and ``a.b``), wherever
    the statement is, but under ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = set()
        for target in imported_names(ast.parse(path.read_text(), str(path))):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix not in own:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def under(name: str, units: tuple[str, ...]) -> bool:
    return any(name == unit or name.startswith(f"{unit}.") for unit in units)


def test_lower_units_import_nothing_built_on_them():
    wrong = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                   if under(module, LOWER) for target in targets if under(target, UPPER))
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end),
    or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_check_sees_cycles_and_function_level_imports():
    source = "def f():\n    from dimaskdino.b import x\n"
    assert imported_names(ast.parse(source)) == {"dimaskdino.b", "dimaskdino.b.x"}
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dimaskdino.c\n"
    assert "dimaskdino.c" not in imported_names(ast.parse(hidden))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
