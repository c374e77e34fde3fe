"""End to end on a real cluster: the chart's training Jobs publish versions to a PersistentVolume,
the chart's model servers serve them, another pod calls them through their Services, `helm test`
passes, and a canary split by replica ratio answers with both versions.

Runs on the registry-built local cluster (default; ``serving.engine=deployment``) or on kind
(``DON_E2E_TARGET=kind``, ``serving.engine=kserve``; see ops/cluster/kind/). The tests are ordered
and share one Helm release; each states what it needs from the previous one.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from don_core.artifact import verify_version_dir
from ops.cluster.crds import install_crds
from tests.e2e.kube import Kube

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

NS = "don-e2e"
RELEASE = "don-predictor"
CHART = Path(__file__).resolve().parents[2] / "charts" / "don-predictor"
MODELS = {"don-rf": "sklearn", "don-tf": "tensorflow"}
CLIENT_LABEL = ("don-predictor.io/client", "true")


def _base_values(cluster) -> list[str]:
    values = {
        "images.pullPolicy": cluster.pull_policy,
        "serving.engine": cluster.engine,
        "serving.deployment.stableReplicas": "1",
        "serving.autoscaling.minReplicas": "1",
        "serving.resources.requests.cpu": "100m",
        "serving.resources.requests.memory": "256Mi",
        "training.job.enabled": "true",
        "training.data": "synthetic:300",
        "training.quick": "true",
        "training.resources.requests.cpu": "100m",
        "training.resources.requests.memory": "512Mi",
        "modelStore.pvc.size": "1Gi",
        "tracing.enabled": "false",
    }
    if cluster.engine == "kserve":
        values["kserve.deploymentMode"] = cluster.kserve_mode
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def kube(e2e_cluster) -> Kube:
    if e2e_cluster.engine != "deployment":
        pytest.skip("the chart's plain `deployment` engine runs on the local cluster; on kind the KServe "
                    "engine is tested by test_kind_kserve.py")
    k = Kube(e2e_cluster.kubeconfig, NS, env=dict(os.environ))
    k.kubectl("create", "namespace", NS, namespaced=False, check=False)
    return k


@pytest.fixture(scope="module")
def store_dir(e2e_cluster, kube) -> Path | None:
    """Local cluster: a hostPath PersistentVolume pre-bound to the chart's claim (kind: its default
    StorageClass provisions the claim)."""
    if e2e_cluster.volumes is None:
        return None
    path = e2e_cluster.volumes / "model-store"
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 1000, 1000)  # the images run as uid 1000
    path.chmod(0o770)
    kube.apply({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "don-e2e-model-store"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
                 "claimRef": {"namespace": NS, "name": "don-model-store"}},
    })
    return path


def _jobs(kube: Kube) -> list[str]:
    return [j["metadata"]["name"] for j in kube.get("jobs", selector="app.kubernetes.io/component=training")["items"]]


def _wait_jobs(kube: Kube, names: list[str]) -> None:
    for name in names:
        kube.wait_job(name, timeout=900)


def _client_pod(name: str, cluster, script: str) -> dict:
    """A pod that is allowed to call the models (client label) and can read the model store."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {CLIENT_LABEL[0]: CLIENT_LABEL[1]}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
            "containers": [{
                "name": "client", "image": f"don-predictor/model-server:{_image_tag()}",
                "imagePullPolicy": cluster.pull_policy, "command": ["python3", "-c", script],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "store", "mountPath": "/mnt/store", "readOnly": True}],
            }],
            "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": "don-model-store",
                                                                    "readOnly": True}}],
        },
    }


def _image_tag() -> str:
    from ops.cluster.images import IMAGE_TAG
    return IMAGE_TAG


# The client script: V1 and V2 calls through each model's Service, by ClusterIP (no cluster DNS on
# the local cluster) or by DNS name on kind. Prints one JSON line per model.
CLIENT_SCRIPT = r"""
import json, os, sys, urllib.request
targets = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.loads(os.environ["TARGETS"])
for model, base in targets.items():
    golden = json.load(open(f"/mnt/store/{model}/1/golden.json"))
    body = json.dumps({"instances": golden["instances"][:5]}).encode()
    req = urllib.request.Request(f"{base}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        v1 = json.loads(resp.read()); version = resp.headers.get("X-Model-Version")
    v2_body = json.dumps({"inputs": [{"name": "spectra", "shape": [5, 448], "datatype": "FP32",
                                      "data": [x for row in golden["instances"][:5] for x in row]}]}).encode()
    req = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=v2_body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        v2 = json.loads(resp.read())
    print(json.dumps({"model": model, "version": version, "v1": v1["predictions"],
                      "v2": v2["outputs"][0]["data"]}))
"""

SPLIT_SCRIPT = r"""
import collections, json, os, urllib.request
base, model, n = os.environ["BASE"], os.environ["MODEL"], int(os.environ["N"])
golden = json.load(open(f"/mnt/store/{model}/1/golden.json"))
body = json.dumps({"instances": golden["instances"][:1]}).encode()
seen = collections.Counter()
for _ in range(n):
    # A new connection per call: kube-proxy balances connections, not requests.
    req = urllib.request.Request(f"{base}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json", "Connection": "close"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        seen[resp.headers.get("X-Model-Version")] += 1
print(json.dumps(seen))
"""


def _service_base(kube: Kube, cluster, model: str) -> str:
    if cluster.engine == "deployment":
        svc = kube.get("service", model)
        return f"http://{svc['spec']['clusterIP']}:80"
    suffix = "-predictor" if cluster.kserve_mode == "Standard" else ""
    return f"http://{model}{suffix}.{NS}.svc.cluster.local"


def _wait_predictors(kube: Kube, models=MODELS) -> None:
    for model in models:
        kube.kubectl("rollout", "status", f"deployment/{model}", "--timeout=600s", timeout=620)


def test_training_jobs_publish_versions_to_the_persistent_volume(e2e_cluster, kube, store_dir):
    # The predictors mount `<model>/<version>` as a subPath, which the kubelet would create (as an
    # empty root-owned directory) if a predictor started before its version exists. So the first
    # install keeps them unschedulable (a CPU request no node has) until the Jobs have published.
    crd_args = []
    if e2e_cluster.api is not None:
        # Kubernetes 1.20 rejects `default: ""` in CRD schemas, which `helm install` would send as
        # is; install_crds retries without empty-string defaults (ops/cluster/crds.py).
        install_crds(e2e_cluster.api, sorted((CHART / "crds").glob("*.yaml")))
        crd_args = ["--skip-crds"]
    kube.helm("upgrade", "--install", RELEASE, str(CHART), *_base_values(e2e_cluster), *crd_args,
              "--set", "serving.resources.requests.cpu=64", "--set", "serving.resources.limits.cpu=64",
              "--set-string", "training.job.runId=1")
    jobs = _jobs(kube)
    assert len(jobs) == 2, jobs
    _wait_jobs(kube, jobs)
    for model, family in MODELS.items():
        metadata = verify_version_dir(store_dir / model / "1", expected_model=model)
        assert metadata["version"] == 1 and metadata["family"] == family
        assert metadata["training_data"]["rows"] == 300


def test_model_servers_run_from_the_chart(e2e_cluster, kube, store_dir):
    kube.helm("upgrade", RELEASE, str(CHART), *_base_values(e2e_cluster), "--set-string", "training.job.runId=1")
    _wait_predictors(kube)
    pods = kube.get("pods", selector="app.kubernetes.io/component=predictor")["items"]
    ready = [p["metadata"]["name"] for p in pods
             if all(c.get("ready") for c in p["status"].get("containerStatuses", []))]
    assert len(ready) >= 2, kube.describe("pods", selector="app.kubernetes.io/component=predictor")


def test_inference_from_another_pod_through_the_services(e2e_cluster, kube, store_dir):
    import onnxruntime as ort

    targets = {model: _service_base(kube, e2e_cluster, model) for model in MODELS}
    pod = _client_pod("don-e2e-client", e2e_cluster, CLIENT_SCRIPT)
    pod["spec"]["containers"][0]["env"] = [{"name": "TARGETS", "value": json.dumps(targets)}]
    phase, logs = kube.run_pod(pod, timeout=300)
    assert phase == "Succeeded", logs
    answers = {a["model"]: a for a in (json.loads(line) for line in logs.splitlines() if line.startswith("{"))}
    assert set(answers) == set(MODELS), logs
    for model, answer in answers.items():
        assert answer["version"] == "1"
        # The served answers equal the ONNX artifact evaluated here on the same golden spectra.
        version_dir = store_dir / model / "1"
        golden = json.loads((version_dir / "golden.json").read_text())
        x = np.asarray(golden["instances"][:5], dtype=np.float32)
        session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(["ppb"], {"spectra": x})[0].reshape(-1)
        for served in (answer["v1"], answer["v2"]):
            assert len(served) == 5 and all(math.isfinite(v) for v in served)
            np.testing.assert_allclose(np.asarray(served, dtype=float), expected, rtol=1e-3, atol=1e-2)


def test_helm_test_passes(kube):
    out = kube.helm("test", RELEASE, "--timeout", "5m", "--logs", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok don-rf version=1" in out.stdout and "ok don-tf version=1" in out.stdout, out.stdout


def test_second_training_run_and_replica_ratio_canary(e2e_cluster, kube, store_dir):
    # Train don-rf again (run 2 publishes version 2), then serve it as a 50 % canary.
    kube.helm("upgrade", RELEASE, str(CHART), *_base_values(e2e_cluster), "--set-string", "training.job.runId=2",
              "--set", "training.models={rf}")
    _wait_jobs(kube, [j for j in _jobs(kube) if j.endswith("-2")])
    verify_version_dir(store_dir / "don-rf" / "2", expected_model="don-rf")
    kube.helm("upgrade", RELEASE, str(CHART), *_base_values(e2e_cluster), "--set-string", "training.job.runId=2",
              "--set", "training.models={rf}", "--set", "models.rf.canary.version=2",
              "--set", "models.rf.canary.trafficPercent=50")
    _wait_predictors(kube, ["don-rf", "don-rf-canary"])
    pod = _client_pod("don-e2e-split", e2e_cluster, SPLIT_SCRIPT)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "BASE", "value": _service_base(kube, e2e_cluster, "don-rf")},
        {"name": "MODEL", "value": "don-rf"}, {"name": "N", "value": "60"}]
    phase, logs = kube.run_pod(pod, timeout=300)
    assert phase == "Succeeded", logs
    seen = json.loads(logs.strip().splitlines()[-1])
    # One stable and one canary pod behind one Service: both versions answer, about half each.
    assert set(seen) == {"1", "2"}, seen
    assert sum(seen.values()) == 60 and min(seen.values()) >= 10, seen


LOAD_SCRIPT = r"""
import json, os, time, urllib.request
base, model = os.environ["BASE"], os.environ["MODEL"]
golden = json.load(open(f"/mnt/store/{model}/1/golden.json"))
body = json.dumps({"instances": golden["instances"][:1]}).encode()
end = time.time() + float(os.environ["SECONDS"])
while time.time() < end:  # steady traffic so that every analysis window has requests
    req = urllib.request.Request(f"{base}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json", "Connection": "close"}, method="POST")
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except Exception as exc:
        print("request failed:", exc)
    time.sleep(0.2)
"""


def _operator_with_canary(e2e_cluster, kube) -> None:
    """The chart's operator Deployment, don-rf v1 stable + v2 canary (50 % by replicas), Services per
    track (the chart creates them only with an HTTPRoute: how the operator tells the stable pods'
    metrics from the canary's) and a pod sending steady traffic through the don-rf Service."""
    kube.helm("upgrade", RELEASE, str(CHART), *_base_values(e2e_cluster), "--set-string", "training.job.runId=2",
              "--set", "training.models={rf}", "--set", "models.rf.canary.version=2",
              "--set", "models.rf.canary.trafficPercent=50", "--set", "operator.enabled=true")
    operator = kube.get("deployments", selector="app.kubernetes.io/component=operator")["items"]
    assert len(operator) == 1
    kube.kubectl("rollout", "status", f"deployment/{operator[0]['metadata']['name']}", "--timeout=300s", timeout=320)
    for track in ("stable", "canary"):
        kube.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"don-rf-{track}"},
                    "spec": {"selector": {"app.kubernetes.io/component": "predictor", "don-predictor.io/model": "don-rf",
                                          "don-predictor.io/track": track},
                             "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    load = _client_pod("don-e2e-load", e2e_cluster, LOAD_SCRIPT)
    load["spec"]["containers"][0]["env"] = [
        {"name": "BASE", "value": _service_base(kube, e2e_cluster, "don-rf")},
        {"name": "MODEL", "value": "don-rf"}, {"name": "SECONDS", "value": "900"}]
    kube.apply(load)


def _wait_terminal(kube: Kube, names: list[str], seconds: float, on_poll=lambda: None) -> dict:
    deadline = time.monotonic() + seconds
    statuses: dict = {}
    while time.monotonic() < deadline:
        statuses = {n: kube.get("modelrollout", n).get("status") or {} for n in names}
        on_poll()
        if all(s.get("phase") in ("Promoted", "RolledBack", "Failed") for s in statuses.values()):
            break
        time.sleep(3)
    return statuses


KSERVE_ISVC_CRD = Path(__file__).resolve().parents[3] / "shared" / "kserve-crds" / "serving.kserve.io_inferenceservices.yaml"


def test_rollout_operator_in_cluster_drives_inference_services(e2e_cluster, kube, store_dir):
    """The in-cluster operator patches real InferenceService objects (the KServe CRD from
    ../shared/kserve-crds) in both KServe modes, judging the canary from the model-server pods the
    chart runs (v1 stable, v2 canary). KServe's controller cannot run here, so nothing reconciles
    the InferenceServices into pods: what this checks is the operator's analysis and its patches
    through the API server; KServe's own traffic split is checked on kind (test_kind_kserve.py)."""
    if e2e_cluster.api is None:
        pytest.skip("on kind, KServe itself reconciles InferenceServices: see test_kind_kserve.py")
    if not KSERVE_ISVC_CRD.is_file():
        pytest.skip(f"KServe CRD schemas are absent from {KSERVE_ISVC_CRD.parent}")
    install_crds(e2e_cluster.api, [KSERVE_ISVC_CRD])
    _operator_with_canary(e2e_cluster, kube)
    urls = {track: f"http://{kube.get('service', f'don-rf-{track}')['spec']['clusterIP']}:80"
            for track in ("stable", "canary")}
    modes = {"Standard": "Standard", "Knative": "Serverless"}
    seen_weights: dict[str, set] = {mode: set() for mode in modes}

    def isvc(mode: str) -> dict:
        return kube.get("inferenceservice", f"don-rf-{mode.lower()}")

    def record() -> None:
        for mode in modes:
            spec = isvc(mode)["spec"]
            if mode == "Standard":
                seen_weights[mode] |= {c.get("trafficPercent") for c in spec.get("canary") or []}
            elif "canaryTrafficPercent" in spec["predictor"]:
                seen_weights[mode].add(spec["predictor"]["canaryTrafficPercent"])

    for mode, annotation in modes.items():
        kube.apply({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": f"don-rf-{mode.lower()}",
                         "annotations": {"serving.kserve.io/deploymentMode": annotation}},
            "spec": {"predictor": {"minReplicas": 1, "model": {
                "name": "kserve-container", "modelFormat": {"name": "don-sklearn"},
                "runtime": "don-model-server", "storageUri": "pvc://don-model-store/don-rf/1"}}}})
        kube.apply({
            "apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout",
            "metadata": {"name": f"isvc-{mode.lower()}"},
            "spec": {"target": f"don-rf-{mode.lower()}", "candidate": {"version": 2}, "mode": mode,
                     "steps": [50, 100], "interval": "10s",
                     "endpoints": {"stableUrl": urls["stable"], "canaryUrl": urls["canary"],
                                   "modelName": "don-rf"},
                     "analysis": {"minRequests": 5, "maxP99LatencyMs": 5000, "goldenSet": False}}})
    names = [f"isvc-{mode.lower()}" for mode in modes]
    statuses = _wait_terminal(kube, names, 300, record)
    table = kube.kubectl("get", "modelrollouts").stdout
    for mode in modes:
        status = statuses[f"isvc-{mode.lower()}"]
        assert status.get("phase") == "Promoted", (mode, status, table)
        assert 50 in seen_weights[mode], (mode, seen_weights[mode])
        spec = isvc(mode)["spec"]
        assert spec["predictor"]["model"]["storageUri"] == "pvc://don-model-store/don-rf/2", spec
        assert not spec.get("canary") and "canaryTrafficPercent" not in spec["predictor"], spec
    for name in names:
        kube.kubectl("delete", "modelrollout", name, "--wait=false", check=False)


def test_rollout_operator_in_cluster_promotes_the_canary(e2e_cluster, kube, store_dir):
    """The operator runs as a pod from the chart and drives the deployment engine (replica ratio:
    no Gateway API on Kubernetes 1.20) from version 1 to the canary version 2."""
    _operator_with_canary(e2e_cluster, kube)
    try:
        kube.apply({
            "apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout",
            "metadata": {"name": "don-rf-v2"},
            "spec": {"target": "don-rf", "candidate": {"version": 2}, "mode": "Deployment",
                     "steps": [50, 100], "interval": "20s", "deployment": {"replicas": 2},
                     # The operator pod does not mount the model store, so the golden-set check
                     # (which reads <store>/<model>/<version>/golden.json) is off in-cluster here.
                     "analysis": {"minRequests": 5, "maxP99LatencyMs": 5000, "goldenSet": False}},
        })
        status = _wait_terminal(kube, ["don-rf-v2"], 480)["don-rf-v2"]
        table = kube.kubectl("get", "modelrollouts").stdout
        assert status.get("phase") == "Promoted", (status, table)
        stable = kube.get("deployment", "don-rf")
        assert stable["spec"]["template"]["metadata"]["labels"]["don-predictor.io/model-version"] == "2"
        assert "Promoted" in table
    finally:
        kube.kubectl("delete", "pod", "don-e2e-load", "--ignore-not-found", "--wait=false", check=False)
