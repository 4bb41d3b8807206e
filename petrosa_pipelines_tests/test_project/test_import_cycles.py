"""No import cycles among the project's modules (STYLE: the folder layout shows the data flow).

Imports are read from the source (``ast``), including those inside functions: a deferred import
that closes a loop is still a loop, only hidden until it runs. ``TYPE_CHECKING`` blocks do not
count (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("petrosa_pipelines", "sensors", "resources")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The project module ``name`` (``pkg.mod.attr`` or ``pkg.mod``) lives in, if any."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    out: set[str] = set()
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(o for a in child.names if (o := _owner(a.name, mods)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package[: len(package) - (child.level - 1)]
                    base = ".".join([*anchor, *([child.module] if child.module else [])])
                out.update(o for a in child.names if (o := _owner(f"{base}.{a.name}", mods)))
            visit(child)

    visit(ast.parse(path.read_text()))
    out.discard(mod)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_itself_through_others():
    mods = _modules()
    assert len(mods) > 150
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    assert sum(len(v) for v in graph.values()) > 300  # the reader sees the imports
    assert _cycles(graph) == []
