"""The package's modules import one another without circles.

Every ``import`` statement of ``python/galvatron`` counts, at module level or inside a
function (a function-level import only hides a circle until the function runs). A module's
parent packages are not edges (importing ``galvatron.plan`` runs ``galvatron/__init__.py``,
but that is Python's doing, not a dependency the code chose). ``if TYPE_CHECKING:`` blocks
are skipped: they never run.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "python")
PACKAGE = "galvatron"


def _modules() -> dict[str, str]:
    """module name -> file path, for every .py file of the package."""
    out = {}
    base = os.path.join(ROOT, PACKAGE)
    for dirpath, _, files in os.walk(base):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext not in (".py", ".pyi") or (ext == ".pyi" and stem + ".py" in files):
                continue  # a .pyi without a .py: a compiled module (galvatron._C), a leaf
            rel = os.path.relpath(os.path.join(dirpath, stem), ROOT).split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its body."""
    out: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                sub = f"{target}.{a.name}"
                out.add(sub if sub in known else target)
        stack.extend(ast.iter_child_nodes(node))
    resolved = set()
    for name in out:
        while name and name not in known:  # galvatron._C (compiled) and the like: nearest module
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.add(name)
    return resolved


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        if path.endswith(".pyi"):
            graph[name] = set()
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        graph[name] = _imports(tree, name, path.endswith("__init__.py"), known)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _path(graph: dict[str, set[str]], comp: list[str]) -> str:
    """One circle through the component's first module, for the failure message."""
    members, start = set(comp), comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                chain = [v]
                while prev[chain[-1]] is not None:
                    chain.append(prev[chain[-1]])
                return " -> ".join([start, *reversed(chain[:-1]), start]) if len(chain) > 1 else f"{start} -> {v} -> {start}"
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return ", ".join(comp)


def test_the_package_has_no_import_circles():
    graph = import_graph()
    assert "galvatron.plan" in graph and "galvatron.cli" in graph  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(_path(graph, c) for c in cycles)


def test_the_walk_sees_function_level_imports_and_reports_a_circle():
    """The checker itself: a lazy import inside a function closes a circle and is found."""
    a = ast.parse("import galvatron.b\n")
    b = ast.parse("def f():\n    from galvatron import a\n")
    known = {"galvatron", "galvatron.a", "galvatron.b"}
    graph = {"galvatron.a": _imports(a, "galvatron.a", False, known),
             "galvatron.b": _imports(b, "galvatron.b", False, known), "galvatron": set()}
    assert find_cycles(graph) == [["galvatron.a", "galvatron.b"]]
    assert _path(graph, ["galvatron.a", "galvatron.b"]) == "galvatron.a -> galvatron.b -> galvatron.a"


@pytest.mark.parametrize("source, expected", [
    ("from . import plan\n", {"galvatron.plan"}),
    ("from .plan import Plan\n", {"galvatron.plan"}),
    ("from galvatron import _C\n", {"galvatron._C"}),
    ("import galvatron\n", {"galvatron"}),
    ("if TYPE_CHECKING:\n    from galvatron.plan import Plan\n", set()),
])
def test_relative_and_type_checking_imports_resolve(source, expected):
    known = {"galvatron", "galvatron.plan", "galvatron.cli", "galvatron._C"}
    assert _imports(ast.parse(source), "galvatron.cli", False, known) == expected
