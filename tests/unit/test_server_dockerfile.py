"""The model-server image: multi-stage, non-root, serve extra only, read-only-rootfs friendly."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "model_server" / "Dockerfile"


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
