"""The packages' import graph: no cycles, and the layering rules of docs/ARCHITECTURE.md.

The graph is built from the source with `ast`, function-level imports included, so a
lazy import cannot hide a cycle. A node is a module; `from pkg import name` counts as an
edge to `pkg.name` when that is a module, else to `pkg`.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gt_runtime", "gt_train", "gt_export", "gt_cli", "gt_serve")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []:
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        deps = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                r = _resolve(t, mods)
                if r and r != mod:
                    deps.add(r)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str, graph) -> bool:
    """A package's __init__ re-exporting its own submodules is not a cycle of design."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles():
    graph = import_graph()
    # drop edges between a package and its own submodules (re-exports in __init__)
    pruned = {a: {b for b in deps if not _is_package_init_edge(a, b, graph)} for a, deps in graph.items()}
    assert _cycles(pruned) == []


def test_layering():
    """gt_runtime imports no other gt package; gt_train does not import gt_export, gt_cli or gt_serve."""
    graph = import_graph()
    bad = []
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        allowed = {"gt_runtime": {"gt_runtime"}, "gt_train": {"gt_runtime", "gt_train"},
                   "gt_export": {"gt_runtime", "gt_train", "gt_export"},
                   "gt_serve": {"gt_runtime", "gt_serve"}}.get(top)
        if allowed is None:
            continue
        bad += [f"{mod} -> {d}" for d in deps if d.split(".")[0] not in allowed]
    assert bad == []


def test_contract_is_import_free():
    """gt_runtime.contract imports only the standard library."""
    tree = ast.parse((ROOT / "gt_runtime" / "contract.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "os", "dataclasses"}


def test_graph_sees_function_level_imports():
    """The graph builder itself: a lazy import inside a function is an edge."""
    graph = import_graph()
    # the pipeline imports the CUDA rasterizer only inside a method
    assert "gt_runtime.raster._cuda" in graph["gt_runtime.playback.pipeline"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
