"""The `helm test` hook's program against the real model server (both families) on loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_server import ServerProcess

pytestmark = [pytest.mark.chart, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served_models(model_store, tmp_path_factory):
    """Both models served by `python -m model_server`, as the chart's Deployments run it."""
    logs = tmp_path_factory.mktemp("hook-servers")
    servers = {name: ServerProcess(name, model_store / name / "1", logs / f"{name}.log")
               for name in ("don-rf", "don-tf")}
    try:
        for server in servers.values():
            server.wait()
        yield {name: server.http_port for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


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
