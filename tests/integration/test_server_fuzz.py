"""schemathesis against the server's own OpenAPI document: no input makes it answer 5xx."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_schemathesis_finds_no_server_error(rf_server, tmp_path):
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists():
        cli = shutil.which("schemathesis")
    if not cli:
        pytest.fail("schemathesis is not installed (it is in the dev extra)")
    proc = subprocess.run(
        [str(cli), "run", rf_server.url("/openapi.json"), "--checks", "not_a_server_error",
         "--max-examples", "15", "--seed", "7", "--workers", "1", "--max-time", "60",
         "--request-timeout", "20", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    summary = proc.stdout[-3000:]
    assert proc.returncode == 0, summary
    assert "generated" in summary  # it did run cases
    assert rf_server.proc.poll() is None
