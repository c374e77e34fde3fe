"""schemathesis against the server's own OpenAPI document, for both families: every check (no 5xx,
status codes, content types, headers and response bodies as documented, schema-valid requests
accepted, invalid ones refused); the exceptions are in schemathesis.toml beside this file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.slow  # ~600 cases per family, about a minute each
@pytest.mark.parametrize("family", ["rf", "tf"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(request, family, tmp_path):
    server = request.getfixturevalue(f"{family}_server")
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists():
        cli = shutil.which("schemathesis")
    if not cli:
        pytest.fail("schemathesis is not installed (it is in the dev extra)")
    proc = subprocess.run(
        [str(cli), "--config-file", str(CONFIG), "run", server.url("/openapi.json"),
         "--max-examples", "4", "--seed", "7", "--workers", "1", "--request-timeout", "20",
         "--generation-database", "none", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    summary = proc.stdout[-6000:]
    assert proc.returncode == 0, summary
    assert " passed" in summary and "generated" in summary  # it did run cases
    assert server.proc.poll() is None
