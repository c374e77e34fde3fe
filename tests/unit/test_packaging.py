"""What ships is the product only: the wheel (what every Dockerfile installs with `pip install .`)
holds the packages pyproject.toml names and no test tooling; the local-cluster builder lives in
tests/cluster/."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = tuple(p.rstrip("*") for p in tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"]["find"]["include"])


def test_wheel_holds_our_packages_and_no_test_tooling(tmp_path):
    # Build from a copy of what the images' build context holds, so no build/ or egg-info lands in
    # the working tree (other runs may share it). No build isolation: the venv's setuptools, offline.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--no-cache-dir", "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("don_predictor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert {n.split("/")[0] for n in modules} == set(PACKAGES)
    assert "tests" not in PACKAGES and {"don_core", "ops"} <= set(PACKAGES)
    assert not [n for n in names if n.startswith(("ops/cluster/", "tests/"))]
    assert "ops/operator.py" in names and "ops/rollout/controller.py" in names  # the operator itself ships


def test_cluster_builder_lives_in_tests_and_no_dockerfile_copies_it():
    assert not (REPO / "ops" / "cluster").exists()
    assert (REPO / "tests" / "cluster" / "local_cluster.py").exists()
    for dockerfile in ("ops/Dockerfile", "model_server/Dockerfile", "training_job/Dockerfile"):
        copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (REPO / dockerfile).read_text(), re.M)
        sources = [s.rstrip("/") for line in copied for s in line.split()]
        assert sources and not [s for s in sources if s.startswith("tests") or "cluster" in s], (dockerfile, sources)
