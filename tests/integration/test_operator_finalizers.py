"""The operator puts no finalizer on a ModelRollout, so that `helm uninstall` (which deletes the
operator together with its ModelRollouts) never waits for it; the finalizer older operators (kopf
timers) left is removed when it starts. Real kube-apiserver, the operator as its own process.
(The API server alone runs no garbage collector: that the serving objects go with their
ModelRollout through their ownerReferences is checked on the e2e cluster.)"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from ops.operator import KOPF_FINALIZER
from ops.rollout import GROUP, KIND, VERSION
from ops.rollout.kube import ApiException, Kube
from tests.fixtures_operator import OperatorProcess
from tests.net import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.apiserver, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(kube_apiserver, tmp_path_factory):
    """The API server with the ModelRollout CRD, a client, and an operator (not started)."""
    from kubernetes import config

    from tests.fixtures_cluster import install_crds
    install_crds(kube_apiserver, [REPO / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml"])
    kube = Kube(config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig)))
    operator = OperatorProcess(kube_apiserver.kubeconfig, tmp_path_factory.mktemp("operator-logs"))
    try:
        yield kube, operator
    finally:
        if operator.process:
            operator.stop()


@pytest.fixture
def namespace(cluster) -> str:
    kube, _ = cluster
    name = f"fin-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    return name


def _rollout(name: str, finalizers: list[str] | None = None) -> dict:
    # No InferenceService "absent" exists: the operator's first tick fails the rollout, saying so
    # in its status and in an Event.
    meta = {"name": name, **({"finalizers": finalizers} if finalizers else {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta,
            "spec": {"target": "absent", "mode": "Standard", "candidate": {"version": 2}}}


def _until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(kube: Kube, ns: str, name: str) -> bool:
    try:
        kube.get_rollout(ns, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _stopped(operator: OperatorProcess) -> None:
    if operator.process and operator.process.poll() is None:
        operator.stop()


def test_a_handled_rollout_has_no_finalizer_and_is_deleted_at_once_while_the_operator_is_down(
        cluster, namespace):
    kube, operator = cluster
    _stopped(operator)
    operator.start()
    kube.create_rollout(namespace, _rollout("handled"))
    _until("the operator's status", lambda: (kube.get_rollout(namespace, "handled").get("status") or {})
           .get("phase"))
    time.sleep(1.0)  # several more ticks (0.3 s each): still no finalizer
    handled = kube.get_rollout(namespace, "handled")
    assert handled["status"]["phase"], handled["status"]
    assert not handled["metadata"].get("finalizers"), handled["metadata"]
    events = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.name=handled").items
    assert [(e.type, e.reason, e.source.component) for e in events] == [("Warning", "Failed", "don-operator")]
    assert "cannot start on Standard target absent" in events[0].message
    operator.kill()  # down, as when its pod is crash-looping or already deleted by `helm uninstall`
    started = time.monotonic()
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelrollouts", "handled")
    assert _gone(kube, namespace, "handled"), "still there right after the delete"
    assert time.monotonic() - started < 5


def test_the_old_kopf_finalizer_is_removed_when_the_operator_starts(cluster, namespace):
    kube, operator = cluster
    _stopped(operator)
    # Left by an older operator: one object still live, one already stuck in Terminating.
    kube.create_rollout(namespace, _rollout("live", [KOPF_FINALIZER]))
    kube.create_rollout(namespace, _rollout("terminating", [KOPF_FINALIZER, "example.com/keep"]))
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelrollouts", "terminating")
    time.sleep(1.0)
    stuck = kube.get_rollout(namespace, "terminating")  # nothing removes the finalizer meanwhile
    assert stuck["metadata"]["deletionTimestamp"] and KOPF_FINALIZER in stuck["metadata"]["finalizers"]
    assert KOPF_FINALIZER in kube.get_rollout(namespace, "live")["metadata"]["finalizers"]
    operator.start()
    _until("the live object to lose kopf's finalizer",
           lambda: not kube.get_rollout(namespace, "live")["metadata"].get("finalizers"))
    # Only kopf's finalizer goes: another controller's stays (and holds the deletion).
    left = _until("the terminating object to lose kopf's finalizer",
                  lambda: (f := kube.get_rollout(namespace, "terminating")["metadata"]["finalizers"])
                  and KOPF_FINALIZER not in f and f)
    assert left == ["example.com/keep"]
    kube.patch_rollout(namespace, "terminating", {"metadata": {"finalizers": None}})
    _until("the terminating object to go", lambda: _gone(kube, namespace, "terminating"))
    # ticked as well (the status is written after the finalizer goes, maybe a moment later)
    _until("the live object's first status", lambda: (kube.get_rollout(namespace, "live").get("status") or {}).get("phase"))
    log = (operator.log_dir / f"operator-{operator.starts}.log").read_bytes().decode(errors="replace")
    assert f"{namespace}/live: removed the finalizer {KOPF_FINALIZER}" in log, log[-3000:]


def test_liveness_reports_the_reconcile_loop(kube_apiserver, cluster, namespace, tmp_path):
    kube, other = cluster
    _stopped(other)
    kube.create_rollout(namespace, _rollout("counted"))
    url = f"http://127.0.0.1:{free_port()}/healthz"
    operator = OperatorProcess(kube_apiserver.kubeconfig, tmp_path, args=("--liveness", url))
    operator.start()
    try:
        wait_for_http(url, timeout=60, process=operator.process, ok_only=True)
        # kopf keeps a probe's answer for 10 s: the first may predate the first pass.
        health = _until("a pass in the liveness answer", lambda: (h := requests.get(url, timeout=5).json())
                        .get("reconcile", {}).get("rollouts") and h, timeout=40)
        assert health["reconcile"]["rollouts"] >= 1 and health["reconcile"]["lastPassSecondsAgo"] < 15
    finally:
        operator.stop()
