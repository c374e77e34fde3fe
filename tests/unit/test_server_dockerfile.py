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
    assert stages["deps-full"].startswith("deps-lean AS") and stages["build-full"].startswith("deps-full AS")
    assert stages["build-lean"].startswith("deps-lean AS")
    assert "COPY --from=build-lean /opt/venv /opt/venv" in stages["lean"]
    assert "COPY --from=build-full /opt/venv /opt/venv" in stages["full"]
    assert "DON_NATIVE_FALLBACK=off" in stages["lean"] and "DON_NATIVE_FALLBACK=on" in stages["full"]
    for final in ("lean", "full"):
        assert re.search(r"^USER 1000:1000$", stages[final], re.M)
        assert 'ENTRYPOINT ["python", "-m", "model_server"]' in stages[final]
    assert "PYTHONDONTWRITEBYTECODE=1" in stages["runtime"] and "HOME=/tmp" in stages["runtime"]


def test_requirement_lists_follow_the_extras():
    from scripts.requirements import requirements

    lean = requirements(str(REPO / "pyproject.toml"), ["serve"])
    assert any(r.startswith("onnxruntime") for r in lean) and any(r.startswith("numpy") for r in lean)
    assert not any(r.startswith(("scikit-learn", "tensorflow", "scipy")) for r in lean)
    full = requirements(str(REPO / "pyproject.toml"), ["serve", "serve-native"])
    assert set(lean) < set(full) and any(r.startswith("tensorflow-cpu") for r in full)


def test_every_dockerfile_copies_what_exists_and_keeps_secrets_out_of_layers():
    for dockerfile in ("model_server/Dockerfile", "training_job/Dockerfile", "ops/Dockerfile", "console/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text, dockerfile  # users keep the public base
        for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert (REPO / copied.rstrip("/")).exists(), (dockerfile, copied)
        # pip's configuration and CA bundle arrive as build secrets, never COPY or ARG
        assert "--mount=type=secret,id=pip.conf" in text and "pip.conf" not in re.sub(
            r"--mount=type=secret,id=pip\.conf|PIP_CONFIG_FILE=/run/secrets/pip\.conf|`pip\.conf`", "", text)
