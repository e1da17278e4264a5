"""The import graph of ``src/vexpress``: no cycles between its modules, nor between its sub-packages.

The graph is read from the source with :mod:`ast`, so imports inside functions count as much as those at the top of
a module: a function-level import hides a cycle from Python, not from the design. Sub-package nodes are
``vexpress.data``, ``vexpress.kps``, ...; a top-level module such as ``vexpress.errors`` is its own node. Only the
edges in :data:`EXCEPTIONS` may close a cycle, each with the reason it is still there.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vexpress"

#: Edges allowed to close a cycle between sub-packages: (importer, imported) -> why it is still there. Remove an
#: entry together with its edge; an entry whose edge is gone, or no longer closes a cycle, fails the test.
#: Empty since the DataModule moved to training/ and the resume lookup to training/checkpoints.py.
EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Pairs whose cycles function-level imports used to hide (house style section 5): modules or sub-packages.
NAMED_PAIRS = [("vexpress.evaluation.runner", "vexpress.evaluation.report"), ("data", "synthetic"), ("data", "kps"),
               ("audio", "data")]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ``vexpress`` modules that ``path`` imports anywhere (module level, in functions, under TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            out.update(subs or {target})
    return {m for m in out if m.startswith("vexpress.")}


def module_graph() -> dict[str, dict[str, str]]:
    """importer module -> imported module -> the importing file."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in files:
        for target in _imports(path, modules):
            graph[_module_name(path)][target] = str(path.relative_to(SRC))
    return graph


def subpackage_graph() -> dict[str, dict[str, list[str]]]:
    """importer sub-package -> imported sub-package -> the module edges (``a.b -> c.d``) that make it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for src, targets in module_graph().items():
        for dst in targets:
            a, b = src.split(".")[1:2], dst.split(".")[1:2]
            if a and b and a != b:
                graph[a[0]][b[0]].append(f"{src} -> {dst}")
    return graph


def _reachable(graph, start: str, skip=frozenset()) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, {}):
            if (node, nxt) not in skip and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("a, b", NAMED_PAIRS, ids=lambda v: v.replace("vexpress.", ""))
def test_named_pair_has_no_cycle(a, b):
    graph = module_graph() if a.startswith("vexpress.") else subpackage_graph()
    if (a, b) in EXCEPTIONS or (b, a) in EXCEPTIONS:
        pytest.xfail(EXCEPTIONS.get((a, b)) or EXCEPTIONS[(b, a)])
    assert not (a in _reachable(graph, b) and b in _reachable(graph, a)), \
        f"{a} and {b} import each other: {a} -> {dict(graph[a]).get(b)}; {b} -> {dict(graph[b]).get(a)}"


def test_subpackages_form_no_cycle_except_the_listed_edges():
    graph = subpackage_graph()
    skip = set(EXCEPTIONS)
    on_cycle = sorted((a, b) for a in graph for b in graph[a] if (a, b) not in skip and a in _reachable(graph, b, skip))
    detail = "\n".join(f"  {a} -> {b}: " + "; ".join(graph[a][b]) for a, b in on_cycle)
    assert not on_cycle, f"edges on an import cycle between vexpress sub-packages:\n{detail}"


def test_every_exception_is_still_needed():
    graph = subpackage_graph()
    for a, b in EXCEPTIONS:
        assert b in graph.get(a, {}), f"EXCEPTIONS lists {a} -> {b}, which no longer exists: remove the entry"
        assert a in _reachable(graph, b), f"{a} -> {b} no longer closes a cycle: remove it from EXCEPTIONS"


def test_modules_form_no_cycle():
    """Module by module there is no cycle at all (a package's ``__init__`` counts as a module)."""
    graph = module_graph()
    on_cycle = sorted((a, b) for a in graph for b in graph[a] if a in _reachable(graph, b))
    assert not on_cycle, "edges on an import cycle between vexpress modules:\n" + "\n".join(
        f"  {a} -> {b} ({graph[a][b]})" for a, b in on_cycle)
