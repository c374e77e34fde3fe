"""The model-server image: multi-stage, non-root, serve extra only, read-only-rootfs friendly."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "model_server" / "Dockerfile"
# what the serve extra (and kserve, which brings fastapi/starlette) provides
SERVE_IMPORTS = {"numpy", "orjson", "prometheus_client", "psutil", "fastapi", "starlette",
                 "kserve", "onnxruntime", "joblib", "tensorflow", "opentelemetry", "sklearn",
                 "don_core", "model_server", "boto3", "botocore"}


def test_image_is_multi_stage_non_root_and_serve_only():
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "COPY --from=build /opt/venv /opt/venv" in text
    assert re.search(r"^USER 1000:1000$", text, re.M)
    installs = re.findall(r'pip install "\.\[([^\]]+)\]"', text)
    assert installs == ["serve"]
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "HOME=/tmp" in text
    assert 'ENTRYPOINT ["python", "-m", "model_server"]' in text
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / copied.rstrip("/")).exists() or copied.startswith("README"), copied


def test_server_code_needs_only_the_serve_extra():
    found = set()
    for path in (REPO / "model_server").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    third_party = {m for m in found if m not in sys.stdlib_module_names}
    assert third_party <= SERVE_IMPORTS, third_party - SERVE_IMPORTS
