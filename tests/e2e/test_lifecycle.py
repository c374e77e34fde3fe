"""The whole life of an install, as the README tells it: an empty store, ONE `helm install` with
the training Jobs and the operator on, the first answers, good retrains rolled out and promoted,
a lab export in the wrong unit refused, `helm uninstall` (also with the operator already gone).

Values are the README's except what a 2-core test node and this cluster need: lower resource
requests, the chart's plain `deployment` engine (no KServe here), images already on the node,
quick training (1 repeat of the CV instead of the full evaluation) and a 10 s rollout interval.
The real corn data is put where the chart looks by default (`data/corn_hsi_don.csv` in the claim).

While it runs: one client per model calls through the model's Service from the moment its first
pod is ready (every response counted from the first 200 on), and both ModelRollouts are sampled
every 2 s (a phase `Delivered` while no ready pod serves the live version is a lie).
The module runs before the other e2e modules (tests/conftest.py orders it) on a fresh cluster,
in its own namespace, and leaves nothing but its claim, which it deletes at the end.
"""
from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from don_core.artifact import verify_version_dir
from tests.cluster.crds import install_crds
from tests.e2e.kube import Kube

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500, func_only=True)]

NS = "don-predictor"          # the README's namespace and release name
RELEASE = "don-predictor"
CHART = Path(__file__).resolve().parents[2] / "charts" / "don-predictor"
OBJECTS = {"don-rf": f"{RELEASE}-rf", "don-tf": f"{RELEASE}-tf"}
CLAIM = f"{RELEASE}-model-store"
PV = "don-lifecycle-model-store"
CLIENT_LABEL = ("don-predictor.io/client", "true")
# Replica split with serving.deployment.stableReplicas=2 (the default): 2 stable pods and 1 canary
# pod give the candidate 33 %, 2 and 2 give 50 %. What the canary really answered in an analysis
# window (a new connection per request: kube-proxy picks a pod per connection) is binomial around
# that share: the measured share must lie within 4 standard deviations for the window's request
# count (plus 2 points for the operator's own check requests), over a dozen windows a false
# alarm about once in 5,000 runs.
SHARE_SDS, SHARE_SLACK = 4.0, 2.0
RELEASE_KINDS = ("modelrollouts", "deployments", "pods", "services", "horizontalpodautoscalers",
                 "jobs", "statefulsets")


def _values() -> list[str]:
    values = {
        "serving.engine": "deployment", "images.pullPolicy": "Never",
        "training.job.enabled": "true", "operator.enabled": "true",
        "training.quick": "true", "operator.rollout.interval": "10s",
        "serving.resources.requests.cpu": "100m", "serving.resources.requests.memory": "256Mi",
        "training.resources.requests.cpu": "100m", "training.resources.requests.memory": "512Mi",
        "modelStore.pvc.size": "1Gi", "tracing.enabled": "false",
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def real_data_claim(e2e_cluster, real_data_path, ns: str, pv: str, store_name: str) -> tuple[Kube, Path]:
    """The namespace, a hostPath PersistentVolume bound ahead to the chart's claim in it, holding
    the real data where the chart's training default reads it: (kube for `ns`, the store dir)."""
    kube = Kube(e2e_cluster.kubeconfig, ns, env=dict(os.environ))
    kube.kubectl("create", "namespace", ns, namespaced=False, check=False)
    store = e2e_cluster.volumes / store_name
    shutil.rmtree(store, ignore_errors=True)
    (store / "data").mkdir(parents=True)
    shutil.copyfile(real_data_path, store / "data" / "corn_hsi_don.csv")
    for path in (store, store / "data", store / "data" / "corn_hsi_don.csv"):
        os.chown(path, 1000, 1000)  # what `kubectl cp` as the images' user would leave
    store.chmod(0o770)
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(store), "type": "Directory"},
                         "claimRef": {"namespace": ns, "name": CLAIM}}})
    if e2e_cluster.api is not None:  # Kubernetes 1.20 refuses the CRD's `default: ""` as helm sends it
        install_crds(e2e_cluster.api, sorted((CHART / "crds").glob("*.yaml")))
    return kube, store


@pytest.fixture(scope="module")
def life(e2e_cluster, real_data_path):
    """The README's namespace with the real data on the chart's claim; removed (claim and volume)
    at the end."""
    if e2e_cluster.engine != "deployment" or e2e_cluster.volumes is None:
        pytest.skip("the lifecycle runs the chart's deployment engine on the local cluster")
    kube, store = real_data_claim(e2e_cluster, real_data_path, NS, PV, "lifecycle-store")
    state = {"kube": kube, "store": store, "cluster": e2e_cluster, "violations": [], "samples": 0}
    yield state
    for model in OBJECTS:  # they hold the claim
        kube.kubectl("delete", "pod", f"client-{model}", "--ignore-not-found", "--wait=false", check=False)
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "2m", check=False)
    kube.kubectl("delete", "pvc", CLAIM, "--ignore-not-found", "--wait=false", check=False)
    kube.kubectl("delete", "pv", PV, "--ignore-not-found", "--wait=false", namespaced=False, check=False)


CLIENT_SCRIPT = r"""
import json, os, time, urllib.error, urllib.request
base, model = os.environ["BASE"], os.environ["MODEL"]
golden = f"/mnt/store/{model}/1/golden.json"
while not os.path.exists(golden):  # the training Job publishes version 1
    time.sleep(1)
rows = json.load(open(golden))["instances"]
n = 0
while True:
    body = json.dumps({"instances": [rows[n % len(rows)]], "sample_ids": [f"lot-{n}"]}).encode()
    n += 1
    req = urllib.request.Request(f"{base}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json", "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            code, version = resp.status, resp.headers.get("X-Model-Version")
    except urllib.error.HTTPError as exc:
        code, version = exc.code, exc.headers.get("X-Model-Version")
    except Exception as exc:
        code, version = 0, type(exc).__name__
    print(f"{time.time():.3f} {code} {version}", flush=True)
    time.sleep(0.1)
"""


def _client(life, model: str) -> None:
    kube = life["kube"]
    service = kube.get("service", OBJECTS[model])
    name = f"client-{model}"
    kube.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {CLIENT_LABEL[0]: CLIENT_LABEL[1]}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                 "containers": [{
                     "name": "client", "image": f"don-predictor/model-server:{_image_tag()}",
                     "imagePullPolicy": "Never", "command": ["python3", "-c", CLIENT_SCRIPT],
                     "env": [{"name": "BASE", "value": f"http://{service['spec']['clusterIP']}:80"},
                             {"name": "MODEL", "value": model}],
                     "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
                     "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                     "volumeMounts": [{"name": "store", "mountPath": "/mnt/store", "readOnly": True}]}],
                 "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}}]},
    })


def _image_tag() -> str:
    from tests.cluster.images import IMAGE_TAG
    return IMAGE_TAG


def _responses(kube: Kube, model: str) -> list[tuple[float, int, str]]:
    out = kube.kubectl("logs", f"client-{model}", check=False, timeout=60).stdout
    found = []
    for parts in (line.split() for line in out.splitlines()):
        if len(parts) == 3 and parts[1].isdigit():
            found.append((float(parts[0]), int(parts[1]), parts[2]))
    return found


def _served(responses) -> list[tuple[float, int, str]]:
    """The responses from the first 200 on (before it, no pod was ready yet)."""
    first = next((i for i, r in enumerate(responses) if r[1] == 200), None)
    return [] if first is None else responses[first:]


def _first_served(kube: Kube, model: str) -> list[tuple[float, int, str]]:
    return _served(_responses(kube, model))


def _sampler(life, stop: threading.Event) -> None:
    """Every 2 s: each ModelRollout's phase against what its stable Deployment really has ready."""
    kube = life["kube"]
    while not stop.wait(2):
        for name in OBJECTS.values():
            try:
                status = kube.get("modelrollout", name).get("status") or {}
                if status.get("phase") != "Delivered":
                    continue
                deployment = kube.get("deployment", name)
            except Exception:  # noqa: BLE001 (an object not created yet, an API hiccup)
                continue
            life["samples"] += 1
            ready = (deployment.get("status") or {}).get("readyReplicas") or 0
            version = deployment["spec"]["template"]["metadata"]["labels"].get("don-predictor.io/model-version")
            if not ready or str(version) != str(status.get("liveVersion")):
                life["violations"].append((time.time(), name, status.get("liveVersion"), ready, version))


def _rollout(life, name: str) -> dict:
    return life["kube"].get("modelrollout", name).get("status") or {}


def _reached(life, name: str, phase: str, **fields):
    """A predicate: the ModelRollout's status, once it has `phase` and these field values."""
    def check():
        status = _rollout(life, name)
        if status.get("phase") == phase and all(status.get(k) == v for k, v in fields.items()):
            return status
        return None
    return check


def _wait(life, what: str, predicate, seconds: float, name: str | None = None):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(2)
    kube = life["kube"]
    detail = kube.describe("modelrollout", name) if name else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}\n"
                         + kube.kubectl("get", "pods,jobs,deployments", "-o", "wide", check=False).stdout
                         + kube.kubectl("logs", "-l", "app.kubernetes.io/component=operator", "--tail", "30",
                                        check=False).stdout[-3000:])


def _train(life, run_id: str, seed: int, models: str, data: str | None = None) -> list[str]:
    kube = life["kube"]
    args = ["--set-string", f"training.job.runId={run_id}", "--set", f"training.seed={seed}",
            "--set", f"training.models={{{models}}}"]
    if data:
        args += ["--set", f"training.data={data}"]
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", *args)
    return [j["metadata"]["name"] for j in kube.get("jobs", selector="app.kubernetes.io/component=training")["items"]
            if j["metadata"]["name"].endswith(f"-{run_id}")]


def _deliver(life, versions: dict) -> dict:
    """Sets the desired versions; waits until each is promoted; returns the final statuses."""
    kube = life["kube"]
    sets = [arg for key, version in versions.items() for arg in ("--set", f"models.{key}.version={version}")]
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", *sets)
    done = {}
    for key, version in versions.items():
        name = f"{RELEASE}-{key}"
        done[name] = _wait(life, f"{name} promoting version {version}", _reached(
            life, name, "Promoted", trafficApplied=True, liveVersion=version), 900, name)
    return done


def _check_shares(status: dict) -> list[tuple]:
    """(status weight of the analysed step, measured share, requests in the window) of each
    analysis that measured one (an entry's own weight is the one its decision moved to)."""
    seen = []
    for entry in status.get("history") or []:
        figures, weight = entry.get("figures") or {}, entry.get("analysedWeight")
        if "canaryShare" in figures and weight not in (None, 0, 100):
            seen.append((weight, figures["canaryShare"], figures.get("windowRequests") or 1))
    return seen


def _share_tolerance(weight: float, requests: int) -> float:
    p = weight / 100
    return SHARE_SDS * 100 * (p * (1 - p) / requests) ** 0.5 + SHARE_SLACK


def test_one_install_trains_and_serves_without_intervention(life):
    kube = life["kube"]
    started = time.monotonic()
    kube.helm("install", RELEASE, str(CHART), *_values(), "--skip-crds")
    for model in OBJECTS:
        _client(life, model)
    stop = threading.Event()
    life["stop"] = stop
    threading.Thread(target=_sampler, args=(life, stop), daemon=True).start()
    jobs = [j["metadata"]["name"] for j in kube.get("jobs", selector="app.kubernetes.io/component=training")["items"]]
    assert len(jobs) == 2, jobs
    for job in jobs:
        kube.wait_job(job, timeout=1200)
    for model in OBJECTS:
        metadata = verify_version_dir(life["store"] / model / "1", expected_model=model)
        assert metadata["version"] == 1
    for name in OBJECTS.values():
        status = _wait(life, f"{name} delivered", _reached(life, name, "Delivered"), 900, name)
        assert status["liveVersion"] == 1 and status["desiredVersion"] == 1
        assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in status["conditions"])
        hpa = kube.get("horizontalpodautoscalers", name)  # the operator keeps the HPA on its stable
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
    for model in OBJECTS:
        served = _wait(life, f"first answer of {model}", functools.partial(_first_served, kube, model), 300)
        assert served[0][2] == "1"
    life["first answers"] = time.monotonic() - started
    history = [h["event"] for h in _rollout(life, OBJECTS["don-rf"])["history"]]
    # the predictors waited for the Jobs: the status said so before it said Delivered
    assert "Waiting" in history and history[-1] == "Delivered", history


def test_good_retrains_of_both_families_are_promoted(life):
    """Three good retrains in a row (new seeds, the same data), both families on the first."""
    kube = life["kube"]
    shares = []
    for run, (seed, models) in enumerate([(1, "rf,tf"), (2, "rf"), (3, "rf")], start=2):
        for job in _train(life, str(run), seed, models):
            kube.wait_job(job, timeout=1200)
        versions = {key: run for key in models.split(",")}
        statuses = _deliver(life, versions)
        for name, status in statuses.items():
            checks = {c["name"] for c in status["lastAnalysis"]["checks"]}
            assert {"successRate", "p99LatencyMs"} <= checks, checks
            measured = _check_shares(status)
            assert measured, status["history"]
            shares += measured
            assert kube.get("horizontalpodautoscalers", name)["spec"]["scaleTargetRef"]["name"] == name
    for weight, share, requests in shares:
        assert abs(share - weight) <= _share_tolerance(weight, requests), shares
    life["shares"] = shares
    assert _rollout(life, OBJECTS["don-rf"])["liveVersion"] == 4
    assert _rollout(life, OBJECTS["don-tf"])["liveVersion"] == 2


def test_a_lab_export_in_ppm_is_refused_by_the_training_job(life):
    kube = life["kube"]
    source = life["store"] / "data" / "corn_hsi_don.csv"
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    target = header.index("vomitoxin_ppb")
    ppm = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[target] = repr(float(cells[target]) / 1000)
        ppm.append(",".join(cells))
    path = life["store"] / "data" / "corn_ppm.csv"
    path.write_text("\n".join(ppm) + "\n")
    os.chown(path, 1000, 1000)
    (job,) = _train(life, "ppm", 0, "rf", data="/mnt/store/data/corn_ppm.csv")
    status = _wait(life, f"job {job} to fail", lambda: (
        (s := kube.get("job", job).get("status", {})).get("failed") and not s.get("active") and s), 600)
    assert not status.get("succeeded"), status
    logs = kube.kubectl("logs", f"job/{job}", check=False).stdout
    assert "ppm" in logs, logs
    assert sorted(int(p.name) for p in (life["store"] / "don-rf").iterdir() if p.name.isdigit()) == [1, 2, 3, 4]


def test_the_client_saw_no_error_and_the_status_never_lied(life):
    life["stop"].set()
    for model in OBJECTS:
        served = _served(_responses(life["kube"], model))
        bad = [r for r in served if not 200 <= r[1] < 300]
        assert served and not bad, (len(served), bad[:10])
        versions = {r[2] for r in served}
        assert versions >= {"1", "2"}, versions
    assert life["samples"] > 0 and not life["violations"], life["violations"][:10]


def _leftovers(kube: Kube) -> dict:
    found = {}
    for kind in RELEASE_KINDS:
        items = kube.get(kind)["items"]
        names = [i["metadata"]["name"] for i in items if not i["metadata"]["name"].startswith("client-")]
        if names:
            found[kind] = names
    return found


def _uninstall(life) -> float:
    kube = life["kube"]
    for model in OBJECTS:
        kube.kubectl("delete", "pod", f"client-{model}", "--ignore-not-found", "--wait=false", check=False)
    started = time.monotonic()
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "2m", timeout=180)
    leftovers = _wait(life, "nothing of the release left", lambda: not _leftovers(kube) and {"ok": True}, 120)
    took = time.monotonic() - started
    assert leftovers and took < 120, (took, _leftovers(kube))
    assert kube.get("pvc", CLAIM)["metadata"]["name"] == CLAIM  # the model store outlives the release
    return took


def test_uninstall_leaves_only_the_claim(life):
    life["uninstall"] = _uninstall(life)


def test_uninstall_with_the_operator_already_gone(life):
    """Installed again on the kept store (versions exist), delivered, then the operator scaled to
    0 before `helm uninstall`: nothing waits for it."""
    kube = life["kube"]
    kube.helm("install", RELEASE, str(CHART), *_values(), "--skip-crds",
              "--set", "training.job.enabled=false", "--set", "models.rf.version=4", "--set", "models.tf.version=2")
    for key, version in (("rf", 4), ("tf", 2)):
        name = f"{RELEASE}-{key}"
        _wait(life, f"{name} delivered", _reached(life, name, "Delivered", liveVersion=version), 600, name)
    operator = kube.get("deployments", selector="app.kubernetes.io/component=operator")["items"][0]
    kube.kubectl("scale", "deployment", operator["metadata"]["name"], "--replicas=0")
    _wait(life, "the operator gone", lambda: not kube.get(
        "pods", selector="app.kubernetes.io/component=operator")["items"] and {"ok": True}, 120)
    life["uninstall without operator"] = _uninstall(life)
