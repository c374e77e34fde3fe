"""The shadow step's objects on the KServe engines (ops/rollout/shadow_isvc.py): the shadow
InferenceService's body, its readiness and where the mirror setting points."""
from __future__ import annotations

import copy

import pytest

from don_core.contract import MODEL_LABEL_KEY, TRACK_LABEL
from ops.rollout import shadow, shadow_isvc, shadows
from ops.rollout.spec import parse_spec
from ops.rollout.traffic import Served

OWNER = {"kind": "ModelRollout", "name": "don-v2", "uid": "u"}


def chart_isvc(mode: str) -> dict:
    """The target as the chart renders it (templates/inferenceservices.yaml), mid-canary."""
    predictor = {
        "serviceAccountName": "don-predictor", "minReplicas": 1, "maxReplicas": 3,
        "labels": {"app.kubernetes.io/component": "predictor", MODEL_LABEL_KEY: "don",
                   "don-predictor.io/model-version": "1"},
        "model": {"name": "kserve-container", "modelFormat": {"name": "don-sklearn", "version": "1"},
                  "runtime": "don-predictor", "args": ["--model_name=don"], "protocolVersion": "v2",
                  "storageUri": "pvc://models/don/1",
                  "env": [{"name": "DON_MODEL_VERSION", "value": "1"},
                          {"name": "DON_SHADOW", "value": "0"}],
                  "volumeMounts": [{"name": "mirror", "mountPath": "/etc/don-predictor/mirror"}]},
        "volumes": [{"name": "mirror", "configMap": {"name": "don-mirror", "optional": True}}]}
    if mode == "Knative":
        predictor["canaryTrafficPercent"] = 10
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "don", "labels": {"app.kubernetes.io/component": "predictor",
                                                   MODEL_LABEL_KEY: "don"},
                         "annotations": {"serving.kserve.io/deploymentMode": "Serverless",
                                         "serving.kserve.io/enable-prometheus-scraping": "true",
                                         "don-predictor.io/stable-version": "1",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"predictor": predictor,
                     "canary": [{"trafficPercent": 10, "predictor": {}}] if mode == "Standard" else None}}


def spec(mode: str, **endpoints):
    return parse_spec({"target": "don", "candidate": {"version": 2}, "mode": mode,
                       "steps": ["shadow", 50, 100], "labGate": {"recorderUrl": "http://recorder"},
                       "endpoints": endpoints})


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_the_shadow_isvc_serves_the_candidate_as_a_shadow_off_the_models_routes(mode):
    target = chart_isvc(mode)
    before = copy.deepcopy(target)
    body = shadow_isvc.shadow_isvc(target, "don-shadow", Served("pvc://models/don/2", 2), OWNER)
    assert target == before  # not mutated
    assert body["metadata"]["name"] == "don-shadow" and body["metadata"]["ownerReferences"] == [OWNER]
    assert list(body["spec"]) == ["predictor"]  # no canary[]: the shadow is the candidate alone
    predictor = body["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    model = predictor["model"]
    assert model["storageUri"] == "pvc://models/don/2"
    assert model["env"] == [{"name": "DON_MODEL_VERSION", "value": "2"}, {"name": "DON_SHADOW", "value": "1"}]
    assert model["args"] == ["--model_name=don"]  # answers under the model's own name
    assert predictor["volumes"] == before["spec"]["predictor"]["volumes"]
    for labels in (predictor["labels"], body["metadata"]["labels"]):
        assert MODEL_LABEL_KEY not in labels and labels[TRACK_LABEL] == "shadow"
    assert predictor["labels"]["don-predictor.io/model-version"] == "2"
    assert body["metadata"]["annotations"] == {  # how KServe deploys it; no version that would lie
        "serving.kserve.io/deploymentMode": "Serverless",
        "serving.kserve.io/enable-prometheus-scraping": "true"}


def test_ready_is_kserves_ready_condition_for_the_current_spec():
    def isvc(generation, observed=None, **ready):
        status = {"conditions": [dict({"type": "Ready"}, **ready)] if ready else []}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"metadata": {"generation": generation}, "status": status}

    assert shadow_isvc.ready_condition(isvc(1, status="True")) is None
    assert shadow_isvc.ready_condition(isvc(2, 2, status="True")) is None
    assert "not reconciled" in shadow_isvc.ready_condition(isvc(2, 1, status="True"))
    assert shadow_isvc.ready_condition(isvc(1)) == "no Ready condition yet"
    assert shadow_isvc.ready_condition(isvc(1, status="False", reason="RevisionMissing",
                                            message="pulling the model")) == "pulling the model"
    assert shadow_isvc.ready_condition({"metadata": {}}) == "no Ready condition yet"


@pytest.mark.parametrize("mode,named", [("Standard", "http://don-shadow-predictor.ns.svc"),
                                        ("Knative", "http://don-shadow.ns.svc")])
def test_the_mirror_points_at_shadow_url_else_kserves_address_else_its_naming(mode, named):
    picked = shadows.of(None, "ns", spec(mode))
    assert isinstance(picked, shadow_isvc.IsvcShadow) and picked.name == "don-shadow"
    assert type(shadows.of(None, "ns", spec("Deployment"))) is shadow.Shadow
    assert picked.url({}) == named
    reported = {"status": {"url": "http://don-shadow.ns.example.com",
                           "address": {"url": "http://don-shadow-predictor.ns.svc.cluster.local"}}}
    assert picked.url(reported) == "http://don-shadow-predictor.ns.svc.cluster.local"
    assert picked.url({"status": {"url": "http://don-shadow.ns.example.com"}}) == \
        "http://don-shadow.ns.example.com"
    given = shadows.of(None, "ns", spec(mode, shadowUrl="http://127.0.0.1:9000"))
    assert given.url(reported) == "http://127.0.0.1:9000" and given.not_ready() is None
