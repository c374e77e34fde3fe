"""Shadow first, lab results decide: the operator's shadow step against a real kube-apiserver, with
the operator as its own process, real model servers on loopback and a real prediction recorder.

The whole chain runs: the operator creates the shadow and writes the mirror ConfigMap; a stand-in
kubelet copies the ConfigMap into the stable server's mirror file (model_server/mirror.py re-reads
it); callers' requests (each a lab lot with its sample id) reach the stable only, which mirrors
them to the candidate; both servers record to the recorder; the lab's results arrive; the operator
reads the recorder's pairs and the lab gate decides. A healthy candidate (v2) passes and goes on
through the canary steps to Promoted; one trained on shuffled targets (v3) fails in shadow and is
rolled back before any caller saw an answer of it. Either way no shadow and no mirror setting is
left. The shadow deadline with each onNoLabels (no lab results at all) follows, and the
post-promotion watch closes the module: the broken v3, promoted by hand, serves and mirrors to v1
running on as the shadow; the lab gate on those pairs fails it and v1's pod template is restored.
On KServe (Standard, Knative) the shadow is InferenceService don-shadow: a stand-in for KServe's
controller reports it Ready at the shadow server's address, which the mirror ConfigMap follows.

The gate's margin here is 0.1, not the default 0.02: on the 34 reference lots of these tiny models
the healthy candidate's bound is 0.09 and the broken one's lower bound 0.13 (the default margin
needs the hundreds of lots of real data, docs/performance/benchmarks.md).
"""
from __future__ import annotations

import time

import pytest
import requests

from don_core.contract import MODEL_LABEL_KEY, MODEL_VERSION_LABEL, TRACK_LABEL
from don_core.store import open_store
from ops.rollout.shadow import request_mirror
from tests.fixtures_operator import running_recorder
from tests.fixtures_server import ServerProcess
from tests.integration import test_operator_apiserver as apiserver
from tests.integration.test_operator_apiserver import (
    Loop, ReadyDeployments, Traffic, Watcher, create_isvc, events, golden_rows, rollout, terminal)
from tests.integration import test_operator_paths as paths
from tests.integration.test_operator_paths import ROUTE, deployment

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]
kube, namespace = apiserver.kube, apiserver.namespace
httproute_crd = paths.httproute_crd  # that module's fixture, by name
TOKEN = "shadow-token"
GATE = {"minPairs": 20, "margin": 0.1}


@pytest.fixture(scope="module")
def lab_recorder(tmp_path_factory):
    with running_recorder(tmp_path_factory.mktemp("recorder"), TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def servers(rollout_store, lab_recorder, tmp_path_factory):
    """Stable v1 (mirrors as its mirror file says), healthy v2 and broken v3, all recording."""
    logs = tmp_path_factory.mktemp("shadow-servers")
    (logs / "token").write_text(TOKEN)
    records = ("--records_url", lab_recorder + "/", "--records_token_file", str(logs / "token"),
               "--records_flush_seconds", "0.2")
    mirror_file = logs / "mirror" / "mirror.json"
    mirror_file.parent.mkdir()
    plan = {"stable": (1, ("--mirror_config", str(mirror_file))), "good": (2, ()), "worse": (3, ())}
    started = {name: ServerProcess("don", rollout_store / "don" / str(version), logs / f"{name}.log",
                                   *records, *extra) for name, (version, extra) in plan.items()}
    try:
        for server in started.values():
            server.wait(timeout=120)
        yield dict(started, mirror_file=mirror_file, records=records, logs=logs)
    finally:
        for server in started.values():
            server.terminate()
            server.stop()


class Kubelet(Loop):
    """Stands in for the kubelet's ConfigMap volume: the stable's mirror file follows ConfigMap
    `don-mirror` (its mirror.json; no file while there is no ConfigMap)."""

    def __init__(self, kube, ns: str, path):
        super().__init__()
        self.kube, self.ns, self.path, self.seen = kube, ns, path, []

    def step(self):
        try:
            data = self.kube.get_configmap(self.ns, "don-mirror")["data"]["mirror.json"]
        except Exception:  # gone (404), or not yet
            data = None
        if data is None:
            self.path.unlink(missing_ok=True)
        elif not self.path.exists() or self.path.read_text() != data:
            self.path.write_text(data)
            self.seen.append(data)

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.path.unlink(missing_ok=True)


class Lots(Loop):
    """Callers: the reference set's rows, one request per lot carrying its sample id, to the stable
    alone; and the lab's results for those lots."""
    every = 0.5

    def __init__(self, store, stable_url: str, recorder: str):
        super().__init__()
        reference = open_store(str(store)).read_reference("don")
        self.rows, self.truth = reference["instances"], reference["targets_ppb"]
        self.ids = [f"lot-{key}" for key in reference["keys"]]
        self.url, self.recorder = f"{stable_url}/v1/models/don:predict", recorder
        self.session = requests.Session()

    def step(self):
        for row, sample in zip(self.rows, self.ids):
            try:
                self.session.post(self.url, json={"instances": [row], "sample_ids": [sample]}, timeout=5)
            except requests.RequestException:
                pass

    def measured(self) -> None:
        csv = ["sample_id,vomitoxin_ppb,method,measured_at"] + [
            f"{sample},{truth},HPLC,2026-01-01T00:00:00Z" for sample, truth in zip(self.ids, self.truth)]
        stored = requests.post(self.recorder + "/v1/labresults", data="\r\n".join(csv) + "\r\n",
                               timeout=10, headers={"Authorization": f"Bearer {TOKEN}",
                                                    "Content-Type": "text/csv"})
        assert stored.status_code == 200, stored.text


def with_model_label(body: dict) -> dict:
    """The chart's predictor pods carry the model label the model's Service selects on."""
    for labels in (body["spec"]["template"]["metadata"]["labels"], body["spec"]["selector"]["matchLabels"]):
        labels[MODEL_LABEL_KEY] = "don"
    return body


def shadowed(name: str, version: int, stable, shadow_url: str, store, recorder: str, **shadow) -> dict:
    body = rollout(name, mode="Deployment", version=version, steps=("shadow", 50, 100),
                   stable_url=stable.base, canary_url=shadow_url, store=store)
    body["spec"]["labGate"] = dict(GATE, recorderUrl=recorder)
    body["spec"]["shadow"] = dict({"deadline": "3m"}, **shadow)
    body["spec"]["endpoints"]["shadowUrl"] = shadow_url
    return body


def create_tracks(kube, ns: str, candidate: int) -> Watcher:
    """The stable (v1, 2 replicas) and the canary Deployment of the candidate; a watcher on don-v<N>."""
    kube.apps.create_namespaced_deployment(ns, with_model_label(deployment("don", "stable", "1", 2)))
    kube.apps.create_namespaced_deployment(ns, with_model_label(deployment("don-canary", "canary", str(candidate), 0)))
    return Watcher(kube, ns, f"don-v{candidate}", "Deployment")


def rolled_back_in_shadow(final: dict) -> dict:
    """The status of a candidate the lab gate failed in shadow: callers never got its answers."""
    status = final["status"]
    assert status["phase"] == "RolledBack", status["message"]
    assert "rolled back in shadow: lab gate Fail" in status["message"]
    assert all(h["weight"] == 0 for h in status["history"])
    return status


def nothing_of_the_shadow_left(kube, ns: str) -> None:
    from kubernetes.client.rest import ApiException
    for read, name in ((kube.core.read_namespaced_config_map, "don-mirror"),
                       (kube.apps.read_namespaced_deployment, "don-shadow"),
                       (kube.core.read_namespaced_service, "don-shadow")):
        with pytest.raises(ApiException) as gone:
            read(name, ns)
        assert gone.value.status == 404, name


def test_a_healthy_candidate_is_shadowed_passes_the_lab_gate_and_is_promoted(
        kube, namespace, operator_cluster, servers, rollout_store, lab_recorder):
    stable, good = servers["stable"], servers["good"]
    watcher = create_tracks(kube, namespace, 2)
    lots = Lots(rollout_store, stable.base, lab_recorder)
    with ReadyDeployments(kube, namespace), Kubelet(kube, namespace, servers["mirror_file"]) as kubelet:
        kube.create_rollout(namespace, shadowed("don-v2", 2, stable, good.base, rollout_store, lab_recorder))
        shadowing = watcher.until(lambda s: s.get("stepLabel") == "shadow" and s.get("trafficApplied"))
        status = shadowing["status"]
        assert (status["phase"], status["step"], status["weight"]) == ("Progressing", 0, 0)
        shadow = kube.raw_deployment(namespace, "don-shadow")
        labels = shadow["spec"]["template"]["metadata"]["labels"]
        assert labels[TRACK_LABEL] == "shadow" and MODEL_LABEL_KEY not in labels  # no caller reaches it
        assert kube.get_configmap(namespace, "don-mirror")["data"]["mirror.json"] == \
            f'{{"percent": 100, "url": "{good.base}"}}'
        with lots:
            lots.measured()
            # the lab gate passes once the pairs are in; the canary steps follow with traffic
            watcher.until(lambda s: s.get("step") == 1, timeout=90)
        with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
            final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"), timeout=90)
        assert kubelet.seen  # the stable's server was told to mirror...
        deadline = time.monotonic() + 10
        while servers["mirror_file"].exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not servers["mirror_file"].exists()  # ...and to stop
    status = final["status"]
    assert status["phase"] == "Promoted", status["message"]
    gate = status["labGate"]
    assert gate["verdict"] == "Pass" and gate["pairs"] >= 20 and gate["upper"] <= 0.1, gate
    passed = next(h for h in status["history"] if h.get("lab", {}).get("verdict") == "Pass")
    assert passed["event"] == "Advanced" and passed["step"] == 1 and "lab gate Pass" in passed["message"]
    assert [h["weight"] for h in status["history"] if h["event"] in ("Started", "Advanced")] == [0, 50, 100]
    nothing_of_the_shadow_left(kube, namespace)
    assert {"Shadow", "Advanced", "Promoted"} <= set(events(kube, namespace, "don-v2"))
    promoted = kube.raw_deployment(namespace, "don")
    assert promoted["spec"]["template"]["metadata"]["labels"]["don-predictor.io/model-version"] == "2"


def test_a_broken_candidate_fails_in_shadow_and_no_caller_ever_saw_it(
        kube, namespace, operator_cluster, servers, rollout_store, lab_recorder):
    stable, worse = servers["stable"], servers["worse"]
    watcher = create_tracks(kube, namespace, 3)
    lots = Lots(rollout_store, stable.base, lab_recorder)
    body = shadowed("don-v3", 3, stable, worse.base, rollout_store, lab_recorder)
    # the reference set would catch this one too: off, so that the lab's verdict alone decides
    body["spec"]["analysis"]["referenceSet"] = False
    with ReadyDeployments(kube, namespace), Kubelet(kube, namespace, servers["mirror_file"]), lots:
        lots.measured()
        kube.create_rollout(namespace, body)
        final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"), timeout=90)
    status = rolled_back_in_shadow(final)
    assert status["labGate"]["lower"] > 0.1 and status["labGate"]["pairs"] >= 20
    nothing_of_the_shadow_left(kube, namespace)
    assert kube.get_deployment(namespace, "don-canary")["spec"]["replicas"] == 0
    stable_template = kube.raw_deployment(namespace, "don")["spec"]["template"]
    assert stable_template["metadata"]["labels"]["don-predictor.io/model-version"] == "1"


@pytest.mark.parametrize("on_no_labels,phase", [("Proceed", "Promoted"), ("RollBack", "RolledBack")])
def test_the_shadow_deadline_without_lab_results(kube, namespace, operator_cluster, servers,
                                                 rollout_store, tmp_path, on_no_labels, phase):
    stable, good = servers["stable"], servers["good"]
    watcher = create_tracks(kube, namespace, 2)
    with running_recorder(tmp_path, TOKEN) as empty, ReadyDeployments(kube, namespace), \
            Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, shadowed("don-v2", 2, stable, good.base, rollout_store, empty,
                                                deadline="3s", onNoLabels=on_no_labels))
        final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"), timeout=90)
    status = final["status"]
    assert status["phase"] == phase, status["message"]
    left = [h for h in status["history"] if h.get("lab")][-1]  # the look at the deadline
    assert left["lab"]["pairs"] == 0 and "shadow deadline 3s reached" in left["message"]
    nothing_of_the_shadow_left(kube, namespace)
    if phase == "RolledBack":
        assert "ShadowDeadlineExceeded" in events(kube, namespace, "don-v2")
        assert all(h["weight"] == 0 for h in status["history"])
    else:
        assert "proceeding without a lab verdict" in left["message"] and left["event"] == "Advanced"


def test_a_promoted_version_failing_the_watch_is_rolled_back_to_the_previous_one(
        kube, namespace, operator_cluster, servers, rollout_store, lab_recorder):
    from ops.rollout.shadow import PREVIOUS_TEMPLATE
    previous, logs = servers["stable"], servers["logs"]
    # v3 as the promoted stable's server: it mirrors as its own mirror file says (the kubelet's
    # copy of don-mirror), to v1 (shadowUrl), which answers the copies as the shadow
    mirror_file = logs / "mirror-promoted" / "mirror.json"
    mirror_file.parent.mkdir()
    promoted = ServerProcess("don", rollout_store / "don" / "3", logs / "promoted.log",
                             *servers["records"], "--mirror_config", str(mirror_file))
    watcher = create_tracks(kube, namespace, 3)
    body = shadowed("don-v3", 3, previous, previous.base, rollout_store, lab_recorder, watch="5m")
    body["spec"]["action"] = "Promote"  # promoted by hand straight from the shadow step
    try:
        promoted.wait(timeout=120)
        lots = Lots(rollout_store, promoted.base, lab_recorder)
        with ReadyDeployments(kube, namespace), Kubelet(kube, namespace, mirror_file):
            kube.create_rollout(namespace, body)
            watching = watcher.until(lambda s: s.get("watchUntil") and s.get("trafficApplied"))
            assert watching["status"]["phase"] == "Promoted", watching["status"]["message"]
            assert "watching it against version 1" in watching["status"]["message"]
            stable = kube.raw_deployment(namespace, "don")["spec"]["template"]["metadata"]["labels"]
            assert stable[MODEL_VERSION_LABEL] == "3"
            shadow = kube.raw_deployment(namespace, "don-shadow")
            kept = shadow["metadata"]["annotations"][PREVIOUS_TEMPLATE]
            assert f'"{MODEL_VERSION_LABEL}": "1"' in kept  # the stable's template before the patch
            assert kube.get_configmap(namespace, "don-mirror")["data"]["mirror.json"] == \
                f'{{"percent": 100, "url": "{previous.base}"}}'
            with lots:
                lots.measured()
                final = watcher.until(lambda s: terminal(s) and not s.get("watchUntil")
                                      and s.get("trafficApplied"), timeout=90)
    finally:
        promoted.terminate()
        promoted.stop()
    status = final["status"]
    assert status["phase"] == "RolledBack", status["message"]
    assert status["watchResult"] == "Fail"
    assert "rolled back after promotion (watch): lab gate Fail" in status["message"]
    assert "version 1 serves again" in status["message"]
    assert status["labGate"]["lower"] > 0.1 and status["labGate"]["pairs"] >= 20
    restored = kube.raw_deployment(namespace, "don")["spec"]["template"]["metadata"]["labels"]
    assert restored[MODEL_VERSION_LABEL] == "1"
    nothing_of_the_shadow_left(kube, namespace)
    assert {"Shadow", "Promoted", "RolledBack"} <= set(events(kube, namespace, "don-v3"))


def test_on_the_httproute_engine_the_gateway_mirrors_and_the_filter_goes(
        kube, namespace, operator_cluster, httproute_crd, servers, rollout_store, tmp_path):
    from kubernetes.client.rest import ApiException
    stable, good = servers["stable"], servers["good"]
    watcher = create_tracks(kube, namespace, 2)
    kube.custom.create_namespaced_custom_object(*ROUTE[:2], namespace, ROUTE[2], {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "don"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{
            "backendRefs": [{"name": "don-stable", "port": 80, "weight": 100},
                            {"name": "don-canary", "port": 80, "weight": 0}]}]}})
    seen, configmaps = [], []

    def record(status):
        route = kube.custom.get_namespaced_custom_object(*ROUTE[:2], namespace, ROUTE[2], "don")
        filters = route["spec"]["rules"][0].get("filters") or []
        if seen[-1:] != [filters]:
            seen.append(filters)
        try:
            configmaps.append(kube.get_configmap(namespace, "don-mirror"))
        except ApiException:
            pass
        return terminal(status) and status.get("trafficApplied")

    with running_recorder(tmp_path, TOKEN) as empty, ReadyDeployments(kube, namespace):
        body = shadowed("don-v2", 2, stable, good.base, rollout_store, empty, deadline="3s", percent=50)
        body["spec"]["deployment"] = {"httpRoute": "don"}
        kube.create_rollout(namespace, body)
        final = watcher.until(record, timeout=90)
    status = final["status"]
    assert status["phase"] == "RolledBack", status["message"]  # no lab results: onNoLabels RollBack
    mirror = request_mirror("don-shadow", 50)
    assert mirror["requestMirror"]["percent"] == 50
    assert [mirror] in seen and seen[-1] == [], seen  # the Gateway copied, then stopped
    # written once: the filter read back (the real CRD's defaults applied) is the one written
    found = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.name=don-v2").items
    written = [e.message for e in found if "created" in e.message and "RequestMirror filter" in e.message]
    assert len(written) == 1, written
    assert not configmaps  # the stable's servers were never told to mirror
    nothing_of_the_shadow_left(kube, namespace)


class KServe(Loop):
    """Stands in for KServe's controller on the shadow InferenceService don-shadow: reports it
    Ready at `url` (status.address.url, where the shadow's server answers) and keeps each body it
    saw (by uid)."""

    def __init__(self, kube, ns: str, url: str):
        super().__init__()
        self.kube, self.ns, self.url, self.seen = kube, ns, url, {}

    def step(self):
        from ops.rollout.kube import ISVC, MERGE
        try:
            isvc = self.kube.get_isvc(self.ns, "don-shadow")
        except Exception:  # not there (404), or gone
            return
        self.seen.setdefault(isvc["metadata"]["uid"], isvc)
        if not (isvc.get("status") or {}).get("conditions"):
            self.kube.custom.patch_namespaced_custom_object_status(
                *ISVC[:2], self.ns, ISVC[2], "don-shadow", {"status": {
                    "address": {"url": self.url}, "observedGeneration": isvc["metadata"]["generation"],
                    "conditions": [{"type": "Ready", "status": "True"}]}}, _content_type=MERGE)


def isvc_shadowed(mode: str, name: str, version: int, stable, shadow_url: str, store,
                  recorder: str) -> dict:
    """A shadowed rollout of the InferenceService `don`: no shadowUrl, so the mirror setting
    follows what KServe (the stand-in) reports."""
    body = shadowed(name, version, stable, shadow_url, store, recorder)
    body["spec"]["mode"] = mode
    del body["spec"]["endpoints"]["shadowUrl"]
    return body


def nothing_of_the_isvc_shadow_left(kube, ns: str) -> None:
    from kubernetes.client.rest import ApiException
    for read, name in ((kube.core.read_namespaced_config_map, "don-mirror"),
                       (lambda n, ns: kube.get_isvc(ns, n), "don-shadow")):
        with pytest.raises(ApiException) as gone:
            read(name, ns)
        assert gone.value.status == 404, name


def mirrors_to(kube, ns: str, url: str) -> bool:
    try:
        return kube.get_configmap(ns, "don-mirror")["data"]["mirror.json"] == \
            f'{{"percent": 100, "url": "{url}"}}'
    except Exception:
        return False


def test_on_kserve_the_shadow_is_an_inference_service_of_its_own(
        kube, namespace, operator_cluster, servers, rollout_store, lab_recorder):
    # Standard here, Knative in the broken candidate's test: the recorder keeps the pairs of
    # (v1, v2) for the module, so a second v2 shadow here would pass the lab gate at once.
    mode = "Standard"
    stable, good = servers["stable"], servers["good"]
    create_isvc(kube, namespace, mode)
    watcher = Watcher(kube, namespace, "don-v2", mode)
    lots = Lots(rollout_store, stable.base, lab_recorder)
    with KServe(kube, namespace, good.base) as kserve, \
            Kubelet(kube, namespace, servers["mirror_file"]) as kubelet:
        kube.create_rollout(namespace, isvc_shadowed(mode, "don-v2", 2, stable, good.base,
                                                     rollout_store, lab_recorder))
        shadowing = watcher.until(lambda s: s.get("stepLabel") == "shadow" and s.get("trafficApplied"))
        assert (shadowing["status"]["phase"], shadowing["status"]["weight"]) == ("Progressing", 0)
        shadow = kube.get_isvc(namespace, "don-shadow")
        assert shadow["metadata"]["ownerReferences"][0]["name"] == "don-v2"
        model = shadow["spec"]["predictor"]["model"]
        assert model["storageUri"] == "pvc://models/don/2" and {"name": "DON_SHADOW", "value": "1"} in model["env"]
        assert "canaryTrafficPercent" not in shadow["spec"]["predictor"]
        assert shadow["metadata"]["labels"][TRACK_LABEL] == "shadow"
        # once KServe reports the shadow Ready, the stable's servers mirror to its address
        watcher.until(lambda s: mirrors_to(kube, namespace, good.base), timeout=30)
        assert kube.get_isvc(namespace, "don")["spec"]["predictor"]["model"]["storageUri"] == \
            "pvc://models/don/1"  # callers' InferenceService untouched while shadowing
        with lots:
            lots.measured()
            watcher.until(lambda s: s.get("step") == 1, timeout=90)
        with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
            final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"), timeout=90)
    status = final["status"]
    assert status["phase"] == "Promoted", status["message"]
    assert status["labGate"]["verdict"] == "Pass" and status["labGate"]["pairs"] >= 20, status["labGate"]
    assert [h["weight"] for h in status["history"] if h["event"] in ("Started", "Advanced")] == [0, 50, 100]
    assert len(kserve.seen) == 1 and any(good.base in seen for seen in kubelet.seen)
    nothing_of_the_isvc_shadow_left(kube, namespace)
    assert kube.get_isvc(namespace, "don")["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    assert {"Shadow", "Advanced", "Promoted"} <= set(events(kube, namespace, "don-v2"))


def test_on_kserve_a_broken_candidate_fails_in_shadow(
        kube, namespace, operator_cluster, servers, rollout_store, lab_recorder):
    stable, worse = servers["stable"], servers["worse"]
    create_isvc(kube, namespace, "Knative")
    watcher = Watcher(kube, namespace, "don-v3", "Knative")
    body = isvc_shadowed("Knative", "don-v3", 3, stable, worse.base, rollout_store, lab_recorder)
    body["spec"]["analysis"]["referenceSet"] = False  # the lab's verdict alone decides
    with KServe(kube, namespace, worse.base), Kubelet(kube, namespace, servers["mirror_file"]), \
            Lots(rollout_store, stable.base, lab_recorder) as lots:
        lots.measured()
        kube.create_rollout(namespace, body)
        final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"), timeout=90)
    rolled_back_in_shadow(final)
    assert watcher.weights() in ([], [0])
    nothing_of_the_isvc_shadow_left(kube, namespace)
    stable_predictor = kube.get_isvc(namespace, "don")["spec"]["predictor"]
    assert stable_predictor["model"]["storageUri"] == "pvc://models/don/1"
