"""pytest fixtures for the server tests (registered in tests/conftest.py).

Servers are real `python -m model_server` subprocesses on free loopback ports, started on the
model versions of the shared `model_store` (trained by the training CLI), and killed in teardown.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from don_core.artifact import dump_metadata, hash_tree
from tests.net import free_port, stop_group, wait_for_http

REPO = Path(__file__).resolve().parents[1]


# Runs the real model server with one fault injected into DonModel.infer (the prediction path):
# slow:SECONDS sleeps before every prediction; error:N fails every Nth prediction with an
# exception, which the server answers with 500 and counts as a server_error.
FAULTY_SERVER = """
import itertools, os, sys, time
import model_server.model as served
kind, _, value = os.environ["DON_TEST_FAULT"].partition(":")
original, calls = served.DonModel.infer, itertools.count(1)
def infer(self, x):
    if kind == "slow":
        time.sleep(float(value))
    elif kind == "error" and next(calls) % int(value) == 0:
        raise RuntimeError("injected fault")
    return original(self, x)
served.DonModel.infer = infer
from model_server.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


class ServerProcess:
    """`python -m model_server` on loopback (optionally with a FAULTY_SERVER fault); `wait` until
    ready (or only live, for refusals)."""

    def __init__(self, model_name: str, model_dir: Path, log_path: Path, *args: str,
                 env: dict | None = None, fault: str | None = None):
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log_path = log_path
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("OTEL_", "DON_API_TOKEN", "DON_RATE_LIMIT"))}
        program = ["-c", FAULTY_SERVER] if fault else ["-m", "model_server"]
        self.proc = subprocess.Popen(
            [sys.executable, *program, "--model_name", model_name,
             "--model_dir", str(model_dir), "--http_port", str(self.http_port),
             "--grpc_port", str(self.grpc_port), *args],
            cwd=REPO, env={**clean, "PYTHONPATH": str(REPO), "DON_TEST_FAULT": fault or "",
                           **(env or {})},
            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, path: str) -> str:
        return self.base + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, ready: bool = True, timeout: float = 180.0) -> "ServerProcess":
        path = "/v2/health/ready" if ready else "/v2/health/live"
        try:
            wait_for_http(self.url(path), timeout, self.proc, ok_only=True)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"server not {'ready' if ready else 'live'}: {exc}:\n"
                                 f"{self.log()[-4000:]}") from None
        return self

    def terminate(self) -> None:
        """Ask it to stop without waiting (stop several servers in parallel, then `stop` each)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        stop_group(self.proc, 20)


@pytest.fixture(scope="session")
def serving_store(request) -> Path:
    """The shared trained store; DON_SERVER_TEST_STORE reuses an existing one while iterating."""
    override = os.environ.get("DON_SERVER_TEST_STORE")
    if override:
        return Path(override)
    return request.getfixturevalue("model_store")


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Factory: start_server(model_name, model_dir, *args, env=..., ready=True)."""
    started: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(model_name: str, model_dir: Path, *args: str, env: dict | None = None,
              ready: bool = True) -> ServerProcess:
        server = ServerProcess(model_name, model_dir, logs / f"server-{len(started)}.log",
                               *args, env=env)
        started.append(server)
        try:
            return server.wait(ready=ready)
        except AssertionError:
            server.stop()
            raise

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def rf_server(serving_store, start_server) -> ServerProcess:
    return start_server("don-rf", serving_store / "don-rf" / "1")


@pytest.fixture(scope="session")
def tf_server(serving_store, start_server) -> ServerProcess:
    return start_server("don-tf", serving_store / "don-tf" / "1")


@pytest.fixture(scope="session")
def golden_rows(serving_store) -> list[list[float]]:
    golden = json.loads((serving_store / "don-rf" / "1" / "golden.json").read_text())
    return golden["instances"]


def copy_version(src: Path, dst: Path, mutate=None, rehash: bool = False) -> Path:
    """A copy of a version directory, optionally altered; `rehash` re-signs metadata.json."""
    shutil.copytree(src, dst)
    if mutate is not None:
        mutate(dst)
    if rehash:
        metadata = json.loads((dst / "metadata.json").read_text())
        metadata["files"] = hash_tree(dst)
        (dst / "metadata.json").write_bytes(dump_metadata(metadata))
    return dst


@pytest.fixture
def recorder_url(tmp_path):
    """A real prediction recorder (`python -m ops recorder serve`, SQLite, no token) on loopback."""
    from tests.net import running
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, "-m", "ops", "recorder", "serve", "--db",
                  f"sqlite:///{tmp_path / 'rec.db'}", "--host", "127.0.0.1", "--port", str(port),
                  "--no-auth"], url + "/readyz", timeout=60,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        yield url


def post_records(recorder_url: str, records: list[dict]) -> None:
    """Prediction records into the recorder as a model server sends them (one CloudEvent)."""
    import uuid

    import requests

    from don_core.records import RECORDS_EVENT_TYPE
    sent = requests.post(recorder_url + "/", data=json.dumps({"records": records}), timeout=30, headers={
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-type": RECORDS_EVENT_TYPE,
        "ce-id": uuid.uuid4().hex, "ce-source": "test"})
    assert sent.status_code == 202, sent.text
