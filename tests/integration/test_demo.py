"""`make demo`, the README's first command: train both families on the embedded default, serve them
and call them over V1 and V2 (here with --once, so it exits after the calls)."""
from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from don_core.artifact import verify_version_dir
from tests.conftest import REPO
from tests.net import free_port


def two_free_ports() -> int:
    """A port P with P+1 also free (the demo serves don-rf on P and don-tf on P+1)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports")


@pytest.mark.slow
def test_demo_trains_serves_and_calls_both_families(tmp_path):
    store = tmp_path / "store"
    port, console_port = two_free_ports(), free_port()
    out = subprocess.run([sys.executable, "-m", "scripts.demo", "--once", "--store", str(store),
                          "--port", str(port), "--console_port", str(console_port)], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    for model in ("don-rf", "don-tf"):
        verify_version_dir(store / model / "1")
        assert f"{model} version 1 (V1 and V2), three fresh synthetic spectra" in out.stdout
    calls = re.findall(r"true\s+(\d+) ppb\s+V1\s+(\d+) ppb\s+V2\s+(\d+) ppb", out.stdout)
    assert len(calls) == 6, out.stdout
    assert all(v1 == v2 for _, v1, v2 in calls), "V1 and V2 answered one spectrum differently"
    # Fresh spectra, not training rows: a model that only echoed its training targets would not get
    # all six right, and one that learned nothing would not rank low below high.
    assert any(true != v1 for true, v1, _ in calls)
    rf = [int(v1) for _, v1, _ in calls[:3]]
    assert rf[0] < rf[2], f"low- and high-DON spectra not told apart: {calls}"
    assert f"http://127.0.0.1:{port}/metrics" in out.stdout
    # the web console was started after the forest's first answer and answered its health check
    assert out.stdout.index("don-rf version 1 (V1 and V2)") < out.stdout.index("web console starting")
    assert f"Web console: http://127.0.0.1:{console_port}" in out.stdout
    # every prediction was recorded by the prediction recorder on SQLite
    assert f"6 prediction records stored in {tmp_path / 'store.recorder.db'}" in out.stdout
