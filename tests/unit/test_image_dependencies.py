"""Each image installs one pyproject extra: the code it runs must import nothing else.

Third-party imports of a package's modules are mapped to their distributions and checked against
the extra's requirements, the core dependencies and everything those pull in (a missing
`prometheus-client` in the ops extra once crashed the operator pod only in the cluster)."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"don_core", "training_job", "model_server", "ops"}
IMAGES = {"model_server": "serve", "training_job": "train", "ops": "ops"}


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions `names` install, transitively (extras of dependencies ignored)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _extra(extra: str) -> set[str]:
    requires = metadata.requires("don-predictor") or []
    core = {_name(r) for r in requires if "extra ==" not in r}
    chosen = {_name(r) for r in requires if re.search(rf"extra == ['\"]{extra}['\"]", r)}
    assert chosen, f"extra {extra!r} not found in the installed don-predictor metadata"
    return _closure(core | chosen)


def _imports(package: str) -> set[str]:
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


@pytest.mark.parametrize("package", sorted(IMAGES))
def test_image_code_imports_only_what_its_extra_installs(package):
    installed = _extra(IMAGES[package])
    owners = metadata.packages_distributions()
    missing = {}
    for module in _imports(package):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or "not installed at all"
    assert not missing, f"{package}/ imports what the [{IMAGES[package]}] extra does not install: {missing}"
