"""pytest fixtures for the operator and backup tests (registered in tests/conftest.py).

(The moto S3 server, ``s3_env`` and ``s3_bucket`` come from tests/conftest.py.)
- ``tiny_store``: a local store of small but complete versions (real sklearn pipelines and golden
  sets, published by don_core's store); fast, for tests about copying and rollouts.
- ``rollout_store``, ``server_processes``/``model_servers``, ``operator_cluster``: the apiserver
  tests' model store, real model-server processes (some with an injected fault) and the operator
  process running against ``kube_apiserver``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures_server import ServerProcess


def publish_tiny_version(root: Path, model: str = "don-rf", seed: int = 0,
                         broken: bool = False, reference: bool = False) -> int:
    """A small real sklearn version published with the store's own code.

    Targets follow log1p(ppb) = 5 + 4*band10 + noise (about 300 to 4000 ppb, so some lie above
    the 1000 ppb limit); the golden set is up to 30 held-out rows, so two healthy versions score
    alike on it. `broken` trains on shuffled targets: a valid version that predicts badly. With
    `reference`, rows keyed `tiny-<i>` that the reference rule selects are never fitted on, and the
    first such version stores them as the model's reference set, as the training job does.
    """
    import joblib
    import numpy as np
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from don_core import reference as ref
    from don_core.artifact import build_metadata, reference_rows, utc_now, write_golden
    from don_core.schema import ID_COLUMN, N_BANDS
    from don_core.store import open_store
    from training_job import drift

    store = open_store(str(root))
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, size=(300, N_BANDS))
    y = np.expm1(5 + 4 * x[:, 10] + rng.normal(0, 0.3, size=len(x)))
    keys = [f"tiny-{i}" for i in range(len(x))]
    held = ref.in_reference(keys, ref.DEFAULT_FRACTION) if reference else np.zeros(len(x), bool)
    if reference and store.read_reference(model) is None:
        store.create_reference(model, ref.build_reference(
            model=model, key=ID_COLUMN, fraction=ref.DEFAULT_FRACTION,
            keys=[k for k, h in zip(keys, held) if h], X=x[held], y=y[held], created=utc_now(),
            source={"source": f"tiny:{seed}", "rows": len(x)}))
    fit = np.flatnonzero(~held[:260])
    golden = 260 + np.flatnonzero(~held[260:])[:30]
    train_y = rng.permutation(y[fit]) if broken else y[fit]
    pipeline = make_pipeline(StandardScaler(), TransformedTargetRegressor(
        regressor=Ridge(alpha=10.0), func=np.log1p, inverse_func=np.expm1))
    staging = root.parent / f".tiny-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    joblib.dump(pipeline.fit(x[fit], train_y), staging / "model.joblib")
    write_golden(staging / "golden.json", x[golden], y[golden], [keys[i] for i in golden],
                 reference_ppb=pipeline.predict(reference_rows(x[golden])))
    metadata = build_metadata(model=model, version=0, family="sklearn", files={},
                              training_data={"source": "synthetic", "sha256": "0" * 64,
                                             "rows": len(fit)},
                              hyperparameters={"seed": seed, "broken": broken},
                              metrics={"drift": drift.export(x[fit], staging, seed)},
                              target_range_ppb=(float(y.min()), float(y.max())))
    for key in ("version", "files"):
        metadata.pop(key)
    try:
        return store.publish(model, staging, metadata)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def running_recorder(directory: Path, token: str):
    """A real prediction recorder (ops/recorder) on loopback with a SQLite file in `directory`;
    yields its base URL."""
    import threading

    from ops.recorder.server import Settings, make_server
    (directory / "token").write_text(token)
    server, rec = make_server(Settings(db_url=f"sqlite:///{directory / 'recorder.db'}", port=0,
                                       token_file=str(directory / "token"), metrics_cache_seconds=0,
                                       retention_interval=3600))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        rec.engine.dispose()


@pytest.fixture
def tiny_store(tmp_path) -> Path:
    """A local store with don-rf versions 1 and 2 and don-tf version 1 (tiny real pipelines)."""
    root = tmp_path / "pvc"
    root.mkdir()
    for model, seed in (("don-rf", 1), ("don-rf", 2), ("don-tf", 3)):
        publish_tiny_version(root, model, seed)
    return root


# ---- real model servers and the operator, for the apiserver tests ---------------------------

class OperatorProcess:
    """`python -m ops operator` against a kubeconfig, restartable (for the resume test)."""

    def __init__(self, kubeconfig: Path, log_dir: Path, tick: float = 0.3, args: tuple[str, ...] = ()):
        self.kubeconfig, self.log_dir, self.tick, self.args = kubeconfig, log_dir, tick, args
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log = open(self.log_dir / f"operator-{self.starts}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ops", "operator", "--kubeconfig", str(self.kubeconfig),
             "--tick", str(self.tick), *self.args], cwd=Path(__file__).resolve().parents[1],
            env=dict(os.environ, KUBECONFIG=str(self.kubeconfig)),
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.log.closed:
            self.log.close()


@pytest.fixture(scope="module")
def rollout_store(tmp_path_factory) -> Path:
    """Store with model `don` and its reference set: v1 (stable), v2 (healthy candidate), v3
    (broken candidate)."""
    root = tmp_path_factory.mktemp("rollout-store")
    for seed, broken in ((1, False), (2, False), (3, True)):
        publish_tiny_version(root, "don", seed, broken, reference=True)
    return root


@pytest.fixture(scope="module")
def server_processes(rollout_store, tmp_path_factory):
    """Real model servers (started, maybe not ready yet): stable v1, healthy v2, slow v2,
    erroring v2 and broken v3. Separate from `model_servers` so that they can boot while the
    API server starts."""
    logs = tmp_path_factory.mktemp("server-logs")
    plan = {"stable": (1, None), "good": (2, None), "slow": (2, "slow:0.6"),
            "error": (2, "error:3"), "worse": (3, None)}
    servers = {name: ServerProcess("don", rollout_store / "don" / str(version), logs / f"{name}.log",
                                   fault=fault)
               for name, (version, fault) in plan.items()}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def model_servers(server_processes):
    for server in server_processes.values():
        server.wait(timeout=90)
    return server_processes


@pytest.fixture(scope="module")
def operator_cluster(kube_apiserver, kserve_isvc_crd, tmp_path_factory):
    """The API server with the ModelRollout CRD installed and the operator running against it."""
    from tests.fixtures_cluster import install_crds
    crd = Path(__file__).resolve().parents[1] / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml"
    install_crds(kube_apiserver, [crd])
    operator = OperatorProcess(kube_apiserver.kubeconfig, tmp_path_factory.mktemp("operator-logs"))
    operator.start()
    try:
        yield kube_apiserver, operator
    finally:
        operator.stop()
