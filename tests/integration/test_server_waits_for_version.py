"""Any install order: a real server started before its version is in the store waits for it (live,
not ready, saying why), then loads it by itself once the store publishes it."""
from __future__ import annotations

import json
import time

import pytest
import requests

from don_core.store import LocalStore
from tests.fixtures_server import copy_version

ROW = [0.5] * 448
V1 = "/v1/models/don-rf:predict"
V2 = "/v2/models/don-rf/infer"
V2_BODY = {"inputs": [{"name": "spectra", "shape": [1, 448], "datatype": "FP32", "data": ROW}]}
READY_WITHIN_S = 60  # poll every 2 s + verify and load on a busy machine


def _log_lines(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _wait_until(server, path: str, status: int, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if requests.get(server.url(path), timeout=5).status_code == status:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{path} not {status} within {seconds} s:\n{server.log()[-3000:]}")


def test_server_waits_for_its_version_then_serves_it(serving_store, start_server, tmp_path):
    root = tmp_path / "store"  # empty: not even the model's directory
    model_dir = root / "don-rf" / "1"
    server = start_server("don-rf", model_dir, ready=False)
    reason = ("version 1 of don-rf is not in the store yet: waiting for "
              f"{model_dir / 'metadata.json'}")

    assert requests.get(server.url("/v2/health/live")).status_code == 200
    for path in ("/v2/health/ready", "/v2/models/don-rf/ready",
                 "/v2/models/don-rf/versions/1/ready"):
        r = requests.get(server.url(path))
        assert r.status_code == 503, (path, r.text)
        assert r.json()["ready"] is False and r.json()["reason"] == reason, (path, r.text)
    for r in (requests.get(server.url("/v2/models/don-rf")),
              requests.post(server.url(V1), json={"instances": [ROW]}),
              requests.post(server.url(V2), json=V2_BODY)):
        assert r.status_code == 503 and r.json()["error"] == f"model is not ready: {reason}", r.text
    status = requests.get(server.url("/status")).json()
    assert (status["state"], status["ready"], status["reason"]) == ("waiting", False, reason)
    assert not root.exists(), "the serving path must never create anything in the store"

    time.sleep(5)  # a few polls: the wait is logged once, not once a poll
    waits = [l for l in _log_lines(server) if l["message"] == reason]
    assert len(waits) == 1 and waits[0]["level"] == "WARNING", waits

    LocalStore(str(root)).import_version("don-rf", 1, serving_store / "don-rf" / "1")
    took = _wait_until(server, "/v2/health/ready", 200, READY_WITHIN_S)
    ready = requests.get(server.url("/v2/health/ready")).json()
    assert ready == {"ready": True}, ready
    r = requests.post(server.url(V1), json={"instances": [ROW, ROW]})
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1", r.text
    assert len(r.json()["predictions"]) == 2
    status = requests.get(server.url("/status")).json()
    assert (status["state"], status["version"], status["reason"]) == ("ready", "1", None)
    messages = [l["message"] for l in _log_lines(server)]
    assert any(m.startswith(f"{model_dir} appeared in the store after") for m in messages)
    assert any(m.startswith("serving don-rf version 1") for m in messages), messages
    print(f"ready {took:.1f} s after the version was published")


def test_a_version_that_appears_broken_is_refused_as_at_start(serving_store, start_server,
                                                             tmp_path):
    def corrupt(d):
        path = d / "model.joblib"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    model_dir = tmp_path / "store" / "don-rf" / "1"
    model_dir.parent.mkdir(parents=True)
    server = start_server("don-rf", model_dir, ready=False)
    assert requests.get(server.url("/status")).json()["state"] == "waiting"
    staged = copy_version(serving_store / "don-rf" / "1", tmp_path / "staged", corrupt)
    staged.rename(model_dir)  # appears at once, metadata.json inside (the store's publish)

    deadline = time.monotonic() + READY_WITHIN_S
    while requests.get(server.url("/status")).json()["state"] in ("waiting", "loading"):
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.2)
    status = requests.get(server.url("/status")).json()
    assert status["state"] == "refused" and "model.joblib fails its sha256 check" in status["reason"]
    r = requests.get(server.url("/v2/health/ready"))
    assert r.status_code == 503 and "sha256" in r.json()["reason"]
    assert requests.get(server.url("/v2/health/live")).status_code == 200
    assert server.proc.poll() is None


@pytest.mark.slow  # three server processes
def test_each_worker_waits_without_blocking_its_start(serving_store, start_server, tmp_path):
    """--workers 2: a worker's start waits for its load, never for a version still to come (it
    would accept no connection, and the liveness probe would restart the pod)."""
    root = tmp_path / "store"
    server = start_server("don-rf", root / "don-rf" / "1", "--workers", "2", "--enable_grpc", "false",
                          ready=False)
    r = requests.get(server.url("/v2/health/ready"))
    assert r.status_code == 503 and "is not in the store yet" in r.json()["reason"], r.text
    LocalStore(str(root)).import_version("don-rf", 1, serving_store / "don-rf" / "1")
    deadline = time.monotonic() + 2 * READY_WITHIN_S
    # a new connection per request reaches either worker: both must have loaded
    while time.monotonic() < deadline:
        answers = [requests.post(server.url(V1), json={"instances": [ROW]}) for _ in range(6)]
        if all(r.status_code == 200 for r in answers):
            break
        time.sleep(0.5)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert {r.headers["X-Model-Version"] for r in answers} == {"1"}
