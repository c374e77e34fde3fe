"""The reference-set gate with real versions and real model servers.

Three don-rf versions trained by the training CLI: v1 (stable) and v2 on the same CSV, v3 on a
copy of it with the target column shuffled (a broken lab export: it trains and serves fine but
predicts badly). The operator's analysis (`Engine.analyse`, as the controller calls it) sends the
stored reference rows and the golden.json rows to real model-server processes over HTTP.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.fixtures_server import ServerProcess

pytestmark = pytest.mark.slow
MODEL = "don-rf"


def _train(data: Path, store: Path, seed: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training_job", "train", "--data", str(data),
                             "--store", str(store), "--model", MODEL, "--family", "rf",
                             "--seed", str(seed), "--quick", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _version(proc: subprocess.Popen) -> int:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return int(out.strip().splitlines()[-1].rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    from training_job.synthetic import generate, to_csv
    work = tmp_path_factory.mktemp("reference-gate")
    data = generate(300, seed=11)
    (work / "lab.csv").write_bytes(to_csv(data.X, data.y, data.ids))
    shuffled = np.random.default_rng(5).permutation(data.y)
    (work / "lab-shuffled.csv").write_bytes(to_csv(data.X, shuffled, data.ids))
    store = work / "store"
    # The first run creates the reference set from the good file; then the two candidates.
    assert _version(_train(work / "lab.csv", store, 1)) == 1
    # Training refuses the shuffled file (its reference rows contradict the stored set) unless
    # told the relabel is deliberate: the gate must catch such a version all the same.
    good = _train(work / "lab.csv", store, 2)
    broken = _train(work / "lab-shuffled.csv", store, 1, "--accept-relabel")
    versions = {"stable": 1, "good": _version(good), "broken": _version(broken)}
    servers = {name: ServerProcess(MODEL, store / MODEL / str(v), work / f"{name}.log")
               for name, v in versions.items()}
    try:
        for server in servers.values():
            server.wait(timeout=180)
        yield store, versions, servers
    finally:
        for server in servers.values():
            server.stop()


def analyse(root: Path, stable: ServerProcess, canary: ServerProcess, version: int, **spec):
    from ops.rollout.controller import Engine
    from ops.rollout.spec import parse_spec
    from ops.rollout.status import RolloutStatus
    body = {"target": MODEL, "candidate": {"version": version},
            "endpoints": {"stableUrl": stable.base, "canaryUrl": canary.base,
                          "modelName": MODEL, "timeoutSeconds": 30},
            "analysis": {"minRequests": 1, "maxP99LatencyMs": 10000}}  # the metrics are not
    body.update(spec)                                                     # under test here
    status = {"candidateStorageUri": f"{root}/{MODEL}/{version}", "candidateVersion": version,
              "stableVersion": 1}
    result, _ = Engine(kube=None, emit=None).analyse("default", parse_spec(body),
                                                     RolloutStatus.from_wire(status))
    return result, {c["name"]: c for c in result["checks"]}


def test_a_normally_trained_candidate_passes_the_reference_gate(gate):
    store, versions, servers = gate
    result, checks = analyse(store, servers["stable"], servers["good"], versions["good"])
    assert result["verdict"] == "Pass", result["summary"]
    assert {"servedCorrectly", "referenceErrorIncrease",
            "referenceFalseAcceptIncrease"} <= set(checks)
    assert abs(checks["referenceErrorIncrease"]["value"]) < 0.1


def test_a_candidate_trained_on_shuffled_targets_fails_it(gate):
    store, versions, servers = gate
    result, checks = analyse(store, servers["stable"], servers["broken"], versions["broken"])
    assert result["verdict"] == "Fail"
    assert checks["referenceErrorIncrease"]["result"] == "Fail", checks
    assert checks["referenceErrorIncrease"]["value"] > 0.2
    assert "referenceErrorIncrease" in result["summary"]
    # the served-correctly check passes: the broken version is served as it was trained (it
    # answers the predictions its golden.json recorded); only rows no version trained on expose it
    assert checks["servedCorrectly"]["result"] == "Pass"
    metadata = json.loads((store / MODEL / str(versions["broken"]) / "metadata.json").read_text())
    held = metadata["training_data"]["reference"]
    assert not held["created_by_this_run"]
    assert held["relabel"]["verdict"] == "accepted" and held["relabel"]["keys"]  # rows differ
    first = json.loads((store / MODEL / "1" / "metadata.json").read_text())
    assert held["sha256"] == first["training_data"]["reference"]["sha256"]


def test_an_unreadable_reference_set_is_inconclusive_naming_path_and_error(gate, tmp_path):
    store, versions, servers = gate
    result, checks = analyse(store, servers["stable"], servers["good"], versions["good"],
                             store={"root": str(tmp_path), "model": MODEL},
                             analysis={"minRequests": 1, "maxP99LatencyMs": 10000})
    assert result["verdict"] == "Inconclusive"
    assert checks["referenceSet"]["result"] == "Inconclusive"
    assert f"reference set unreadable: {tmp_path}/{MODEL}/reference.json: does not exist" in \
        result["summary"]
