"""End to end on a real cluster: the chart's training Jobs publish versions to a PersistentVolume,
the chart's model servers serve them, another pod calls them through their Services, `helm test`
passes, and a canary split by replica ratio answers with both versions.

Then the operator part (operator.enabled, the chart's rollout defaults with a 10 s interval and
its canary steps without the shadow step, golden checks on): Helm declares the desired version, the operator delivers it (promotes v2, keeps it
through an unrelated upgrade, rolls back a v3 trained on shuffled targets and a candidate that
never becomes ready), while a client pod records every response; then the same desired-version
flow on real InferenceService objects.

The chart's prediction recorder runs throughout (recorder.enabled): every model server sends its
records to it. The client's calls carry sample ids; at the end the lab's results for them are
imported through the recorder's API (`python -m ops labresults import` in a pod) and the live
accuracy per version must count every call each version answered, with the figures a hand
computation gives.

Runs on the registry-built local cluster (default; ``serving.engine=deployment``) or on kind
(``DON_E2E_TARGET=kind``, ``serving.engine=kserve``; see tests/cluster/kind/). The tests are ordered
and share one Helm release; each states what it needs from the previous one.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from don_core.artifact import verify_version_dir
from don_core.contract import ROLLOUT_DEFAULTS
from tests.cluster.crds import install_crds
from tests.conftest import unavailable
from tests.e2e.kube import Kube

# The timeout bounds each test's own body: the first test would otherwise also carry the session's
# cluster set-up, which on a fresh machine builds Kubernetes and the images (20-40 minutes on 2
# busy cores, with a progress line at least once a minute).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200, func_only=True)]

NS = "don-e2e"
RELEASE = "don-predictor"
CHART = Path(__file__).resolve().parents[2] / "charts" / "don-predictor"
MODELS = {"don-rf": "sklearn", "don-tf": "tensorflow"}
# The chart names a model's Kubernetes objects <fullname>-<key> (fullname is RELEASE: it contains
# the chart name); the model itself keeps its name (API path, store folder).
OBJECTS = {"don-rf": f"{RELEASE}-rf", "don-tf": f"{RELEASE}-tf"}
RF = OBJECTS["don-rf"]
CLAIM = f"{RELEASE}-model-store"
CLIENT_LABEL = ("don-predictor.io/client", "true")
RECORDER_CLIENT_LABEL = ("don-predictor.io/recorder-client", "true")
RECORDER_TOKEN = "e2e-recorder-token"
# No cluster DNS on the local cluster: the model servers are given the recorder Service's ClusterIP
# (recorder.recordsUrl) from the second install on, once the first one has created the Service.
RECORDER: dict = {}


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
        "recorder.enabled": "true",
        "recorder.token.value": RECORDER_TOKEN,
        "recorder.resources.requests.cpu": "50m",
    }
    if "url" in RECORDER:
        values["recorder.recordsUrl"] = RECORDER["url"]
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
                 "claimRef": {"namespace": NS, "name": CLAIM}},
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
            "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}}],
        },
    }


def _image_tag() -> str:
    from tests.cluster.images import IMAGE_TAG
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
        svc = kube.get("service", OBJECTS[model])
        return f"http://{svc['spec']['clusterIP']}:80"
    suffix = "-predictor" if cluster.kserve_mode == "Standard" else ""
    return f"http://{OBJECTS[model]}{suffix}.{NS}.svc.cluster.local"


def _wait_predictors(kube: Kube, deployments: list[str] | None = None) -> None:
    for name in deployments or OBJECTS.values():
        kube.kubectl("rollout", "status", f"deployment/{name}", "--timeout=600s", timeout=620)


def test_training_jobs_publish_versions_to_the_persistent_volume(e2e_cluster, kube, store_dir):
    # The README's first install: training Jobs and predictors at once, on an empty store. The
    # predictors mount the store's root read-only (no subPath the kubelet would create) and wait,
    # live and not ready, until their version is published.
    crd_args = []
    if e2e_cluster.api is not None:
        # Kubernetes 1.20 rejects `default: ""` in CRD schemas, which `helm install` would send as
        # is; install_crds retries without empty-string defaults (tests/cluster/crds.py).
        install_crds(e2e_cluster.api, sorted((CHART / "crds").glob("*.yaml")))
        crd_args = ["--skip-crds"]
    kube.helm("upgrade", "--install", RELEASE, str(CHART), *_base_values(e2e_cluster), *crd_args,
              "--set-string", "training.job.runId=1")
    recorder = kube.get("services", selector="app.kubernetes.io/component=recorder")["items"][0]
    RECORDER["url"] = f"http://{recorder['spec']['clusterIP']}:{recorder['spec']['ports'][0]['port']}/"
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
    _wait_predictors(kube, [RF, f"{RF}-canary"])
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


# The recording client: steady V1 calls through the model's Service for the whole operator part,
# each a golden row in turn under a sample id of its own (a lab lot), one line per response:
# "<epoch seconds> <HTTP status, 0: no response> <X-Model-Version or error> <sample id> <golden row> <ppb>".
RECORD_SCRIPT = r"""
import json, os, time, urllib.error, urllib.request
base, model = os.environ["BASE"], os.environ["MODEL"]
rows = json.load(open(f"/mnt/store/{model}/1/golden.json"))["instances"]
run, n = int(time.time()), 0
while True:
    row, sample = n % len(rows), f"lot-{run}-{n}"
    n += 1
    body = json.dumps({"instances": [rows[row]], "sample_ids": [sample]}).encode()
    # A new connection per call: kube-proxy balances connections, not requests.
    req = urllib.request.Request(f"{base}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json", "Connection": "close"}, method="POST")
    started, ppb = time.time(), "nan"
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            ppb = repr(json.loads(resp.read())["predictions"][0])
            code, version = resp.status, resp.headers.get("X-Model-Version")
    except urllib.error.HTTPError as exc:
        code, version = exc.code, exc.headers.get("X-Model-Version")
    except Exception as exc:
        code, version = 0, type(exc).__name__
    print(f"{started:.3f} {code} {version} {sample} {row} {ppb}", flush=True)
    time.sleep(0.1)
"""
CLIENT = "don-e2e-recorder"
ROLLOUT_INTERVAL = "10s"  # the one rollout default shortened (chart default 60s)
DELIVERY: dict = {"marks": [], "phases": {}}  # what the operator part saw, for its report


def _operator_values(cluster) -> list[str]:
    # The canary steps given as the list: with the recorder on, the chart's default begins with
    # the shadow step, whose lab gate waits for lab results (tests/e2e/test_shadow.py drives it).
    return _base_values(cluster) + [
        "--set-string", "training.job.runId=2", "--set", "training.models={rf}",
        "--set", "operator.enabled=true", "--set", f"operator.rollout.interval={ROLLOUT_INTERVAL}",
        "--set-json", f"operator.rollout.steps={json.dumps(ROLLOUT_DEFAULTS['steps'])}",
        "--set", "models.rf.version=1", "--set", "models.rf.canary.version=null"]


def _mro(kube: Kube, name: str = RF) -> dict:
    return kube.get("modelrollout", name)


def _wait_rollout(kube: Kube, predicate, seconds: float, name: str = RF) -> dict:
    """Polls the ModelRollout until predicate(status); records every (phase, weight) it passes."""
    deadline = time.monotonic() + seconds
    status: dict = {}
    seen = DELIVERY["phases"].setdefault(name, [])
    while time.monotonic() < deadline:
        status = _mro(kube, name).get("status") or {}
        point = (status.get("phase"), status.get("weight"))
        if not seen or seen[-1] != point:
            seen.append(point)
        if predicate(status):
            return status
        time.sleep(2)
    raise AssertionError(f"{name}: timed out; status {json.dumps(status)[:3000]}\n"
                         f"{kube.describe('modelrollout', name)}\n{_operator_logs(kube)}")


def _operator_logs(kube: Kube) -> str:
    return kube.kubectl("logs", "-l", "app.kubernetes.io/component=operator", "--tail", "40",
                        check=False).stdout[-4000:]


def _deployment_version(kube: Kube, name: str) -> str:
    return kube.get("deployment", name)["spec"]["template"]["metadata"]["labels"]["don-predictor.io/model-version"]


def _wait_deployment(kube: Kube, name: str, replicas: int, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d = kube.get("deployment", name)
        st = d.get("status", {})
        if d["spec"].get("replicas") == replicas and (st.get("readyReplicas") or 0) == replicas \
                and (st.get("replicas") or 0) == replicas:
            return d
        time.sleep(2)
    raise AssertionError(f"deployment {name} not at {replicas} ready replicas:\n{kube.describe('deployment', name)}")


def _client_lines(kube: Kube) -> list[list[str]]:
    out = kube.kubectl("logs", CLIENT, check=False, timeout=60).stdout
    return [parts for parts in (line.split() for line in out.splitlines()) if len(parts) == 6 and parts[1].isdigit()]


def _responses(kube: Kube) -> list[tuple[float, int, str]]:
    return [(float(p[0]), int(p[1]), p[2]) for p in _client_lines(kube)]


def _mark(label: str) -> float:
    moment = time.time()
    DELIVERY["marks"].append((label, moment))
    return moment


def _window(kube: Kube, start: float, end: float = float("inf")) -> dict:
    """{"<status> v<version>": count} of the responses the client got between two moments."""
    return _window_of(_responses(kube), start, end)


def test_operator_takes_over_and_delivers_the_desired_version(e2e_cluster, kube, store_dir):
    """Enabling the operator: the chart renders one ModelRollout per model (desired version 1) and
    no traffic field; the operator creates the stable Deployments and serves version 1."""
    kube.helm("upgrade", RELEASE, str(CHART), *_operator_values(e2e_cluster))
    operator = kube.get("deployments", selector="app.kubernetes.io/component=operator")["items"]
    kube.kubectl("rollout", "status", f"deployment/{operator[0]['metadata']['name']}", "--timeout=300s", timeout=320)
    for name in OBJECTS.values():
        status = _wait_rollout(kube, lambda s: s.get("phase") == "Delivered" and s.get("trafficApplied")
                               and s.get("liveVersion") == 1, 420, name=name)
        assert status["desiredVersion"] == 1
        stable = _wait_deployment(kube, name, 1)
        assert stable["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
        assert "meta.helm.sh/release-name" not in stable["metadata"].get("annotations", {})  # not Helm's
        assert _wait_deployment(kube, f"{name}-canary", 0)["spec"]["replicas"] == 0
    load = _client_pod(CLIENT, e2e_cluster, RECORD_SCRIPT)
    load["spec"]["containers"][0]["env"] = [{"name": "BASE", "value": _service_base(kube, e2e_cluster, "don-rf")},
                                            {"name": "MODEL", "value": "don-rf"}]
    kube.kubectl("delete", "pod", CLIENT, "--ignore-not-found", "--wait=true")
    kube.apply(load)
    kube.kubectl("wait", "--for=condition=Ready", f"pod/{CLIENT}", "--timeout=120s", timeout=130)
    time.sleep(5)
    start = _mark("v1 steady")
    time.sleep(10)
    assert _window(kube, start) and set(_window(kube, start)) == {"200 v1"}, _window(kube, start)


def test_a_new_desired_version_is_rolled_out_through_the_steps_and_promoted(e2e_cluster, kube, store_dir):
    verify_version_dir(store_dir / "don-rf" / "2", expected_model="don-rf")  # trained by the canary test above
    start = _mark("desired v2")
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "models.rf.version=2")
    status = _wait_rollout(kube, lambda s: s.get("phase") == "Promoted" and s.get("trafficApplied")
                           and s.get("liveVersion") == 2, 600)
    # One stable replica: every partial step runs one pod of each, i.e. 50 % (the status says the
    # share really given, and which step asked for it); the last step runs the canary alone.
    weights = [w for phase, w in DELIVERY["phases"][RF] if phase == "Progressing"]
    assert [50, 100] == sorted(set(weights)), DELIVERY["phases"][RF]
    assert [h.get("weight") for h in status["history"] if h["event"] in ("Started", "Advanced")][-4:] \
        == [50, 50, 50, 100], status["history"]
    moves = [h["event"] for h in status["history"] if h["event"] != "Held"]  # Held: e.g. a canary pod starting
    assert moves[-5:] == ["Started", "Advanced", "Advanced", "Advanced", "Promoted"], status["history"]
    assert {c["name"] for c in status["lastAnalysis"]["checks"]} >= {"successRate", "p99LatencyMs",
                                                                    "servedCorrectly"}
    _wait_deployment(kube, RF, 1)
    _wait_deployment(kube, f"{RF}-canary", 0)
    assert _deployment_version(kube, RF) == "2"
    during = _window(kube, start)
    assert {"200 v1", "200 v2"} <= set(during), during
    after = _mark("v2 promoted")
    time.sleep(10)
    assert set(_window(kube, after)) == {"200 v2"}, _window(kube, after)


def test_an_unrelated_helm_upgrade_moves_no_traffic(e2e_cluster, kube):
    before = _mro(kube)["status"]
    start = _mark("unrelated helm upgrade")
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "serving.resources.limits.memory=2100Mi",
              "--set", "operator.rollout.analysis.minRequests=12")
    time.sleep(35)  # three analysis intervals and several operator ticks
    after = _mro(kube)
    assert after["spec"]["analysis"]["minRequests"] == 12  # the upgrade did reach the ModelRollout
    assert after["status"]["phase"] == "Promoted" and after["status"]["history"] == before["history"]
    assert _deployment_version(kube, RF) == "2"
    assert kube.get("deployment", RF)["spec"]["replicas"] == 1
    assert kube.get("deployment", f"{RF}-canary")["spec"]["replicas"] == 0
    # the new pod template reached the operator's stable Deployment too (same version, no rollout)
    [server] = [c for c in kube.get("deployment", RF)["spec"]["template"]["spec"]["containers"]
                if c["name"] == "model-server"]
    assert server["resources"]["limits"]["memory"] == "2100Mi", server["resources"]
    assert set(_window(kube, start)) == {"200 v2"}, _window(kube, start)


def _shuffled_copy(store_dir: Path) -> str:
    """A broken lab export: the training data with its target column shuffled (trains and serves
    fine, predicts badly)."""
    from training_job import synthetic
    data = synthetic.generate(300)
    y = np.random.default_rng(7).permutation(data.y)
    path = store_dir / "data" / "don-rf-shuffled.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(synthetic.to_csv(data.X, y, data.ids))
    for p in (path.parent, path):
        os.chown(p, 1000, 1000)
    return "/mnt/store/data/don-rf-shuffled.csv"


def test_a_version_that_predicts_badly_is_rolled_back_and_not_retried(e2e_cluster, kube, store_dir):
    data = _shuffled_copy(store_dir)
    # the training Job refuses the shuffled file unless the relabel is declared deliberate: the
    # rollout must catch such a version all the same
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set-string", "training.job.runId=3",
              "--set", f"training.data={data}", "--set", "training.acceptRelabel=true")
    _wait_jobs(kube, [j for j in _jobs(kube) if j.endswith("-3")])
    verify_version_dir(store_dir / "don-rf" / "3", expected_model="don-rf")
    start = _mark("desired v3 (shuffled target)")
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "models.rf.version=3")
    status = _wait_rollout(kube, lambda s: s.get("candidateVersion") == 3 and s.get("phase") == "RolledBack"
                           and s.get("trafficApplied"), 600)
    assert status["desiredVersion"] == 3 and status["liveVersion"] == 2, status
    failed = [c["name"] for c in status["lastAnalysis"]["checks"] if c["result"] == "Fail"]
    assert failed, status["lastAnalysis"]
    described = kube.kubectl("describe", "modelrollout", RF).stdout
    assert "RolledBack" in described and "Warning" in described, described
    cli = subprocess.run([sys.executable, "-m", "ops", "rollout", "--kubeconfig", str(e2e_cluster.kubeconfig),
                          "-n", NS, "status", RF], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "RolledBack" in cli.stdout and failed[0] in cli.stdout, cli.stdout + cli.stderr
    _wait_deployment(kube, f"{RF}-canary", 0)
    assert _deployment_version(kube, RF) == "2"
    settled = _mark("v3 rolled back")
    time.sleep(25)  # a helm upgrade leaving the version alone: no retry
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "serving.resources.limits.memory=2200Mi")
    time.sleep(15)
    later = _mro(kube)["status"]
    assert later["phase"] == "RolledBack" and [h["event"] for h in later["history"]].count("Started") == 2, later
    assert set(_window(kube, settled)) == {"200 v2"}, _window(kube, settled)
    DELIVERY["v3 failed checks"] = failed
    assert _window(kube, start)


def test_a_candidate_that_never_becomes_ready_is_rolled_back_by_the_deadline(e2e_cluster, kube):
    """Desired version 1 again, with a CPU request no node has: its pods stay Pending, no traffic
    reaches the canary, every analysis is Inconclusive. The deadline is shortened for the test
    (chart default 10m)."""
    start = _mark("never-ready candidate")
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "models.rf.version=1",
              "--set", "serving.resources.requests.cpu=64", "--set", "serving.resources.limits.cpu=64",
              "--set", "operator.rollout.progressDeadline=40s")
    status = _wait_rollout(kube, lambda s: s.get("candidateVersion") == 1 and s.get("phase") == "RolledBack"
                           and s.get("trafficApplied"), 300)
    assert "progress deadline 40s exceeded" in status["message"], status["message"]
    assert "no traffic reached the canary" in status["message"], status["message"]
    events = kube.get("events")["items"]
    deadline = [e for e in events if e["involvedObject"].get("name") == RF
                and e["reason"] == "ProgressDeadlineExceeded"]
    assert deadline and deadline[0]["type"] == "Warning", [e["reason"] for e in events]
    _wait_deployment(kube, f"{RF}-canary", 0)
    assert _deployment_version(kube, RF) == "2" and status["liveVersion"] == 2
    assert set(_window(kube, start)) == {"200 v2"}, _window(kube, start)


CONSOLE = f"{RELEASE}-console"


def test_the_console_answers_and_shows_the_rollout(e2e_cluster, kube, chromium):
    """The chart's console (console.enabled; the image built from console/Dockerfile): its pod is
    ready and answers Streamlit's health check, and its Rollouts page, loaded in headless Chromium,
    shows the ModelRollout the tests above drove, in the phase the API server has. From the host,
    by the pod's IP (the host is the pod bridge's gateway; the local cluster enforces no
    NetworkPolicy); the Service's endpoints are checked to be that pod."""
    import re

    import requests
    from playwright.sync_api import expect, sync_playwright

    from tests.fixtures_browser import ARTIFACTS
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "console.enabled=true")
    kube.kubectl("rollout", "status", f"deployment/{CONSOLE}", "--timeout=300s", timeout=320)
    pods = [p for p in kube.get("pods", selector="app.kubernetes.io/component=console")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, kube.describe("pods", selector="app.kubernetes.io/component=console")
    ip, port = pods[0]["status"]["podIP"], 8501
    endpoints = kube.get("endpoints", CONSOLE)["subsets"]
    assert [a["ip"] for s in endpoints for a in s["addresses"]] == [ip], endpoints
    url = f"http://{ip}:{port}"
    health = requests.get(f"{url}/_stcore/health", timeout=30)
    assert health.status_code == 200 and health.text == "ok", (health.status_code, health.text)
    phase = _mro(kube)["status"]["phase"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)  # a pod with a 1-CPU limit on a busy node
            page.goto(url)
            expect(page.get_by_text("DON predictor console")).to_be_visible()
            page.locator("[data-testid='stRadio'] label").filter(has_text="Rollouts").click()
            expect(page.get_by_role("heading", name="Rollouts", exact=True)).to_be_visible()
            # the first rollout (by name) is shown: its phase, and its history as a timeline chart
            expect(page.get_by_text(re.compile(rf"^{RF}: phase {phase}\b"))).to_be_visible()
            expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "rollouts-e2e-cluster.png"), full_page=True)
            assert page.locator("[data-testid='stAlertContentError']").count() == 0
            assert page.locator("text=Traceback").count() == 0
        finally:
            browser.close()


KSERVE_ISVC_CRD = Path(__file__).resolve().parents[3] / "shared" / "kserve-crds" / "serving.kserve.io_inferenceservices.yaml"


def test_desired_versions_drive_inference_services(e2e_cluster, kube, store_dir):
    """The same desired-version flow on real InferenceService objects (the KServe CRD from
    ../shared/kserve-crds) in both KServe modes: the operator creates each InferenceService from
    its ModelRollout (and waits, saying why, while the endpoint named for it answers as another
    version), and a new desired version is rolled out by patches through the API server.
    KServe's controller cannot run here, so nothing turns the InferenceServices into pods: the
    analyses (golden set on, read from the operator's PVC mount) call the chart's don-rf stable
    pods, which serve version 2; KServe's own split is checked on kind (test_kind_kserve.py)."""
    if e2e_cluster.api is None:
        pytest.skip("on kind, KServe itself reconciles InferenceServices: see test_kind_kserve.py")
    if not KSERVE_ISVC_CRD.is_file():
        unavailable(f"KServe CRD schemas are absent from {KSERVE_ISVC_CRD.parent}")
    install_crds(e2e_cluster.api, [KSERVE_ISVC_CRD])
    url = f"http://{kube.get('service', f'{RF}-stable')['spec']['clusterIP']}:80"
    modes = {"Standard": "Standard", "Knative": "Serverless"}

    def body(mode: str, version: int) -> dict:
        return {"apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout",
                "metadata": {"name": f"isvc-{mode.lower()}"},
                "spec": {"delivery": "Desired", "target": f"don-rf-{mode.lower()}", "mode": mode,
                         "candidate": {"version": version}, "steps": [50, 100], "interval": ROLLOUT_INTERVAL,
                         "endpoints": {"stableUrl": url, "canaryUrl": url, "modelName": "don-rf"},
                         "inferenceService": {
                             "metadata": {"annotations": {"serving.kserve.io/deploymentMode": modes[mode]}},
                             "spec": {"predictor": {"minReplicas": 1, "model": {
                                 "name": "kserve-container", "modelFormat": {"name": "don-sklearn"},
                                 "runtime": f"{RELEASE}-model-server",
                                 "storageUri": f"pvc://{CLAIM}/don-rf/{version}",
                                 "env": [{"name": "DON_MODEL_VERSION", "value": str(version)}]}}}}}}

    for mode in modes:
        kube.apply(body(mode, 1))
    for mode in modes:
        # The status never claims what it has not verified: the endpoint named for the live
        # version answers as version 2, so version 1 is not Delivered.
        status = _wait_rollout(kube, lambda s: s.get("phase") == "Waiting" and "answers as version 2, not 1"
                               in (s.get("message") or ""), 120, name=f"isvc-{mode.lower()}")
        assert not any(c["type"] == "Succeeded" and c["status"] == "True" for c in status["conditions"])
        isvc = kube.get("inferenceservice", f"don-rf-{mode.lower()}")
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{CLAIM}/don-rf/1"
        assert isvc["metadata"]["ownerReferences"][0]["name"] == f"isvc-{mode.lower()}"
    for mode in modes:
        kube.kubectl("patch", "modelrollout", f"isvc-{mode.lower()}", "--type=merge",
                     "-p", json.dumps({"spec": {"candidate": {"version": 2}}}))
    for mode in modes:
        name = f"isvc-{mode.lower()}"
        status = _wait_rollout(kube, lambda s: s.get("phase") == "Promoted" and s.get("trafficApplied"), 300,
                               name=name)
        # The rollout's own history, not what the poll saw: the two modes roll out at once, and
        # the one polled second may pass 50 % while the first is being watched.
        progressed = [h.get("weight") for h in status.get("history") or []
                      if h.get("phase") == "Progressing"]
        assert 50 in progressed, status.get("history")
        checks = {c["name"]: c["result"] for c in status["lastAnalysis"]["checks"]}
        assert checks.get("servedCorrectly") == "Pass", checks
        spec = kube.get("inferenceservice", f"don-rf-{mode.lower()}")["spec"]
        assert spec["predictor"]["model"]["storageUri"] == f"pvc://{CLAIM}/don-rf/2", spec
        assert spec["predictor"]["model"]["env"] == [{"name": "DON_MODEL_VERSION", "value": "2"}]
        assert not spec.get("canary") and "canaryTrafficPercent" not in spec["predictor"], spec
    for mode in modes:
        kube.kubectl("delete", "modelrollout", f"isvc-{mode.lower()}", "--wait=false", check=False)


# In a pod with the recorder client label: the lab's CSV imported through the recorder's API by the
# CLI, then /v1/accuracy polled until every expected record has arrived, then /metrics.
LAB_SCRIPT = r"""
import json, os, subprocess, sys, time, urllib.request
url, expected = os.environ["URL"], json.loads(os.environ["EXPECTED"])
out = subprocess.run([sys.executable, "-m", "ops", "labresults", "import", "/lab/results.csv", "--url", url,
                      "--token-file", "/token/token"], capture_output=True, text=True, timeout=120)
print(json.dumps({"import": [out.returncode, out.stdout, out.stderr]}), flush=True)
deadline = time.time() + 90
while True:
    with urllib.request.urlopen(url + "v1/accuracy?model=don-rf", timeout=30) as resp:
        doc = json.load(resp)
    got = {str(r["version"]): r["matched"] for r in doc["results"] if r["window"] == "1d"}
    if got == expected or time.time() > deadline:
        break
    time.sleep(3)
print(json.dumps({"accuracy": doc}), flush=True)
with urllib.request.urlopen(url + "metrics", timeout=30) as resp:
    print(json.dumps({"metrics": [m for m in resp.read().decode().splitlines() if m.startswith("don_live_")]}))
"""


def test_predictions_through_the_service_are_recorded_and_judged_by_lab_results(e2e_cluster, kube, store_dir):
    """Every call the client got an answer to (v1, v2, the shuffled v3 canary) was recorded by the
    version that answered; the lab's results for those lots, imported with the CLI through the
    recorder's API, give live accuracy per version equal to a hand computation on the same rows."""
    import collections
    import datetime as dt

    truth = json.loads((store_dir / "don-rf" / "1" / "golden.json").read_text())["targets_ppb"]
    answered = [(p[2], p[3], truth[int(p[4])], float(p[5])) for p in _client_lines(kube) if p[1] == "200"]
    by_version = collections.defaultdict(list)
    for version, _, lab, ppb in answered:
        by_version[version].append((lab, ppb))
    assert {"1", "2", "3"} <= set(by_version), {v: len(r) for v, r in by_version.items()}
    expected = {v: len(rows) for v, rows in by_version.items()}
    measured = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    csv = "sample_id,vomitoxin_ppb,method,measured_at\n" + "".join(
        f"{sample},{lab!r},HPLC,{measured}\n" for _, sample, lab, _ in answered)
    kube.kubectl("delete", "configmap", "don-e2e-lab", "--ignore-not-found")
    # create, not apply: apply would copy the CSV into an annotation (256 kB at most)
    kube.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                       "metadata": {"name": "don-e2e-lab"}, "data": {"results.csv": csv}}))
    token_secret = [s["metadata"]["name"] for s in kube.get("secrets", selector="app.kubernetes.io/component=recorder")
                    ["items"] if "token" in s.get("data", {})][0]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "don-e2e-lab", "labels": {RECORDER_CLIENT_LABEL[0]: RECORDER_CLIENT_LABEL[1]}},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                    "containers": [{
                        "name": "lab", "image": f"don-predictor/operator:{_image_tag()}",
                        "imagePullPolicy": e2e_cluster.pull_policy, "command": ["python3", "-c", LAB_SCRIPT],
                        "env": [{"name": "URL", "value": RECORDER["url"]},
                                {"name": "EXPECTED", "value": json.dumps(expected)}],
                        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                        "volumeMounts": [{"name": "lab", "mountPath": "/lab", "readOnly": True},
                                         {"name": "token", "mountPath": "/token", "readOnly": True}]}],
                    "volumes": [{"name": "lab", "configMap": {"name": "don-e2e-lab"}},
                                {"name": "token", "secret": {"secretName": token_secret}}]}}
    phase, logs = kube.run_pod(pod, timeout=240)
    assert phase == "Succeeded", logs
    out = {k: v for line in logs.splitlines() if line.startswith("{") for k, v in json.loads(line).items()}
    code, stdout, stderr = out["import"]
    assert code == 0 and stdout.strip() == f"{len(answered)} stored, 0 duplicates, 0 rejected", (stdout, stderr)
    live = {str(r["version"]): r for r in out["accuracy"]["results"] if r["window"] == "1d"}
    # Every answered call recorded once, by the version that answered it (sample rate 1, none dropped).
    assert {v: r["matched"] for v, r in live.items()} == expected, logs[-3000:]
    notes = []
    for version, rows in sorted(by_version.items()):
        lab, ppb = np.array(rows).T
        mae = float(np.mean(np.abs(np.log1p(lab) - np.log1p(np.maximum(ppb, 0)))))
        # abs: the client reads float32 predictions as JSON's shortest form, the records carry their
        # exact value; a version that predicts its own golden rows almost exactly has an MAE of ~1e-6
        assert live[version]["maeLog1p"] == pytest.approx(mae, rel=1e-5, abs=1e-6), (version, live[version])
        contaminated = lab > 1000
        if contaminated.any():
            far = float(np.mean(ppb[contaminated] <= 1000))
            assert live[version]["thresholds"]["1000"]["falseAcceptRate"] == pytest.approx(far), live[version]
        notes.append(f"live accuracy don-rf v{version}: {len(rows)} matched, MAE log1p {mae:.3f}, "
                     f"false accepts @1000 {live[version]['thresholds']['1000']['falseAcceptRate']}")
        gauge = f'don_live_matched_samples{{model="don-rf",version="{version}",window="1d"}} {float(len(rows))}'
        assert gauge in out["metrics"], out["metrics"][:20]
    from tests.fixtures_cluster import E2E_REPORT
    E2E_REPORT.setdefault("notes", []).extend(notes)


def test_the_client_saw_no_error_through_all_of_it(kube):
    responses = _responses(kube)
    kube.kubectl("delete", "pod", CLIENT, "--ignore-not-found", "--wait=false", check=False)
    marks = DELIVERY["marks"] + [("end", time.time())]
    lines = []
    for (label, start), (_, end) in zip(marks, marks[1:]):
        lines.append(f"{label}: {_window_of(responses, start, end)}")
    from tests.fixtures_cluster import E2E_REPORT
    E2E_REPORT.setdefault("notes", []).extend(
        [f"recording client: {len(responses)} responses"] + lines
        + [f"{name} passed through (phase, weight): {seen}" for name, seen in DELIVERY["phases"].items()])
    bad = [r for r in responses if not 200 <= r[1] < 300]
    assert responses and not bad, (len(bad), bad[:20], lines)


def _window_of(responses, start: float, end: float) -> dict:
    import collections
    return dict(collections.Counter(f"{code} v{version}" for t, code, version in responses if start <= t < end))
