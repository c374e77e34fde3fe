"""Canary analysis with metrics from a real Prometheus server (Debian's `prometheus` binary)
scraping real model-server processes on loopback. Installs the Debian package when it is missing
(as root); skips only where that is impossible, and fails there under CI=true."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import requests

from tests.cluster import binaries
from ops.rollout.controller import Engine
from ops.rollout.spec import parse_spec
from ops.rollout.status import RolloutStatus
from tests.conftest import unavailable
from tests.fixtures_server import ServerProcess
from tests.net import free_port, wait_for_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(rollout_store, tmp_path_factory):
    logs = tmp_path_factory.mktemp("prom-server-logs")
    pair = {"stable": ServerProcess("don", rollout_store / "don" / "1", logs / "stable.log"),
            "canary": ServerProcess("don", rollout_store / "don" / "2", logs / "canary.log",
                                    fault="error:4")}
    try:
        for server in pair.values():
            server.wait(timeout=90)
        yield pair
    finally:
        for server in pair.values():
            server.stop()


@pytest.fixture(scope="module")
def prometheus(servers, tmp_path_factory):
    if not shutil.which("prometheus"):
        try:
            binaries.apt_install(["prometheus"])
        except binaries.BuildError as exc:
            unavailable(f"no prometheus binary (Debian package `prometheus`): {exc}")
    binary = shutil.which("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    targets = ", ".join(f"'127.0.0.1:{s.http_port}'" for s in servers.values())
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: models, static_configs: [{{targets: [{targets}]}}]}}]\n")
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    process = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                                f"--storage.tsdb.path={work / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/-/ready", timeout=60, process=process, ok_only=True)  # 503 while starting
        deadline = time.monotonic() + 30  # the first scrape comes a few seconds after start
        while time.monotonic() < deadline:
            up = requests.get(f"{url}/api/v1/query", params={"query": "up == 1"}, timeout=5).json()
            if len(up["data"]["result"]) == len(servers):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"Prometheus at {url} did not scrape the model servers")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_prometheus_source_judges_the_erroring_canary(servers, prometheus, rollout_store):
    stable, canary = servers["stable"], servers["canary"]
    rows = json.loads((rollout_store / "don" / "2" / "golden.json").read_text())["instances"]
    spec = parse_spec({"target": "don", "candidate": {"version": 2}, "interval": "10s",
                       "metrics": {"source": "Prometheus", "prometheusUrl": prometheus},
                       "analysis": {"minRequests": 5, "maxP99LatencyMs": 300},
                       "endpoints": {"stableUrl": stable.base, "canaryUrl": canary.base,
                                     "modelName": "don"},
                       "store": {"root": str(rollout_store), "model": "don"}})
    status = RolloutStatus(stable_version=1, candidate_version=2, candidate_storage_uri="pvc://m/don/2")
    session = requests.Session()
    deadline = time.monotonic() + 6  # several scrapes of steady traffic
    while time.monotonic() < deadline:
        for server in (stable, canary):
            session.post(f"{server.base}/v1/models/don:predict", json={"instances": [rows[0]]}, timeout=5)
        time.sleep(0.02)
    time.sleep(1.5)  # one more scrape after the last request
    result, snapshot = Engine(kube=None, emit=None).analyse("default", spec, status)
    assert snapshot == {}  # Prometheus keeps the history; nothing to carry in the status
    assert result["stable"]["successRate"] == pytest.approx(1.0)
    assert result["stable"]["requests"] >= 20
    # every 4th canary prediction fails: 75% success, measured by Prometheus
    assert result["canary"]["successRate"] == pytest.approx(0.75, abs=0.06)
    assert 0 < result["canary"]["p99LatencyMs"] < 300
    checks = {c["name"]: c["result"] for c in result["checks"]}
    assert checks["successRate"] == "Fail" and checks["p99LatencyMs"] == "Pass"
    assert result["verdict"] == "Fail"
