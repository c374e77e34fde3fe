"""The rollout operator against a real kube-apiserver (1.20) with the real KServe CRD installed.

The operator runs as its own process (`python -m ops operator`); stable and canary are real model
server processes on loopback (the erroring and slow canaries are the same server with a fault
injected into its prediction path); traffic is real V1 requests from a background thread.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from ops.rollout import GROUP, KIND, VERSION
from ops.rollout.kube import ISVC, Kube

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.apiserver, pytest.mark.slow]
STABLE_URI = "pvc://models/don/1"


@pytest.fixture(scope="module", autouse=True)
def _boot_servers_first(server_processes):
    """Autouse fixtures are set up first: the model servers boot while the API server starts."""


@pytest.fixture(scope="module")
def kube(operator_cluster) -> Kube:
    from kubernetes import config
    cluster, _ = operator_cluster
    return Kube(config.new_client_from_config(config_file=str(cluster.kubeconfig)))


@pytest.fixture
def namespace(kube) -> str:
    name = f"mro-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    return name


class Loop:
    """`step()` every `every` seconds in a background thread while the `with` block runs."""
    every = 0.2

    def __init__(self):
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.step()

    def step(self):
        raise NotImplementedError

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(10)


class Traffic(Loop):
    """Real V1 requests of one spectrum each to stable and canary, about 40 per second in all."""
    every = 0.05

    def __init__(self, stable_url: str, canary_url: str, instances: list):
        super().__init__()
        self.urls = [f"{stable_url}/v1/models/don:predict", f"{canary_url}/v1/models/don:predict"]
        self.instances, self.sent = instances, 0
        self.session = requests.Session()  # used by the loop's thread only

    def step(self):
        for url in self.urls:
            row = self.instances[self.sent % len(self.instances)]
            try:
                self.session.post(url, json={"instances": [row]}, timeout=5)
            except requests.RequestException:
                pass
            self.sent += 1


def golden_rows(store: Path, version: int) -> list:
    return json.loads((store / "don" / str(version) / "golden.json").read_text())["instances"]


def create_isvc(kube: Kube, ns: str, mode: str) -> dict:
    annotations = {"serving.kserve.io/deploymentMode": "Serverless" if mode == "Knative" else "Standard"}
    body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "don", "annotations": annotations},
            "spec": {"predictor": {"minReplicas": 1, "model": {
                "name": "kserve-container", "modelFormat": {"name": "sklearn"},
                "runtime": "don-predictor", "storageUri": STABLE_URI}}}}
    return kube.custom.create_namespaced_custom_object(*ISVC[:2], ns, ISVC[2], body)


def rollout(name: str, *, mode: str, version: int, stable_url: str, canary_url: str, store: Path,
            steps=(10, 25, 50, 100), interval: str = "1s", **analysis) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name},
            "spec": {"target": "don", "mode": mode, "candidate": {"version": version},
                     "steps": list(steps), "interval": interval,
                     # the default thresholds but for the request count and latency (a
                     # 1 s window of test traffic on a shared machine)
                     "analysis": dict({"minRequests": 5, "maxP99LatencyMs": 300}, **analysis),
                     "endpoints": {"stableUrl": stable_url, "canaryUrl": canary_url,
                                   "modelName": "don", "timeoutSeconds": 5},
                     "store": {"root": str(store), "model": "don"}}}


class Watcher:
    """Polls the rollout; a background thread records every weight the InferenceService carries."""

    def __init__(self, kube: Kube, ns: str, name: str, mode: str):
        self.kube, self.ns, self.name, self.mode = kube, ns, name, mode
        self.isvc_weights: list = []
        self._stop = threading.Event()
        if mode != "Deployment":
            threading.Thread(target=self._record, daemon=True).start()

    def _record(self):
        from ops.rollout.traffic import isvc_weight
        while not self._stop.wait(0.05):
            try:
                weight = isvc_weight(self.mode, self.isvc())
            except Exception:
                continue
            if not self.isvc_weights or self.isvc_weights[-1] != weight:
                self.isvc_weights.append(weight)

    def weights(self) -> list[int]:
        return [w for w in self.isvc_weights if w is not None]

    def isvc(self) -> dict:
        return self.kube.get_isvc(self.ns, "don")

    def until(self, predicate, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.kube.get_rollout(self.ns, self.name)
            if predicate(obj.get("status") or {}):
                time.sleep(0.2)  # let the recorder see the final state too
                if terminal(obj.get("status") or {}):
                    self._stop.set()
                return obj
            time.sleep(0.1)
        self._stop.set()
        raise AssertionError(f"timed out; last status: {json.dumps(obj.get('status'), indent=1)[:3000]}")


def events(kube: Kube, ns: str, name: str) -> list[str]:
    found = kube.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return sorted(e.reason for e in found)


def kubectl(cluster, *args: str) -> str:
    kubectl_bin = Path(sys.executable).parent / "kubectl"
    done = subprocess.run([str(kubectl_bin), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def terminal(status: dict) -> bool:
    return status.get("phase") in ("Promoted", "RolledBack", "Failed")


def test_healthy_candidate_is_promoted_through_every_step_standard_mode(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    cluster, _ = operator_cluster
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Standard")
    body = rollout("don-v2", mode="Standard", version=2, stable_url=stable.base,
                   canary_url=good.base, store=rollout_store, interval="2s")
    watcher = Watcher(kube, namespace, "don-v2", "Standard")
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, body)
        watcher.until(lambda s: s.get("phase") == "Progressing" and s.get("step") == 2)
        table = kubectl(cluster, "get", "modelrollouts", "-n", namespace)
        header, row = table.splitlines()[:2]
        assert header.split()[:6] == ["NAME", "TARGET", "PHASE", "WEIGHT", "STEP", "AGE"]
        assert row.split()[:3] == ["don-v2", "don", "Progressing"]
        assert tuple(row.split()[3:5]) in {("25", "2/4"), ("50", "3/4")}  # it may just have advanced
        # a second rollout on the same InferenceService is refused while this one runs
        kube.create_rollout(namespace, dict(body, metadata={"name": "don-v2-again"}))
        rival = Watcher(kube, namespace, "don-v2-again", "Standard").until(terminal)
        assert rival["status"]["phase"] == "Failed"
        assert "don-v2 is already rolling out don" in rival["status"]["message"]
        final = watcher.until(terminal, timeout=60)
    status = final["status"]
    assert status["phase"] == "Promoted", status["message"]
    assert [h["event"] for h in status["history"]] == \
        ["Started", "Advanced", "Advanced", "Advanced", "Promoted"]
    assert [h["weight"] for h in status["history"]] == [10, 25, 50, 100, 100]
    assert watcher.weights() == [10, 25, 50, 100]
    assert {c["name"]: c["result"] for c in status["lastAnalysis"]["checks"]} == {
        "successRate": "Pass", "p99LatencyMs": "Pass", "servedCorrectly": "Pass",
        "referenceErrorIncrease": "Pass", "referenceFalseAcceptIncrease": "Pass"}
    isvc = watcher.isvc()
    assert "canary" not in isvc["spec"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    assert events(kube, namespace, "don-v2") == sorted(["Started", "Advanced", "Advanced", "Advanced", "Promoted"])
    assert "Promoted" in kubectl(cluster, "get", "mro", "don-v2", "-n", namespace)


def test_healthy_candidate_knative_mode_uses_canary_traffic_percent(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Knative")
    watcher = Watcher(kube, namespace, "don-v2", "Knative")
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, rollout("don-v2", mode="Knative", version=2, steps=(20, 100),
                                               stable_url=stable.base, canary_url=good.base,
                                               store=rollout_store))
        during = watcher.until(lambda s: s.get("weight") == 20 and s.get("trafficApplied"))
        predictor = watcher.isvc()["spec"]["predictor"]
        # KServe's Knative canary: the new spec is the canary at x%, the previous revision keeps 100-x
        assert predictor["canaryTrafficPercent"] == 20
        assert predictor["model"]["storageUri"] == "pvc://models/don/2"
        assert during["status"]["phase"] == "Progressing"
        final = watcher.until(terminal)
    assert final["status"]["phase"] == "Promoted", final["status"]["message"]
    predictor = watcher.isvc()["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["storageUri"] == "pvc://models/don/2"


@pytest.mark.parametrize("canary,mode,failing,analysis", [
    ("error", "Standard", "successRate", {}),
    # a 0.6 s answer makes few requests per window: let one request be enough evidence
    ("slow", "Standard", "p99LatencyMs", {"minRequests": 1}),
    # trained on shuffled targets: served correctly (it answers as it was trained), worse on the
    # reference set (+60 % log1p MAE, above the default limit)
    ("worse", "Knative", "referenceErrorIncrease", {}),
])
def test_bad_candidate_is_rolled_back(kube, namespace, operator_cluster, model_servers,
                                      rollout_store, canary, mode, failing, analysis):
    stable, bad = model_servers["stable"], model_servers[canary]
    version = 3 if canary == "worse" else 2
    create_isvc(kube, namespace, mode)
    watcher = Watcher(kube, namespace, f"don-{canary}", mode)
    with Traffic(stable.base, bad.base, golden_rows(rollout_store, version)):
        kube.create_rollout(namespace, rollout(f"don-{canary}", mode=mode, version=version,
                                               stable_url=stable.base, canary_url=bad.base,
                                               store=rollout_store, **analysis))
        final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"))
    status = final["status"]
    assert status["phase"] == "RolledBack", status["message"]
    assert status["weight"] == 0 and status["step"] == 1 and status["failedChecks"] == 2
    history = [h["event"] for h in status["history"]]
    assert history[0] == "Started" and history[-1] == "RolledBack" and "Advanced" not in history
    checks = {c["name"]: c for c in status["lastAnalysis"]["checks"]}
    assert checks[failing]["result"] == "Fail", checks
    assert failing in status["message"]
    if canary == "worse":  # the served-correctly check does not judge accuracy
        assert checks["servedCorrectly"]["result"] == "Pass", checks
    predictor = watcher.isvc()["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == STABLE_URI  # all traffic back on the stable version
    if mode == "Knative":
        assert predictor["canaryTrafficPercent"] == 0
    else:
        assert "canary" not in watcher.isvc()["spec"]
    assert {"Started", "RolledBack"} <= set(events(kube, namespace, f"don-{canary}"))


def test_operator_killed_mid_rollout_resumes_without_repeating_or_skipping(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    _, operator = operator_cluster
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Standard")
    watcher = Watcher(kube, namespace, "don-v2", "Standard")
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, rollout("don-v2", mode="Standard", version=2, interval="3s",
                                               stable_url=stable.base, canary_url=good.base,
                                               store=rollout_store))
        watcher.until(lambda s: s.get("step") == 2 and s.get("trafficApplied"))
        operator.kill()
        time.sleep(4)  # the next analysis falls due while no operator runs
        frozen = kube.get_rollout(namespace, "don-v2")["status"]
        assert frozen["step"] == 2 and frozen["phase"] == "Progressing"
        operator.start()
        final = watcher.until(terminal, timeout=90)
    status = final["status"]
    assert status["phase"] == "Promoted", status["message"]
    assert [(h["event"], h["step"]) for h in status["history"]] == [
        ("Started", 1), ("Advanced", 2), ("Advanced", 3), ("Advanced", 4), ("Promoted", 4)]
    assert watcher.weights() == [10, 25, 50, 100]


def cli(cluster, *args: str) -> subprocess.CompletedProcess:
    """`python -m ops rollout ...`; in this process (an interpreter start per call costs ~2 s)."""
    from ops.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["rollout", "--kubeconfig", str(cluster.kubeconfig), *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_start_pause_resume_promote_and_abort(kube, namespace, operator_cluster,
                                                  model_servers, rollout_store):
    cluster, _ = operator_cluster
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Standard")
    started = cli(cluster, "-n", namespace, "start", "--target", "don", "--version", "2",
                  "--interval", "1h", "--stable-url", stable.base, "--canary-url", good.base,
                  "--model-name", "don", "--store-root", str(rollout_store))
    assert started.returncode == 0, started.stderr
    watcher = Watcher(kube, namespace, "don-v2", "Standard")
    watcher.until(lambda s: s.get("phase") == "Progressing" and s.get("trafficApplied"))
    assert cli(cluster, "-n", namespace, "pause", "don-v2").returncode == 0
    watcher.until(lambda s: s.get("phase") == "Paused")
    listing = cli(cluster, "-n", namespace, "status").stdout
    assert listing.splitlines()[0].split()[:7] == ["NAME", "TARGET", "MODE", "PHASE", "WEIGHT", "STEP", "FAILED"]
    assert listing.splitlines()[1].split()[:6] == ["don-v2", "don", "Standard", "Paused", "10%", "1/4"]
    assert cli(cluster, "-n", namespace, "resume", "don-v2").returncode == 0
    watcher.until(lambda s: s.get("phase") == "Progressing")
    assert cli(cluster, "-n", namespace, "promote", "don-v2").returncode == 0
    final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"))
    assert final["status"]["phase"] == "Promoted"
    assert [h["event"] for h in final["status"]["history"]] == ["Started", "Paused", "Resumed", "Promoted"]
    assert watcher.isvc()["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    detail = cli(cluster, "-n", namespace, "status", "don-v2").stdout
    assert "Promoted" in detail and "candidate: pvc://models/don/2" in detail and "EVENT" in detail

    # a second rollout (version 3) on the now-promoted service, aborted by hand
    assert cli(cluster, "-n", namespace, "start", "--target", "don", "--version", "3",
               "--interval", "1h", "--stable-url", stable.base, "--canary-url", good.base,
               "--model-name", "don", "--store-root", str(rollout_store)).returncode == 0
    aborted = Watcher(kube, namespace, "don-v3", "Standard")
    aborted.until(lambda s: s.get("phase") == "Progressing" and s.get("trafficApplied"))
    assert watcher.isvc()["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "pvc://models/don/3"
    assert cli(cluster, "-n", namespace, "abort", "don-v3").returncode == 0
    final = aborted.until(lambda s: terminal(s) and s.get("trafficApplied"))
    assert final["status"]["phase"] == "RolledBack"
    assert "canary" not in watcher.isvc()["spec"]
    missing = cli(cluster, "-n", namespace, "pause", "no-such-rollout")
    assert missing.returncode == 1 and "404" in missing.stdout


class ReadyDeployments(Loop):
    """Stands in for what a bare API server lacks (the deployment controller and kubelets): marks
    every Deployment of the namespace as having all its pods on the current template and ready,
    a little after each change, so the operator's scale-up-before-scale-down ordering can proceed."""

    def __init__(self, kube: Kube, ns: str):
        super().__init__()
        self.kube, self.ns = kube, ns

    def step(self):
        for item in self.kube.apps.list_namespaced_deployment(self.ns).items:
            replicas, generation = item.spec.replicas or 0, item.metadata.generation
            status = item.status
            if (status.observed_generation, status.ready_replicas or 0, status.replicas or 0) \
                    == (generation, replicas, replicas):
                continue
            self.kube.apps.patch_namespaced_deployment_status(item.metadata.name, self.ns, {
                "status": {"observedGeneration": generation, "replicas": replicas,
                           "updatedReplicas": replicas, "readyReplicas": replicas,
                           "availableReplicas": replicas}})


def test_deployment_engine_splits_replicas_and_promotes(kube, namespace, operator_cluster,
                                                        model_servers, rollout_store):
    stable, good = model_servers["stable"], model_servers["good"]
    for name, track, version, replicas in (("don", "stable", "1", 4), ("don-canary", "canary", "2", 0)):
        labels = {"app": "don", "track": track, "don-predictor.io/model-version": version}
        kube.apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "don", "track": track}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "model-server", "image": "don-predictor/model-server:test",
                         "args": ["--model_name=don", f"--model_dir=/mnt/models/{version}"],
                         "env": [{"name": "DON_MODEL_VERSION", "value": version}]}]}}}})
    body = rollout("don-v2", mode="Deployment", version=2, steps=(25, 50, 100),
                   stable_url=stable.base, canary_url=good.base, store=rollout_store)
    replicas_seen = []

    def record(status):
        pair = (kube.get_deployment(namespace, "don")["spec"]["replicas"],
                kube.get_deployment(namespace, "don-canary")["spec"]["replicas"])
        if not replicas_seen or replicas_seen[-1] != pair:
            replicas_seen.append(pair)
        return terminal(status) and status.get("trafficApplied")

    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)), ReadyDeployments(kube, namespace):
        kube.create_rollout(namespace, body)
        final = Watcher(kube, namespace, "don-v2", "Deployment").until(record)
    assert final["status"]["phase"] == "Promoted", final["status"]["message"]
    # the Deployments name versions: the status carries them as integers and no storage URI
    assert (final["status"]["stableVersion"], final["status"]["candidateVersion"]) == (1, 2)
    assert "stableStorageUri" not in final["status"] and "candidateStorageUri" not in final["status"]
    # in order, each step's split in whole pods (transient pairs between the scale calls may
    # appear too): 25 % asks for 4 stable + 1 canary, which the status reports as the 20 % it is
    expected = iter([(4, 1), (4, 4), (0, 4), (4, 0)])
    wanted = next(expected)
    for pair in replicas_seen:
        if pair == wanted:
            wanted = next(expected, None)
    assert wanted is None, replicas_seen
    assert replicas_seen[-1] == (4, 0)
    moves = [(h["weight"], h.get("stepWeight")) for h in final["status"]["history"]
             if h["event"] in ("Started", "Advanced")]
    assert [w for w, _ in moves] == [20, 50, 100], final["status"]["history"]
    promoted = kube.get_deployment(namespace, "don")["spec"]["template"]
    assert promoted["spec"]["containers"][0]["args"] == ["--model_name=don", "--model_dir=/mnt/models/2"]
    assert promoted["metadata"]["labels"] == {"app": "don", "track": "stable",
                                              "don-predictor.io/model-version": "2"}


def test_deployment_engine_refuses_a_canary_without_the_candidate(kube, namespace, operator_cluster,
                                                                 model_servers, rollout_store):
    for name, version in (("don", "1"), ("don-canary", "1")):
        kube.apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                         "name": "model-server", "image": "don-predictor/model-server:test",
                         "env": [{"name": "DON_MODEL_VERSION", "value": version}]}]}}}})
    kube.create_rollout(namespace, rollout("don-v2", mode="Deployment", version=2,
                                           stable_url=model_servers["stable"].base,
                                           canary_url=model_servers["good"].base, store=rollout_store))
    final = Watcher(kube, namespace, "don-v2", "Deployment").until(terminal)
    assert final["status"]["phase"] == "Failed"
    assert "don-canary runs version 1" in final["status"]["message"]
    assert kube.get_deployment(namespace, "don-canary")["spec"]["replicas"] == 1  # untouched


# ---- Desired delivery: the chart's ModelRollouts (models.<m>.version is the desired version) ----

def desired_rollout(mode: str, version: int, stable_url: str, canary_url: str, store: Path,
                    **extra) -> dict:
    """What the chart renders with operator.enabled, pointed at the loopback model servers."""
    annotation = "Serverless" if mode == "Knative" else "Standard"
    body = rollout("don", mode=mode, version=version, stable_url=stable_url, canary_url=canary_url,
                   store=store, steps=(50, 100), interval="1s")
    body["spec"].update(delivery="Desired", **extra)
    if mode != "Deployment":
        body["spec"]["inferenceService"] = {
            "metadata": {"labels": {"app": "don"},
                         "annotations": {"serving.kserve.io/deploymentMode": annotation}},
            "spec": {"predictor": {"minReplicas": 1, "labels": {"don-predictor.io/model-version": str(version)},
                                   "model": {"name": "kserve-container", "modelFormat": {"name": "don-sklearn"},
                                             "runtime": "don-model-server", "storageUri": f"pvc://models/don/{version}",
                                             "env": [{"name": "DON_MODEL_VERSION", "value": str(version)}]}}}}
    return body


def set_desired(kube: Kube, ns: str, version: int, stable_url: str, canary_url: str) -> None:
    """What `helm upgrade --set models.rf.version=N` does to the chart's ModelRollout."""
    kube.patch_rollout(ns, "don", {"spec": {"candidate": {"version": version},
                                            "endpoints": {"stableUrl": stable_url, "canaryUrl": canary_url}}})


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_desired_version_is_delivered_promoted_kept_and_a_bad_one_rolled_back_once(
        kube, namespace, operator_cluster, model_servers, rollout_store, mode):
    stable, good, worse = model_servers["stable"], model_servers["good"], model_servers["worse"]
    watcher = Watcher(kube, namespace, "don", mode)
    # install: the operator creates the InferenceService it owns, serving the desired version 1
    kube.create_rollout(namespace, desired_rollout(mode, 1, stable.base, stable.base, rollout_store))
    first = watcher.until(lambda s: s.get("phase") == "Delivered" and s.get("trafficApplied"))
    assert first["status"]["liveVersion"] == 1
    isvc = watcher.isvc()
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/1"
    assert isvc["metadata"]["ownerReferences"][0]["name"] == "don"
    # desired 2: a canary rollout through the steps, then promotion
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        set_desired(kube, namespace, 2, stable.base, good.base)
        promoted = watcher.until(lambda s: s.get("phase") == "Promoted" and s.get("trafficApplied")
                                 and s.get("liveVersion") == 2)
    assert 50 in watcher.weights()
    predictor = watcher.isvc()["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://models/don/2"
    # the version the model server reports and the pod label follow the storageUri
    assert predictor["model"]["env"] == [{"name": "DON_MODEL_VERSION", "value": "2"}]
    assert predictor["labels"]["don-predictor.io/model-version"] == "2"
    # an unrelated change (what a `helm upgrade` of other values does): nothing moves
    kube.patch_rollout(namespace, "don", {"spec": {"interval": "2s"}})
    time.sleep(3)
    after = kube.get_rollout(namespace, "don")["status"]
    assert after["phase"] == "Promoted" and after["history"] == promoted["status"]["history"]
    assert watcher.isvc()["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    # a `helm upgrade` of other serving values for the live version: the InferenceService takes
    # the chart's template, whole (the old template's minReplicas goes), with no rollout
    template = desired_rollout(mode, 2, stable.base, stable.base, rollout_store)["spec"]["inferenceService"]
    template["spec"]["predictor"].pop("minReplicas")
    template["spec"]["predictor"]["maxReplicas"] = 3
    kube.patch_rollout(namespace, "don", {"spec": {"inferenceService": {  # a merge patch: None removes
        **template, "spec": {"predictor": {**template["spec"]["predictor"], "minReplicas": None}}}}})
    deadline = time.monotonic() + 30
    while "maxReplicas" not in (predictor := watcher.isvc()["spec"]["predictor"]):
        assert time.monotonic() < deadline, "the InferenceService never took the chart's new template"
        time.sleep(0.2)
    assert predictor == template["spec"]["predictor"]
    assert "ServingObjects" in events(kube, namespace, "don")
    after = kube.get_rollout(namespace, "don")["status"]
    assert after["phase"] == "Promoted" and after["history"] == promoted["status"]["history"]
    # desired 3 predicts badly: rolled back, the status says it was not delivered, never retried
    with Traffic(good.base, worse.base, golden_rows(rollout_store, 3)):
        set_desired(kube, namespace, 3, good.base, worse.base)
        rolled = watcher.until(lambda s: s.get("phase") == "RolledBack" and s.get("trafficApplied"))
    status = rolled["status"]
    assert status["desiredVersion"] == 3 and status["candidateVersion"] == 3
    assert "referenceErrorIncrease" in status["message"]
    assert watcher.isvc()["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    kube.patch_rollout(namespace, "don", {"spec": {"interval": "3s"}})  # helm upgrade, version unchanged
    time.sleep(4)
    later = kube.get_rollout(namespace, "don")["status"]
    assert later["phase"] == "RolledBack" and later["liveVersion"] == 2
    assert [h["event"] for h in later["history"]].count("Started") == 2, "version 3 must not be retried"
    assert "RolledBack" in events(kube, namespace, "don")


def test_inconclusive_past_the_progress_deadline_rolls_back(kube, namespace, operator_cluster,
                                                           model_servers, rollout_store):
    """A canary endpoint that never comes to serve the candidate (it still answers as version 1):
    every analysis is Inconclusive; the progress deadline ends the rollout with a Warning naming
    the cause."""
    stable = model_servers["stable"]
    watcher = Watcher(kube, namespace, "don", "Standard")
    body = desired_rollout("Standard", 1, stable.base, stable.base, rollout_store, progressDeadline="4s")
    kube.create_rollout(namespace, body)
    watcher.until(lambda s: s.get("phase") == "Delivered")
    with Traffic(stable.base, stable.base, golden_rows(rollout_store, 1)):
        set_desired(kube, namespace, 2, stable.base, stable.base)
        final = watcher.until(lambda s: s.get("phase") == "RolledBack" and s.get("trafficApplied"))
    status = final["status"]
    assert "progress deadline 4s exceeded" in status["message"], status["message"]
    assert status["lastAnalysis"]["verdict"] == "Inconclusive"
    assert "serves version 1, not 2" in status["message"]
    found = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.name=don").items
    deadline = [e for e in found if e.reason == "ProgressDeadlineExceeded"]
    assert deadline and deadline[0].type == "Warning" and "progress deadline" in deadline[0].message
    assert watcher.isvc()["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/1"


def canary_deployment(version: str) -> dict:
    """The `<target>-canary` Deployment the chart renders with operator.enabled (desired version)."""
    labels = {"app": "don", "don-predictor.io/track": "canary", "don-predictor.io/model-version": version}
    return {"metadata": {"name": "don-canary", "labels": {"app": "don", "don-predictor.io/track": "canary"}},
            "spec": {"selector": {"matchLabels": {"app": "don", "don-predictor.io/track": "canary"}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "model-server", "image": "don-predictor/model-server:test",
                         "env": [{"name": "DON_MODEL_VERSION", "value": version}]}]}}}}


def test_desired_deployment_mode_creates_the_stable_from_the_chart_canary(kube, namespace, operator_cluster,
                                                                        model_servers, rollout_store):
    """The chart renders only `<target>-canary` (running the desired version, no replicas); the
    operator creates the stable Deployment from it and owns every replica count from then on."""
    stable, good = model_servers["stable"], model_servers["good"]

    kube.apps.create_namespaced_deployment(namespace, canary_deployment("1"))
    body = desired_rollout("Deployment", 1, stable.base, stable.base, rollout_store)
    body["spec"]["deployment"] = {"replicas": 2}
    watcher = Watcher(kube, namespace, "don", "Deployment")
    with ReadyDeployments(kube, namespace):
        kube.create_rollout(namespace, body)
        watcher.until(lambda s: s.get("phase") == "Delivered" and s.get("trafficApplied"))
        created = kube.raw_deployment(namespace, "don")
        assert created["spec"]["replicas"] == 2
        assert created["spec"]["selector"]["matchLabels"]["don-predictor.io/track"] == "stable"
        assert created["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
        assert kube.get_deployment(namespace, "don-canary")["spec"]["replicas"] == 0
        # `helm upgrade --set recorder.enabled=true`: a new pod template, the same version. The
        # stable follows the chart, whole (a field the chart dropped goes too), with no rollout.
        for change in ({"nodeSelector": {"pool": "models"},
                        "containers": [{"name": "model-server", "env": [{"name": "DON_RECORDS_URL", "value": "http://rec"}]}]},
                       {"nodeSelector": None}):
            kube.patch_deployment(namespace, "don-canary", {"spec": {"template": {"spec": change}}})
            chart = kube.raw_deployment(namespace, "don-canary")["spec"]["template"]["spec"]
            deadline = time.monotonic() + 60
            while kube.raw_deployment(namespace, "don")["spec"]["template"]["spec"] != chart:
                assert time.monotonic() < deadline, f"the stable never took the chart's pod template {change}"
                time.sleep(0.2)
        assert "nodeSelector" not in chart and "DON_RECORDS_URL" in [e["name"] for e in chart["containers"][0]["env"]]
        assert "ServingObjects" in events(kube, namespace, "don")
        assert kube.get_rollout(namespace, "don")["status"]["liveVersion"] == 1
        # `helm upgrade --set models.<m>.version=2`: the canary template and the desired version
        kube.patch_deployment(namespace, "don-canary", {"spec": {"template": canary_deployment("2")["spec"]["template"]}})
        with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
            set_desired(kube, namespace, 2, stable.base, good.base)
            final = watcher.until(lambda s: s.get("phase") == "Promoted" and s.get("trafficApplied")
                                  and s.get("liveVersion") == 2)
    assert [h["weight"] for h in final["status"]["history"] if h["event"] == "Advanced"] == [100]
    promoted = kube.raw_deployment(namespace, "don")
    assert promoted["spec"]["template"]["metadata"]["labels"]["don-predictor.io/model-version"] == "2"
    assert promoted["spec"]["template"]["metadata"]["labels"]["don-predictor.io/track"] == "stable"
    assert (promoted["spec"]["replicas"], kube.get_deployment(namespace, "don-canary")["spec"]["replicas"]) == (2, 0)
