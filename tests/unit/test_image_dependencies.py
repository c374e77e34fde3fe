"""Each image installs pyproject extras: the code it runs must import nothing else.

Third-party imports of a package's modules are mapped to their distributions and checked against
the extras' requirements, the core dependencies and everything those pull in (a missing
`prometheus-client` in the ops extra once crashed the operator pod only in the cluster). The lean
serving image runs all of model_server/ except the native backends (model_server/native.py, whose
imports the lean path never reaches: tests/unit/test_server_lean.py checks that at run time)."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"don_core", "training_job", "model_server", "ops", "console"}
# image -> (package, extras installed, modules of the package it never imports)
IMAGES = {
    "model-server (lean)": ("model_server", ("serve",), {"model_server/native.py"}),
    "model-server (full)": ("model_server", ("serve", "serve-native"), set()),
    "training-job": ("training_job", ("train",), set()),
    "operator": ("ops", ("ops",), set()),
    "console": ("console", ("console",), set()),
}


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


def _extras(extras: tuple[str, ...]) -> set[str]:
    requires = metadata.requires("don-predictor") or []
    chosen = {_name(r) for r in requires if "extra ==" not in r}
    for extra in extras:
        found = {_name(r) for r in requires if re.search(rf"extra == ['\"]{extra}['\"]", r)}
        assert found, f"extra {extra!r} not found in the installed don-predictor metadata"
        chosen |= found
    return _closure(chosen)


def _imports(package: str, excluded: set[str]) -> set[str]:
    found = set()
    for path in (REPO / package).rglob("*.py"):
        if path.relative_to(REPO).as_posix() in excluded:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_code_imports_only_what_its_extras_install(image):
    package, extras, excluded = IMAGES[image]
    installed = _extras(extras)
    owners = metadata.packages_distributions()
    missing = {}
    for module in _imports(package, excluded):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or "not installed at all"
    assert not missing, f"{package}/ in the {image} image imports what [{','.join(extras)}] does not install: {missing}"


def test_lean_serving_extra_installs_no_native_library():
    installed = _extras(IMAGES["model-server (lean)"][1])
    assert not installed & {"scikit-learn", "tensorflow", "tensorflow-cpu", "scipy", "joblib"}
