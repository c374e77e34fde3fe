"""The console reaches ModelRollouts through ops/rollout/client.py only (the calls of `python -m ops
rollout`), never through the CLI, the kube client or the operator's state machine."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _ops_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ops":
            # `from ops.rollout import client` names the module it imports
            found |= ({f"{node.module}.{alias.name}" for alias in node.names}
                      if node.module in ("ops", "ops.rollout") else {node.module})
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ops"}
    return found


def test_the_console_uses_the_rollout_client_only():
    used = {name for path in (REPO / "console").rglob("*.py") for name in _ops_imports(path)}
    assert used == {"ops.rollout.client"}
