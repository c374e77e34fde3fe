"""The `helm test` hook's program against the real model server (both families) on loopback."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chart, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"model server exited: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"model server on {port} not ready after {timeout} s")


@pytest.fixture(scope="module")
def served_models(model_store):
    """Both models served by `python -m model_server`, as the chart's Deployments run it."""
    servers, ports = [], {}
    try:
        for name in ("don-rf", "don-tf"):
            http_port, grpc_port = free_port(), free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "model_server", f"--model_name={name}",
                 f"--model_dir={model_store / name / '1'}", f"--http_port={http_port}",
                 f"--grpc_port={grpc_port}"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True, env={**os.environ, "OTEL_SDK_DISABLED": "true"})
            servers.append(proc)
            ports[name] = http_port
        for proc, port in zip(servers, ports.values()):
            wait_ready(port, proc)
        yield ports
    finally:
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def test_hook_program_predicts_with_both_models(renders, served_models):
    [pod] = renders["deployment-pvc"].of_kind("Pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    for name, port in served_models.items():
        prefix = json.loads(env["DON_MODELS"])[name]["serviceEnv"]
        env[f"{prefix}_SERVICE_HOST"], env[f"{prefix}_SERVICE_PORT"] = "127.0.0.1", str(port)
    out = subprocess.run([sys.executable, "-c", container["args"][0]], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok don-rf version=1 ppb=" in out.stdout and "ok don-tf version=1 ppb=" in out.stdout
