"""Operator paths no other test reaches, against a real kube-apiserver with the operator running
as its own process and real model servers on loopback (the fixtures and helpers of
test_operator_apiserver.py): the HTTPRoute router, an invalid spec, a desired version changed
mid-rollout, targets that do not exist, a rollout waiting behind another, a candidate that is
already the stable, and the live-accuracy check against a real prediction recorder.

The assertions are on what each path must do (roll back, refuse, wait, name the reason), not on
the wording of intermediate phases.
"""
from __future__ import annotations

import datetime as dt
import time

import pytest
import requests
import yaml

from tests.fixtures_cluster import HTTPROUTE_CRD, install_crds
from tests.fixtures_operator import running_recorder
from tests.integration import test_operator_apiserver as apiserver
from tests.integration.test_operator_apiserver import (
    STABLE_URI, ReadyDeployments, Traffic, Watcher, create_isvc, desired_rollout, events,
    golden_rows, rollout, set_desired, terminal)

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]
# that module's fixtures, by name: the model servers boot first, an API client, a namespace per test
_boot_servers_first, kube, namespace = apiserver._boot_servers_first, apiserver.kube, apiserver.namespace

# Where Gateway API's real HTTPRoute CRD is absent (tests/fixtures_cluster.py HTTPROUTE_CRD), a
# stand-in of the part the operator touches: rules[].backendRefs[] with a weight the API server
# checks, the rest kept as written (no pruning, no defaults: test_gateway_api_route.py needs the real one).
HTTPROUTE_STAND_IN = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    # *.k8s.io groups need this annotation; the real CRD carries the same one
    "metadata": {"name": "httproutes.gateway.networking.k8s.io",
                 "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}},
    "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
             "names": {"kind": "HTTPRoute", "listKind": "HTTPRouteList", "plural": "httproutes",
                       "singular": "httproute"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {
                         "rules": {"type": "array", "items": {
                             "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "properties": {"backendRefs": {"type": "array", "items": {
                                 "type": "object", "required": ["name"],
                                 "x-kubernetes-preserve-unknown-fields": True,
                                 "properties": {"name": {"type": "string"},
                                                "port": {"type": "integer"},
                                                "weight": {"type": "integer", "minimum": 0,
                                                           "maximum": 1000000}}}}}}}}}}}}}]}}
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")


@pytest.fixture(scope="module")
def httproute_crd(operator_cluster, tmp_path_factory):
    """Gateway API's real HTTPRoute CRD installed, else the stand-in above."""
    cluster, _ = operator_cluster
    path = HTTPROUTE_CRD
    if not path.is_file():
        path = tmp_path_factory.mktemp("crds") / "httproutes.yaml"
        path.write_text(yaml.safe_dump(HTTPROUTE_STAND_IN))
    install_crds(cluster, [path])


def deployment(name: str, track: str, version: str, replicas: int) -> dict:
    labels = {"app": "don", "don-predictor.io/track": track, "don-predictor.io/model-version": version}
    return {"metadata": {"name": name},
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {"app": "don", "don-predictor.io/track": track}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "model-server", "image": "don-predictor/model-server:test",
                         "env": [{"name": "DON_MODEL_VERSION", "value": version}]}]}}}}


def route_weights(kube, ns: str) -> tuple[int, int]:
    route = kube.custom.get_namespaced_custom_object(*ROUTE[:2], ns, ROUTE[2], "don")
    weights = {ref["name"]: ref.get("weight") for ref in route["spec"]["rules"][0]["backendRefs"]}
    return weights["don-stable"], weights["don-canary"]


def in_order(seen: list, expected: list) -> bool:
    wanted = iter(expected)
    step = next(wanted)
    for item in seen:
        if item == step:
            step = next(wanted, None)
    return step is None


def history(status: dict) -> list[tuple[str, str]]:
    return [(h["event"], h.get("message", "")) for h in status.get("history") or []]


def test_httproute_router_writes_the_weights_to_the_route(kube, namespace, httproute_crd,
                                                          model_servers, rollout_store):
    stable, good = model_servers["stable"], model_servers["good"]
    kube.apps.create_namespaced_deployment(namespace, deployment("don", "stable", "1", 2))
    kube.apps.create_namespaced_deployment(namespace, deployment("don-canary", "canary", "2", 0))
    kube.custom.create_namespaced_custom_object(*ROUTE[:2], namespace, ROUTE[2], {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "don"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "don-stable", "port": 80, "weight": 100},
                            {"name": "don-canary", "port": 80, "weight": 0}]}]}})
    body = rollout("don-v2", mode="Deployment", version=2, steps=(50, 100),
                   stable_url=stable.base, canary_url=good.base, store=rollout_store)
    body["spec"]["deployment"] = {"httpRoute": "don"}
    seen, replicas = [route_weights(kube, namespace)], []

    def record(status):
        for found, log in ((route_weights(kube, namespace), seen),
                           ((kube.get_deployment(namespace, "don")["spec"]["replicas"],
                             kube.get_deployment(namespace, "don-canary")["spec"]["replicas"]), replicas)):
            if log[-1:] != [found]:
                log.append(found)
        return terminal(status) and status.get("trafficApplied")

    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)), ReadyDeployments(kube, namespace):
        kube.create_rollout(namespace, body)
        final = Watcher(kube, namespace, "don-v2", "Deployment").until(record, timeout=90)
    assert final["status"]["phase"] == "Promoted", final["status"]["message"]
    # the weights were carried by the route at each step, then all traffic back on the stable
    # backend, which now runs the candidate
    assert in_order(seen, [(100, 0), (50, 50), (0, 100), (100, 0)]), seen
    assert route_weights(kube, namespace) == (100, 0)
    # the route splits traffic, so both Deployments run the whole replica total meanwhile
    assert (2, 2) in replicas and replicas[-1] == (2, 0), replicas
    promoted = kube.raw_deployment(namespace, "don")["spec"]["template"]["metadata"]["labels"]
    assert promoted["don-predictor.io/model-version"] == "2"


def test_an_invalid_spec_fails_with_an_event_naming_the_field(kube, namespace, operator_cluster,
                                                             model_servers, rollout_store):
    create_isvc(kube, namespace, "Standard")
    body = rollout("don-v2", mode="Standard", version=2, steps=(50, 20),
                   stable_url=model_servers["stable"].base, canary_url=model_servers["good"].base,
                   store=rollout_store)
    kube.create_rollout(namespace, body)
    final = Watcher(kube, namespace, "don-v2", "Standard").until(terminal)
    status = final["status"]
    assert status["phase"] == "Failed"
    assert "invalid spec" in status["message"] and "spec.steps [50, 20]" in status["message"]
    assert "InvalidSpec" in events(kube, namespace, "don-v2")
    isvc = kube.get_isvc(namespace, "don")
    assert "canary" not in isvc["spec"]  # nothing was moved
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == STABLE_URI


def test_a_desired_version_changed_mid_rollout_supersedes_the_old_candidate(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    stable, good, worse = model_servers["stable"], model_servers["good"], model_servers["worse"]
    watcher = Watcher(kube, namespace, "don", "Standard")
    kube.create_rollout(namespace, desired_rollout("Standard", 1, stable.base, stable.base, rollout_store))
    watcher.until(lambda s: s.get("liveVersion") == 1 and s.get("trafficApplied"))
    kube.patch_rollout(namespace, "don", {"spec": {"interval": "1h"}})  # no analysis ends step 1
    set_desired(kube, namespace, 2, stable.base, good.base)
    watcher.until(lambda s: s.get("phase") == "Progressing" and s.get("candidateVersion") == 2
                  and s.get("trafficApplied"))
    assert watcher.isvc()["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "pvc://models/don/2"
    set_desired(kube, namespace, 3, stable.base, worse.base)
    now = watcher.until(lambda s: s.get("phase") == "Progressing" and s.get("candidateVersion") == 3
                        and s.get("trafficApplied"))
    status = now["status"]
    rolled = [message for event, message in history(status) if event == "RolledBack"]
    assert len(rolled) == 1 and "superseded" in rolled[0] and "version 2" in rolled[0], history(status)
    assert [event for event, _ in history(status)][-2:] == ["RolledBack", "Started"]
    assert status["desiredVersion"] == 3
    isvc = watcher.isvc()
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == STABLE_URI
    assert isvc["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "pvc://models/don/3"
    assert {"RolledBack", "Started"} <= set(events(kube, namespace, "don"))


def test_desired_delivery_without_its_target_fails_naming_it_then_goes_on(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    stable = model_servers["stable"]
    body = desired_rollout("Standard", 1, stable.base, stable.base, rollout_store)
    del body["spec"]["inferenceService"]  # nothing the operator could create the target from
    watcher = Watcher(kube, namespace, "don", "Standard")
    kube.create_rollout(namespace, body)
    failed = watcher.until(lambda s: s.get("phase") == "Failed")
    message = failed["status"]["message"]
    assert "cannot deliver version 1" in message and "target don" in message and "404" in message
    assert "Failed" in events(kube, namespace, "don")
    # the InferenceService appears (e.g. applied by hand): delivery goes on by itself
    create_isvc(kube, namespace, "Standard")
    after = watcher.until(lambda s: s.get("phase") != "Failed" and s.get("liveVersion") == 1)
    assert "cannot deliver" not in after["status"].get("message", "")


def test_a_rollout_on_a_missing_target_fails_naming_it(kube, namespace, operator_cluster,
                                                       model_servers, rollout_store):
    kube.create_rollout(namespace, rollout("don-v2", mode="Standard", version=2,
                                           stable_url=model_servers["stable"].base,
                                           canary_url=model_servers["good"].base, store=rollout_store))
    final = Watcher(kube, namespace, "don-v2", "Standard").until(terminal)
    status = final["status"]
    assert status["phase"] == "Failed"
    assert "cannot start on Standard target don" in status["message"] and "404" in status["message"]
    assert "Failed" in events(kube, namespace, "don-v2")


def test_a_desired_rollout_waits_behind_another_on_the_same_target(
        kube, namespace, operator_cluster, model_servers, rollout_store):
    stable, good, worse = model_servers["stable"], model_servers["good"], model_servers["worse"]
    create_isvc(kube, namespace, "Standard")
    first = Watcher(kube, namespace, "don-v2", "Standard")
    kube.create_rollout(namespace, rollout("don-v2", mode="Standard", version=2, interval="1h",
                                           stable_url=stable.base, canary_url=good.base,
                                           store=rollout_store))
    first.until(lambda s: s.get("phase") == "Progressing" and s.get("trafficApplied"))
    second = Watcher(kube, namespace, "don", "Standard")
    kube.create_rollout(namespace, desired_rollout("Standard", 3, stable.base, worse.base, rollout_store))
    waiting = second.until(lambda s: "don-v2 is already rolling out don" in (s.get("message") or ""))
    assert waiting["status"].get("phase") not in ("Progressing", "Failed", "RolledBack")
    time.sleep(2)  # it keeps waiting, and leaves the running rollout's canary alone
    assert kube.get_rollout(namespace, "don")["status"].get("phase") not in ("Progressing", "Failed")
    canary = kube.get_isvc(namespace, "don")["spec"]["canary"][0]["predictor"]["model"]["storageUri"]
    assert canary == "pvc://models/don/2"
    assert "Refused" in events(kube, namespace, "don")
    # the first one ends: the waiting one starts on its own
    kube.patch_rollout(namespace, "don-v2", {"spec": {"action": "Abort"}})
    first.until(lambda s: s.get("phase") == "RolledBack")
    started = second.until(lambda s: s.get("phase") == "Progressing" and s.get("candidateVersion") == 3
                           and s.get("trafficApplied"))
    assert started["status"]["desiredVersion"] == 3
    canary = kube.get_isvc(namespace, "don")["spec"]["canary"][0]["predictor"]["model"]["storageUri"]
    assert canary == "pvc://models/don/3"


def test_a_candidate_that_is_already_the_stable_is_refused(kube, namespace, operator_cluster,
                                                           model_servers, rollout_store):
    create_isvc(kube, namespace, "Standard")
    stable = model_servers["stable"]
    kube.create_rollout(namespace, rollout("don-v1", mode="Standard", version=1,
                                           stable_url=stable.base, canary_url=stable.base,
                                           store=rollout_store))
    final = Watcher(kube, namespace, "don-v1", "Standard").until(terminal)
    status = final["status"]
    assert status["phase"] == "Failed"
    assert f"candidate {STABLE_URI} is already the stable version" in status["message"]
    assert "Failed" in events(kube, namespace, "don-v1")
    assert "canary" not in kube.get_isvc(namespace, "don")["spec"]


# ---- the live-accuracy check: a real recorder on loopback ----------------------------------

TOKEN = "paths-token"


@pytest.fixture
def recorder(tmp_path):
    with running_recorder(tmp_path, TOKEN) as url:
        yield url


def feed(url: str, predicted: dict[int, float], lots: int = 3, truth_ppb: float = 2000.0) -> None:
    """Per version, `lots` contaminated lots it predicted at `predicted[version]` ppb, and the
    lab's results for them."""
    from don_core.records import RECORDS_EVENT_TYPE
    when = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    records, lab = [], ["sample_id,vomitoxin_ppb,method,measured_at"]
    for version, ppb in predicted.items():
        for i in range(lots):
            sample = f"v{version}-lot-{i}"
            records.append({"time": when, "model": "don", "version": version, "request_id": sample,
                            "row": 0, "predicted_ppb": ppb, "spectrum_sha256": f"{version}{i:063x}",
                            "caller": "lab-a", "outlier_score": 1.0, "out_of_distribution": False,
                            "sample_id": sample})
            lab.append(f"{sample},{truth_ppb},HPLC,{when}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sent = requests.post(url + "/", json={"records": records}, timeout=10, headers={
        **auth, "ce-specversion": "1.0", "ce-type": RECORDS_EVENT_TYPE, "ce-id": "paths-1",
        "ce-source": "http://don-predictor/"})
    assert sent.status_code == 202, sent.text
    stored = requests.post(url + "/v1/labresults", data="\r\n".join(lab) + "\r\n", timeout=10,
                           headers={**auth, "Content-Type": "text/csv"})
    assert stored.status_code == 200, stored.text


def test_live_accuracy_inside_the_analysis_rolls_back_a_canary_the_lab_shows_worse(
        kube, namespace, operator_cluster, model_servers, rollout_store, recorder):
    # the lab found 2000 ppb in every lot: the stable (v1) said 3000 (rejected, right), the
    # candidate (v2) said 500 (accepted: a false accept each time)
    feed(recorder, {1: 3000.0, 2: 500.0})
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Standard")
    body = rollout("don-v2", mode="Standard", version=2, stable_url=stable.base,
                   canary_url=good.base, store=rollout_store,
                   liveAccuracy={"recorderUrl": recorder, "window": "1d", "minMatched": 3})
    watcher = Watcher(kube, namespace, "don-v2", "Standard")
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, body)
        final = watcher.until(lambda s: terminal(s) and s.get("trafficApplied"))
    status = final["status"]
    assert status["phase"] == "RolledBack", status["message"]
    checks = {c["name"]: c for c in status["lastAnalysis"]["checks"]}
    live = checks["liveFalseAcceptIncrease"]
    assert live["result"] == "Fail" and live["value"] == pytest.approx(1.0), live
    assert "canary 1.000 (3 samples) vs stable 0.000 (3 samples)" in live["note"]
    assert "liveFalseAcceptIncrease" in status["message"]
    # everything else about the canary was fine: the lab's verdict alone rolled it back
    assert all(c["result"] == "Pass" for name, c in checks.items() if name != "liveFalseAcceptIncrease")
    assert "canary" not in watcher.isvc()["spec"]


def test_live_accuracy_that_cannot_be_read_holds_the_rollout(kube, namespace, operator_cluster,
                                                            model_servers, rollout_store):
    from tests.net import free_port
    stable, good = model_servers["stable"], model_servers["good"]
    create_isvc(kube, namespace, "Standard")
    nobody = f"http://127.0.0.1:{free_port()}"
    body = rollout("don-v2", mode="Standard", version=2, stable_url=stable.base,
                   canary_url=good.base, store=rollout_store, liveAccuracy={"recorderUrl": nobody})
    watcher = Watcher(kube, namespace, "don-v2", "Standard")
    with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
        kube.create_rollout(namespace, body)
        held = watcher.until(lambda s: (s.get("lastAnalysis") or {}).get("verdict") == "Inconclusive")
    status = held["status"]
    assert status["step"] == 1 and status["phase"] == "Progressing"
    live = {c["name"]: c for c in status["lastAnalysis"]["checks"]}["liveFalseAcceptIncrease"]
    assert live["result"] == "Inconclusive" and "recorder unreadable" in live["note"]
