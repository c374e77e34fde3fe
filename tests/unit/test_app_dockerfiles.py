"""The training-job, operator and console Dockerfiles share one base image (docker/python-base) and
one layout: the dependencies of their extra in a layer of their own, the project in a small last
layer, so a code change rebuilds only that (not a copied 2 GB virtualenv)."""
from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

BASE = REPO / "docker" / "python-base" / "Dockerfile"
APPS = {"training_job/Dockerfile": "train", "ops/Dockerfile": "ops", "console/Dockerfile": "console"}


def _stages(text: str) -> list[tuple[str, str]]:
    """[(name or "final", body)] in order."""
    parts = re.split(r"^FROM ", text, flags=re.M)[1:]
    return [((re.search(r" AS (\S+)", p.splitlines()[0]) or re.search(r"()", "")).group(1) or "final", p)
            for p in parts]


def test_the_shared_base_keeps_the_public_python_and_the_runtime_settings():
    text = BASE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text and "FROM ${PYTHON_IMAGE}" in text
    assert "useradd --uid 1000" in text and "python -m venv /opt/venv" in text
    for setting in ("PATH=/opt/venv/bin:$PATH", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in text
    assert not re.search(r"^COPY ", text, re.M)  # no build context: the key is the Dockerfile alone


@pytest.mark.parametrize("dockerfile", sorted(APPS))
def test_dependencies_in_their_own_layer_and_the_project_last(dockerfile):
    text = (REPO / dockerfile).read_text()
    assert "ARG BASE_IMAGE=don-predictor/python-base\n" in text
    stages = _stages(text)
    assert [name for name, _ in stages] == ["requirements", "wheel", "final"], dockerfile
    assert all(body.startswith("${BASE_IMAGE}") for _, body in stages)
    requirements, wheel, final = (body for _, body in stages)
    assert f"/src/pyproject.toml {APPS[dockerfile]} > /src/requirements.txt" in requirements
    # the sources reach the wheel stage only; the final stage copies no virtualenv
    assert re.findall(r"^COPY (?!--from)\S+/ ", wheel, re.M)
    assert not re.search(r"^COPY (?!--from=requirements)", final, re.M), dockerfile
    assert not re.search(r"^COPY .*/opt/venv", final, re.M)
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", final, re.M | re.S)
    assert len(runs) == 2, runs
    assert "pip install -r /opt/requirements.txt" in runs[0] and "--mount=type=cache" in runs[0]
    assert "--mount=type=bind,from=wheel" in runs[1] and "pip install --no-deps /wheels/*.whl" in runs[1]
    assert re.search(r"^USER 1000:1000$", final, re.M) and "ENTRYPOINT" in final
