"""The model-server Dockerfile's shape: lean by default (serve extra only), a `full` target with the
native libraries, both non-root and read-only-rootfs friendly."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "model_server" / "Dockerfile"


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"^FROM ", text, flags=re.M)[1:]
    return {re.search(r" AS (\S+)", part.splitlines()[0]).group(1): part for part in parts}


def test_lean_is_the_default_target_and_full_adds_only_the_native_libraries():
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert list(stages)[-1] == "lean"  # `docker build` without --target builds the last stage
    lists = dict((out, extras.split()) for extras, out in
                 re.findall(r"requirements\.py /src/pyproject\.toml ([\w -]+) > (/\S+)", stages["requirements"]))
    assert lists == {"/lean.txt": ["serve"], "/full.txt": ["serve", "serve-native"]}
    assert "COPY --from=requirements /lean.txt" in stages["deps-lean"]
    assert "COPY --from=requirements /full.txt" in stages["deps-full"]
    # the images are built up in layers: runtime settings, the lean dependencies, (the full
    # image's extra libraries,) the project
    assert stages["deps-lean"].startswith("runtime AS")
    assert stages["deps-full"].startswith("deps-lean AS") and stages["full"].startswith("deps-full AS")
    assert stages["lean"].startswith("deps-lean AS") and stages["wheel"].startswith("deps-lean AS")
    assert "DON_NATIVE_FALLBACK=off" in stages["lean"] and "DON_NATIVE_FALLBACK=on" in stages["full"]
    for final in ("lean", "full"):
        assert re.search(r"^USER 1000:1000$", stages[final], re.M)
        assert not re.search(r"^COPY ", stages[final], re.M)  # no copied virtualenv
        runs = re.findall(r"^RUN (.*?)(?<!\\)$", stages[final], re.M | re.S)
        assert len(runs) == 1 and "--mount=type=bind,from=wheel" in runs[0] \
            and "--no-deps /wheels/*.whl" in runs[0], runs
        assert 'ENTRYPOINT ["python", "-m", "model_server"]' in stages[final]
    assert "PYTHONDONTWRITEBYTECODE=1" in stages["runtime"] and "HOME=/tmp" in stages["runtime"]


def test_the_sources_key_only_the_wheel_stage():
    """A code change rebuilds the wheel and each image's small project layer, never a dependency
    layer (those are keyed by the requirement lists alone)."""
    stages = _stages(DOCKERFILE.read_text())
    for name, body in stages.items():
        copied = re.findall(r"^COPY (?!--from)(.*)$", body, re.M)
        if name == "wheel":
            assert any("model_server/" in c for c in copied) and any("don_core/" in c for c in copied)
        elif name != "requirements":
            assert not copied, (name, copied)
    assert "pip install -r /opt/requirements-lean.txt" in stages["deps-lean"]
    assert "pip install -r /opt/requirements-full.txt" in stages["deps-full"]
    for deps in ("deps-lean", "deps-full"):
        assert "--mount=type=cache" in stages[deps] and "PIP_CACHE_DIR=/root/.cache/pip" in stages[deps]


def test_requirement_lists_follow_the_extras():
    from scripts.requirements import requirements

    lean = requirements(str(REPO / "pyproject.toml"), ["serve"])
    assert any(r.startswith("onnxruntime") for r in lean) and any(r.startswith("numpy") for r in lean)
    assert not any(r.startswith(("scikit-learn", "tensorflow", "scipy")) for r in lean)
    full = requirements(str(REPO / "pyproject.toml"), ["serve", "serve-native"])
    assert set(lean) < set(full) and any(r.startswith("tensorflow-cpu") for r in full)


def test_every_dockerfile_copies_what_exists_and_keeps_secrets_out_of_layers():
    for dockerfile in ("model_server/Dockerfile", "training_job/Dockerfile", "ops/Dockerfile", "console/Dockerfile",
                       "docker/python-base/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        # users keep the public base (the shared python-base is built FROM it)
        assert ("ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
                or "ARG BASE_IMAGE=don-predictor/python-base" in text), dockerfile
        for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert (REPO / copied.rstrip("/")).exists(), (dockerfile, copied)
        # pip's configuration and CA bundle arrive as build secrets, never COPY or ARG
        assert "--mount=type=secret,id=pip.conf" in text and "pip.conf" not in re.sub(
            r"--mount=type=secret,id=pip\.conf|PIP_CONFIG_FILE=/run/secrets/pip\.conf|`pip\.conf`", "", text)
