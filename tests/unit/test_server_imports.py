"""model_server's modules import one another in one direction: no cycle (function-level imports
counted), the model knows nothing of the routes, and the routes reach the served model through
their app, not through model.py."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "model_server"


def _modules():
    """(name, its files): a module, or a package (model_server/codec/) as one."""
    for path in PACKAGE.glob("*.py"):
        yield path.stem, [path]
    for init in PACKAGE.glob("*/__init__.py"):
        yield init.parent.name, sorted(init.parent.glob("*.py"))


def _ours(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def imports() -> dict[str, set[str]]:
    graph = {}
    for module, paths in _modules():
        found = set()
        for node in (n for path in paths for n in ast.walk(ast.parse(path.read_text()))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n.split(".")[1] for n in names
                      if n.startswith("model_server.") and _ours(n.split(".")[1])}
        graph[module] = found - {module}
    return graph


def test_no_module_imports_in_a_cycle():
    graph = imports()
    assert graph["routes"] and graph["model"]  # the walk found imports at all

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert not cycles, {m: sorted(graph[m]) for m in cycles}


def test_the_model_and_the_decoder_know_nothing_of_the_routes():
    graph = imports()
    assert not graph["model"] & {"routes", "workers", "__main__"}
    assert not graph["codec"]
    assert "model" not in graph["routes"]
