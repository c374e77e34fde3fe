"""Desired delivery tells the truth, against a real kube-apiserver (1.20) and real model servers:
`Delivered` only once the version is in the store and the servers answer as it (`Waiting` with the
reason before), no rollout while the desired version is not published, and the HPA the operator
keeps on the stable Deployment (autoscaling/v2beta2 on this API server) through a rollout."""
from __future__ import annotations

import pytest

from tests.fixtures_operator import ServerProcess, publish_tiny_version
from tests.integration import test_operator_apiserver as apiserver
from tests.integration.test_operator_apiserver import (
    ReadyDeployments, Traffic, Watcher, canary_deployment, desired_rollout, golden_rows)

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]
# that module's fixtures, by name: the model servers boot first, an API client, a namespace per test
_boot_servers_first, kube, namespace = apiserver._boot_servers_first, apiserver.kube, apiserver.namespace


def test_delivered_only_once_the_store_and_the_servers_say_so(kube, namespace, operator_cluster,
                                                               tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    publish_tiny_version(store, "don", seed=1)
    first = ServerProcess("don", store / "don" / "1", tmp_path / "v1.log")
    try:
        first.wait(timeout=90)
        watcher = Watcher(kube, namespace, "don", "Standard")
        # desired version 2 is not trained yet: the InferenceService is created for it, and the
        # status waits, naming the reason, with no rollout and no deadline
        kube.create_rollout(namespace, desired_rollout("Standard", 2, first.base, first.base, store,
                                                       progressDeadline="2s"))
        waiting = watcher.until(lambda s: s.get("phase") == "Waiting")["status"]
        assert "version 2 of don is not in the store" in waiting["message"], waiting["message"]
        assert {c["type"]: c["status"] for c in waiting["conditions"]}["Succeeded"] == "Unknown"
        # published: the servers still answer as version 1, so still not Delivered
        assert publish_tiny_version(store, "don", seed=2) == 2
        waiting = watcher.until(lambda s: "answers as version 1, not 2" in (s.get("message") or ""))
        assert waiting["status"]["phase"] == "Waiting"
        second = ServerProcess("don", store / "don" / "2", tmp_path / "v2.log")
        try:
            second.wait(timeout=90)
            kube.patch_rollout(namespace, "don", {"spec": {"endpoints": {"stableUrl": second.base}}})
            done = watcher.until(lambda s: s.get("phase") == "Delivered")["status"]
        finally:
            second.terminate()
            second.stop()
    finally:
        first.terminate()
        first.stop()
    assert done["liveVersion"] == 2 and done["desiredVersion"] == 2
    assert {c["type"]: c["status"] for c in done["conditions"]}["Succeeded"] == "True"
    assert "Started" not in [h["event"] for h in done["history"]]  # nothing was rolled out


def test_operator_keeps_an_hpa_on_the_stable_through_a_rollout(kube, namespace, operator_cluster,
                                                              model_servers, rollout_store):
    stable, good = model_servers["stable"], model_servers["good"]

    kube.apps.create_namespaced_deployment(namespace, canary_deployment("1"))
    body = desired_rollout("Deployment", 1, stable.base, stable.base, rollout_store)
    autoscaling = {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}
    body["spec"]["deployment"] = {"replicas": 2, "autoscaling": autoscaling}
    watcher = Watcher(kube, namespace, "don", "Deployment")
    with ReadyDeployments(kube, namespace):
        kube.create_rollout(namespace, body)
        watcher.until(lambda s: s.get("phase") == "Delivered")
        hpa = kube.get_hpa(namespace, "don")
        assert hpa["apiVersion"] == "autoscaling/v2beta2"  # what a 1.20 API server serves
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "don"}
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
        assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
        # the HPA owns the stable's count: what it chose (here 3) is what the split builds on
        kube.scale_deployment(namespace, "don", 3)
        kube.patch_deployment(namespace, "don-canary", {"spec": {"template": canary_deployment("2")["spec"]["template"]}})
        with Traffic(stable.base, good.base, golden_rows(rollout_store, 2)):
            kube.patch_rollout(namespace, "don", {"spec": {"candidate": {"version": 2},
                                                           "endpoints": {"canaryUrl": good.base}}})
            final = watcher.until(lambda s: s.get("phase") == "Promoted" and s.get("trafficApplied")
                                  and s.get("liveVersion") == 2, timeout=120)
    history = final["status"]["history"]
    # steps (50, 100) on the 3 stable pods the HPA chose: 3 canary pods beside them give 50 %; at
    # 100 % the stable runs none, and the promotion gives it its 3 back
    assert [h["weight"] for h in history if h["event"] in ("Started", "Advanced")] == [50, 100], history
    assert kube.get_deployment(namespace, "don")["spec"]["replicas"] == 3  # never scaled by us
    assert kube.get_deployment(namespace, "don-canary")["spec"]["replicas"] == 0
    kept = kube.get_hpa(namespace, "don")
    assert kept["metadata"]["uid"] == hpa["metadata"]["uid"]  # the same HPA, through the promotion
    # a changed autoscaling spec reaches the HPA
    kube.patch_rollout(namespace, "don", {"spec": {"deployment": {"autoscaling": dict(autoscaling, maxReplicas=6)}}})
    watcher.until(lambda s: kube.get_hpa(namespace, "don")["spec"]["maxReplicas"] == 6)
