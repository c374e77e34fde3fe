"""Fixtures every test area shares: paths to shared reference data and a small trained model store."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import progress
from tests.net import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

pytest_plugins = [
    "tests.fixtures_server",
    "tests.fixtures_chart",
    "tests.fixtures_operator",
    "tests.fixtures_cluster",
    "tests.fixtures_browser",
    "tests.fixtures_postgres",
]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared reference folder {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    path = SHARED / "data" / "corn_hsi_don.csv"
    if not path.is_file():
        pytest.skip(f"real data {path} is absent (it is never copied into the repository)")
    return path


@pytest.fixture(scope="session")
def kserve_crd_dir() -> Path:
    path = SHARED / "kserve-crds"
    if not (path / "serving.kserve.io_inferenceservices.yaml").is_file():
        pytest.skip(f"KServe CRD schemas are absent from {path}")
    return path


def run_training(*args: str, env: dict | None = None, check: bool = True):
    """Run the training CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "training_job", *args], cwd=REPO,
                          capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """A local store with don-rf versions 1 and 2 and don-tf version 1 (synthetic data, --quick)."""
    root = tmp_path_factory.mktemp("store")
    for model, family, seed in (("don-rf", "rf", 1), ("don-rf", "rf", 2), ("don-tf", "tf", 1)):
        usual = "about 2 minutes" if family == "tf" else "about 30 s"
        progress.say(f"model_store: training {model} seed {seed} ({family}, --quick) for the "
                     f"server tests, usually {usual}")
        run_training("train", "--data", "synthetic:300", "--store", str(root), "--model", model,
                     "--family", family, "--seed", str(seed), "--quick")
    return root


@contextlib.contextmanager
def running_moto():
    """A real S3-compatible server (moto) on loopback while the block runs; yields its URL."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, timeout=90, process=proc)  # its first start imports a lot: slow on a busy host
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback for the session; yields its endpoint URL."""
    with running_moto() as url:
        yield url


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS_* variables pointing boto3 at the loopback S3 server, as a Kubernetes Secret would."""
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh, empty bucket name on the loopback S3 server."""
    import uuid

    from don_core.store import s3_client
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return name


def pytest_collection_modifyitems(items):
    """The local cluster behind the e2e suite is session-scoped and heavy (kubelet, containerd,
    pods): run those tests last so that it is up only at the end and never slows the others."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


def pytest_configure(config):
    config._don_progress_stop = progress.start()


def pytest_unconfigure(config):
    stop = getattr(config, "_don_progress_stop", None)
    if stop is not None:
        stop.set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    progress.now_running(f"{item.nodeid} (setting up its fixtures)")
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    progress.now_running(item.nodeid)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    progress.now_running(f"{item.nodeid} (tearing down)")
    yield
