"""The local cluster's image builds are skipped only when nothing they read changed."""
from __future__ import annotations

import shutil

from tests.cluster import images
from tests.conftest import REPO


def test_build_inputs_key_follows_the_build_context_only(tmp_path, monkeypatch):
    for name in (".dockerignore", "pyproject.toml", "README.md", "ops/Dockerfile"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / "ops" / "operator.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    monkeypatch.setattr(images, "REPO", tmp_path)
    key = images._inputs_key(images.OPERATOR, "base:1")
    assert images._inputs_key(images.OPERATOR, "base:1") == key
    (tmp_path / "tests" / "test_x.py").write_text("outside the build context\n")
    (tmp_path / "ops" / "__pycache__").mkdir()
    (tmp_path / "ops" / "__pycache__" / "operator.cpython-311.pyc").write_bytes(b"\0")
    assert images._inputs_key(images.OPERATOR, "base:1") == key
    assert images._inputs_key(images.OPERATOR, "base:2") != key  # another FROM
    (tmp_path / "ops" / "operator.py").write_text("x = 2\n")
    changed = images._inputs_key(images.OPERATOR, "base:1")
    assert changed != key
    (tmp_path / "ops" / "Dockerfile").write_text((REPO / "ops" / "Dockerfile").read_text() + "# edit\n")
    assert images._inputs_key(images.OPERATOR, "base:1") != changed


def test_the_shared_base_is_keyed_by_its_dockerfile_alone(tmp_path, monkeypatch):
    for name in (".dockerignore", "pyproject.toml", "README.md", images.PYTHON_BASE.dockerfile):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    monkeypatch.setattr(images, "REPO", tmp_path)
    key = images._inputs_key(images.PYTHON_BASE, "debian:1")
    (tmp_path / "pyproject.toml").write_text("# a code or dependency change\n")
    assert images._inputs_key(images.PYTHON_BASE, "debian:1") == key
    assert images._inputs_key(images.PYTHON_BASE, "debian:2") != key


def test_every_image_names_the_build_argument_its_dockerfile_reads():
    assert images.CONSOLE in images.IMAGES  # the chart's console runs on the local cluster too
    for spec in images.BY_NAME.values():
        assert f"ARG {spec.base_arg}=" in (REPO / spec.dockerfile).read_text(), spec
