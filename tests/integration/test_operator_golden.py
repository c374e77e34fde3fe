"""The served-correctly check (ops/rollout/golden.py) with real versions and real model servers.

Three don-rf versions trained by the training CLI on the same CSV with seeds 1, 2 and 3: good
retrains of one another, the case the old stable-vs-canary golden comparison rolled back one time
in five. Two canaries answer wrongly under version 2's name: a server of version 1's files with
metadata.json relabelled as version 2 (every sha256 still holds, and the two forests are equally
accurate), and version 2 with every tree's leaves scaled (a shifted model; its golden.json is
rewritten to match, as a careless rebuild would, so the server loads it). The operator's analysis
(`Engine.analyse`, as the controller calls it) sends the recorded rows over HTTP.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from don_core.contract import ONNX_MIN_AGREEMENT, OUTPUT_NAME
from tests.conftest import REPO
from tests.fixtures_server import ServerProcess
from tests.net import free_port

pytestmark = pytest.mark.slow
MODEL = "don-rf"


def _train(data: Path, store: Path, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training_job", "train", "--data", str(data),
                             "--store", str(store), "--model", MODEL, "--family", "rf",
                             "--seed", str(seed), "--quick"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _version(proc: subprocess.Popen) -> int:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return int(out.strip().splitlines()[-1].rsplit("/", 1)[1])


def _republish(directory: Path, version: int) -> None:
    """metadata.json naming `version` and the files as they are now (what a server verifies)."""
    from don_core.artifact import dump_metadata, hash_tree
    metadata = json.loads((directory / "metadata.json").read_text())
    metadata.update(version=version, files=hash_tree(directory))
    (directory / "metadata.json").write_bytes(dump_metadata(metadata))


def impostor(store: Path, work: Path) -> Path:
    """Version 1's files under version 2's name."""
    target = work / "impostor" / "2"
    shutil.copytree(store / MODEL / "1", target)
    target.chmod(0o755)
    (target / "metadata.json").chmod(0o644)
    _republish(target, 2)
    return target


def shifted(store: Path, work: Path, factor: float = 1.1) -> Path:
    """Version 2 whose forest predicts sqrt(ppb) x `factor` (ppb x factor^2), with golden.json's
    recorded predictions made by the shifted model."""
    import joblib

    from don_core.artifact import REFERENCE_KEY, reference_rows
    target = work / "shifted" / "2"
    shutil.copytree(store / MODEL / "2", target)
    for path in (target, *target.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    pipeline = joblib.load(target / "model.joblib")
    for tree in pipeline[-1].regressor_.estimators_:
        tree.tree_.value[:] *= factor
    joblib.dump(pipeline, target / "model.joblib")
    golden = json.loads((target / "golden.json").read_text())
    golden[REFERENCE_KEY][OUTPUT_NAME] = pipeline.predict(reference_rows(
        golden["instances"], golden[REFERENCE_KEY]["probe"])).tolist()
    (target / "golden.json").write_text(json.dumps(golden))
    _republish(target, 2)
    return target


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from training_job.synthetic import generate, to_csv
    work = tmp_path_factory.mktemp("served-correctly")
    data = generate(300, seed=11)
    (work / "lab.csv").write_bytes(to_csv(data.X, data.y, data.ids))
    store = work / "store"
    # the first run creates the model's reference set; then two retrains with new seeds
    assert _version(_train(work / "lab.csv", store, 1)) == 1
    retrains = [_train(work / "lab.csv", store, seed) for seed in (2, 3)]
    assert sorted(_version(proc) for proc in retrains) == [2, 3]  # seeds 2 and 3, in either order
    dirs = {"stable": store / MODEL / "1", "v2": store / MODEL / "2", "v3": store / MODEL / "3",
            "impostor": impostor(store, work), "shifted": shifted(store, work)}
    servers = {name: ServerProcess(MODEL, path, work / f"{name}.log") for name, path in dirs.items()}
    try:
        for server in servers.values():
            server.wait(timeout=180)
        yield store, servers
    finally:
        for server in servers.values():
            server.stop()


def nobody() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def analyse(root: Path, stable: str, canary: str, version: int, **analysis):
    from ops.rollout.controller import Engine
    from ops.rollout.spec import parse_spec
    from ops.rollout.status import RolloutStatus
    body = {"target": MODEL, "candidate": {"version": version},
            "endpoints": {"stableUrl": stable, "canaryUrl": canary,
                          "modelName": MODEL, "timeoutSeconds": 30},
            # the metrics and the reference set are not under test here
            "analysis": dict({"minRequests": 1, "maxP99LatencyMs": 10000, "referenceSet": False},
                             **analysis)}
    status = {"candidateStorageUri": f"{root}/{MODEL}/{version}", "candidateVersion": version,
              "stableVersion": 1}
    result, _ = Engine(kube=None, emit=None).analyse("default", parse_spec(body),
                                                     RolloutStatus.from_wire(status))
    return result, {c["name"]: c for c in result["checks"]}


@pytest.mark.parametrize("canary,version", [("v2", 2), ("v3", 3)])
def test_a_retrain_with_a_new_seed_is_served_correctly_every_time(served, canary, version):
    store, servers = served
    for _ in range(3):
        result, checks = analyse(store, servers["stable"].base, servers[canary].base, version)
        check = checks["servedCorrectly"]
        assert check["result"] == "Pass", result["summary"]
        assert check["value"] >= ONNX_MIN_AGREEMENT and check["threshold"] == ONNX_MIN_AGREEMENT
        assert "rows within" in check["note"], check
    assert result["verdict"] == "Pass", result["summary"]


def test_the_stable_is_not_asked(served):
    """A stable that cannot answer changes nothing: the check is about the canary alone."""
    store, servers = served
    result, checks = analyse(store, nobody(), servers["v2"].base, 2)
    assert checks["servedCorrectly"]["result"] == "Pass", result["summary"]


@pytest.mark.parametrize("canary", ["impostor", "shifted"])
def test_a_canary_that_answers_wrongly_fails(served, canary):
    store, servers = served
    result, checks = analyse(store, servers["stable"].base, servers[canary].base, 2)
    check = checks["servedCorrectly"]
    assert result["verdict"] == "Fail"
    assert check["result"] == "Fail" and check["value"] < ONNX_MIN_AGREEMENT, check
    assert f"servedCorrectly {check['value']:.4g} (below limit {ONNX_MIN_AGREEMENT})" in \
        result["summary"]


def test_a_canary_that_cannot_answer_fails(served):
    store, servers = served
    canary = nobody()
    result, checks = analyse(store, servers["stable"].base, canary, 2)
    assert result["verdict"] == "Fail"
    assert checks["servedCorrectly"]["result"] == "Fail"
    assert f"servedCorrectly: {canary}/v1/models/{MODEL}:predict" in result["summary"]


def test_a_version_without_recorded_predictions_is_inconclusive(served, tmp_path):
    store, servers = served
    older = tmp_path / MODEL / "2"
    shutil.copytree(store / MODEL / "2", older)
    for path in (older, *older.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    golden = json.loads((older / "golden.json").read_text())
    del golden["reference_predictions"]
    (older / "golden.json").write_text(json.dumps(golden))
    _republish(older, 2)
    result, checks = analyse(tmp_path, servers["stable"].base, servers["v2"].base, 2)
    assert result["verdict"] == "Inconclusive"
    assert checks["servedCorrectly"]["result"] == "Inconclusive"
    assert "records no predictions" in result["summary"] and "goldenSet false" in result["summary"]
