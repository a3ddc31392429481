"""No import cycle in ``sdk/``: the graph of every import statement (lazy ones inside functions too),
read with ``ast``, has no strongly connected component of more than one module.

A package's ``__init__`` is a node like any module; ``from pkg import sub`` is an edge to ``pkg.sub``
when that is a module, else to ``pkg``. Importing ``pkg.sub`` runs ``pkg/__init__`` first, but that is
Python's order, not a dependency of ``pkg.sub`` on ``pkg``, so it adds no edge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set

ROOT = Path(__file__).resolve().parents[1] / "sdk"
EXTENSION_SUFFIXES = (".so", ".pyd")

# Cycles known and owned elsewhere (the backend registry), listed so that any *new* cycle fails now.
# When one disappears this test fails too: delete its entry.
KNOWN_CYCLES: List[Set[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    parts[-1] = parts[-1].split(".")[0]  # _kernels.cpython-311-x86_64-linux-gnu -> _kernels
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:`` (imports there never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*") if p.suffix == ".py" or p.suffix in EXTENSION_SUFFIXES}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        graph[name] = set()
        if path.suffix != ".py":
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                targets = subs + ([target] if len(subs) < len(node.names) else [])
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
        "def f():\n    import c\n"
    )
    assert {n.names[0].name for n in runtime_nodes(tree) if isinstance(n, ast.Import)} == {"b", "c"}
    graph = import_graph()
    assert "sdk.segmenter" in graph["sdk"]  # from .segmenter import Segmenter
    assert "sdk._kernels" in graph["sdk.kernels"] or not any(ROOT.glob("_kernels*"))  # from . import _kernels
    assert "sdk.commands.options" in graph["sdk.commands.segment"]
    assert "sdk.label" in graph["sdk.commands.label"]  # imported inside functions


def test_no_import_cycle_in_sdk():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"import cycles in sdk/: {new}"
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(c <= k and len(c) > 1 for c in found)]
    assert not gone, f"these known cycles are gone: delete them from KNOWN_CYCLES in {__file__}: {gone}"
