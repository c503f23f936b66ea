"""The gateway's modules import one another without cycles, and it composes `isolate`.

Imports are read from the source with `ast`: every `from .x import` that runs (at
module level or inside a function, which is a cycle all the same once called), but not
the ones under `if TYPE_CHECKING:`, which are for annotations only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stockade.gateway

PACKAGE = Path(stockade.gateway.__file__).parent


class _Imports(ast.NodeVisitor):
    """The sibling modules a module imports at run time."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level != 1:
            return
        if node.module:
            self.found.add(node.module.split(".")[0])
        else:
            self.found.update(alias.name for alias in node.names)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the sibling modules it imports at run time."""
    modules = {path.stem for path in package.glob("*.py")}
    graph = {}
    for name in modules:
        visitor = _Imports()
        visitor.visit(ast.parse((package / f"{name}.py").read_text()))
        graph[name] = (visitor.found & modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's modules (strongly connected components of more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from .b import x\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nfrom .c import y\n"
                                   "if TYPE_CHECKING:\n    from .a import f\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(tmp_path)) == [["a", "b", "c"]]
    (tmp_path / "c.py").write_text("")
    assert cycles(import_graph(tmp_path)) == []


def test_no_import_cycles_inside_the_gateway() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_pool_workers_are_isolate_workers() -> None:
    """One spawn/reap implementation: the pool starts its processes through
    `isolate.handle.WorkerProcess`, never by itself."""
    for name in ("pool", "poolworker"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert "subprocess" not in source and "os.pipe" not in source, name
    assert "WorkerProcess(" in (PACKAGE / "pool.py").read_text()
