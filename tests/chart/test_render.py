"""The chart rendered over a matrix of values: schemas, security, secrets, policies, canary splits."""
from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.fixtures_chart import (API_TOKEN, MATRIX, S3_KEY_ID, S3_SECRET, S3_VALUES, EVERYTHING_ON,
                                  pod_specs, pod_templates, render_notes)

pytestmark = pytest.mark.chart

CASES = [c.name for c in MATRIX]
KSERVE_KINDS = {"InferenceService": "serving.kserve.io_inferenceservices.yaml",
                "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
                "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml"}
# Kinds with no schema in kubernetes-validate: KServe (checked against its CRDs below), our own
# CRD's objects, and the Gateway API (checked structurally in the canary tests).
NOT_CORE = set(KSERVE_KINDS) | {"HTTPRoute", "ModelRollout"}
RELEASE_SELECTOR = {"app.kubernetes.io/name": "don-predictor", "app.kubernetes.io/instance": "don"}


@pytest.fixture(scope="session")
def kserve_validators(kserve_crd_dir: Path) -> dict[str, jsonschema.protocols.Validator]:
    validators = {}
    for kind, filename in KSERVE_KINDS.items():
        crd = yaml.load((kserve_crd_dir / filename).read_text(),  # libyaml: 3x faster on the 2 MB CRD
                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            validators[f"{crd['spec']['group']}/{version['name']}/{kind}"] = jsonschema.Draft7Validator(schema)
    return validators


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def kserve_containers(doc: dict) -> list[tuple[str, dict]]:
    """(where, container) of the containers a KServe object defines."""
    if doc["kind"] in ("ServingRuntime", "ClusterServingRuntime"):
        return [(f"{doc['metadata']['name']}/{c['name']}", c) for c in doc["spec"]["containers"]]
    found = [("predictor.model", doc["spec"]["predictor"]["model"])]
    for i, canary in enumerate(doc["spec"].get("canary", [])):
        found.append((f"canary[{i}].predictor.model", canary["predictor"]["model"]))
    return found


def kserve_pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] != "InferenceService":
        return []
    return [doc["spec"]["predictor"]] + [c["predictor"] for c in doc["spec"].get("canary", [])]


# ---------- schemas ----------

@pytest.mark.parametrize("case", CASES)
def test_every_object_validates_against_kubernetes_schemas(renders, case):
    render = renders[case]
    # kubernetes-validate's oldest schemas are 1.25: the 1.20 render is checked against them, and
    # its two APIs that 1.25 no longer serves by the real 1.20 API server (tests/chart/test_apiserver.py).
    kube = max(render.case.kube, "1.25", key=lambda v: tuple(map(int, v.split("."))))
    legacy = {"batch/v1beta1", "policy/v1beta1"} if render.case.kube == "1.20" else set()
    checked = 0
    for doc in render.docs:
        if doc["kind"] in NOT_CORE:
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert doc["apiVersion"] in legacy, f"{case}: no schema for {doc['apiVersion']} {doc['kind']}"
            continue
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{case}: {doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes "
                        f"{kube}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("case", CASES)
def test_kserve_objects_validate_against_kserve_crds(renders, case, kserve_validators):
    for doc in renders[case].docs:
        if doc["kind"] not in KSERVE_KINDS:
            continue
        validator = kserve_validators[f"{doc['apiVersion']}/{doc['kind']}"]
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{case}: {doc['kind']} {doc['metadata']['name']}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_kserve_validation_rejects_a_broken_inference_service(renders, kserve_validators):
    """The CRD check is not vacuous: a wrong type in the predictor is caught."""
    isvc = renders["defaults"].named("InferenceService", "don-don-predictor-rf")
    broken = yaml.safe_load(yaml.safe_dump(isvc))
    broken["spec"]["predictor"]["minReplicas"] = "one"
    assert list(kserve_validators["serving.kserve.io/v1beta1/InferenceService"].iter_errors(broken))


def test_chart_crds_validate_against_kubernetes_schemas(chart_dir):
    crds = [d for path in sorted((chart_dir / "crds").glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text()) if d]
    assert [c["metadata"]["name"] for c in crds] == ["modelrollouts.rollouts.don-predictor.io"]
    for crd in crds:
        try:
            kubernetes_validate.validate(crd, "1.30", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"crds/: {crd['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_kubernetes_validation_rejects_a_broken_object(renders):
    pvc = yaml.safe_load(yaml.safe_dump(renders["defaults"].of_kind("PersistentVolumeClaim")[0]))
    pvc["spec"]["accessModes"] = "ReadWriteOnce"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pvc, "1.30", strict=True)


# ---------- security ----------

def assert_restricted_container(where: str, container: dict) -> None:
    sc = container.get("securityContext", {})
    assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false"
    assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities must drop ALL"
    assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true"
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
    assert not sc.get("privileged"), f"{where}: privileged"
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert resources.get(part, {}).get(resource), f"{where}: {part}.{resource} missing"


@pytest.mark.parametrize("case", CASES)
def test_pods_meet_the_restricted_pod_security_standard(renders, case):
    checked = 0
    for doc in renders[case].docs:
        for spec in pod_specs(doc) + kserve_pod_specs(doc):
            psc = spec.get("securityContext", {})
            name = f"{case}: {doc['kind']} {doc['metadata']['name']}"
            assert psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot"
            assert psc.get("runAsUser", 0) > 0, f"{name}: pod runAsUser must be non-zero"
            assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp"
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                assert not spec.get(flag), f"{name}: {flag}"
            for volume in spec.get("volumes", []):
                assert "hostPath" not in volume, f"{name}: hostPath volume {volume['name']}"
            for container in all_containers(spec):
                assert_restricted_container(f"{name}/{container['name']}", container)
                checked += 1
        if doc["kind"] in KSERVE_KINDS:
            for where, container in kserve_containers(doc):
                assert_restricted_container(f"{case}: {doc['kind']} {doc['metadata']['name']} {where}", container)
                checked += 1
    assert checked >= 3, f"{case}: found only {checked} containers"


def test_security_check_catches_a_privileged_container():
    container = {"name": "x", "securityContext": {"allowPrivilegeEscalation": True}}
    with pytest.raises(AssertionError, match="allowPrivilegeEscalation"):
        assert_restricted_container("x", container)


@pytest.mark.parametrize("case", CASES)
def test_every_object_carries_the_standard_labels(renders, case):
    for doc in renders[case].docs:
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{case}: {doc['kind']} {doc['metadata']['name']} lacks label {key}"


# ---------- secrets ----------

def test_no_secret_value_outside_secret_data(renders, tmp_path):
    encoded = {base64.b64encode(v.encode()).decode() for v in (S3_KEY_ID, S3_SECRET, API_TOKEN)}
    for case in ("knative-s3-everything", "deployment-s3-everything"):
        render = renders[case]
        assert render.of_kind("Secret"), f"{case}: expected the chart to create Secrets"
        for doc in render.docs:
            text = yaml.safe_dump(doc)
            for plain in (S3_KEY_ID, S3_SECRET, API_TOKEN):
                assert plain not in text, f"{case}: {doc['kind']} {doc['metadata']['name']} holds a secret in clear"
            if doc["kind"] != "Secret":
                for value in encoded:
                    assert value not in text, f"{case}: {doc['kind']} {doc['metadata']['name']} holds a secret"
        secret_data = {v for s in render.of_kind("Secret") for v in s["data"].values()}
        assert encoded <= secret_data
        # Credentials reach containers only through secretKeyRef.
        for doc in render.docs:
            for spec in pod_specs(doc) + kserve_pod_specs(doc):
                for container in all_containers(spec) + ([spec["model"]] if "model" in spec else []):
                    for env in container.get("env", []):
                        if env["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                            assert "value" not in env and env["valueFrom"]["secretKeyRef"]
    notes = render_notes(tmp_path, *S3_VALUES, *EVERYTHING_ON)
    assert "helm test" in notes and "don-predictor.io/client=true" in notes
    for value in (S3_KEY_ID, S3_SECRET, API_TOKEN, *encoded):
        assert value not in notes


def test_existing_secrets_are_referenced_not_created(renders):
    render = renders["standard-s3-existing-secrets"]
    assert not render.of_kind("Secret")
    sa = render.named("ServiceAccount", "don-don-predictor-predictor")
    assert sa["secrets"] == [{"name": "team-s3"}]
    isvc = render.named("InferenceService", "don-don-predictor-rf")
    volumes = {v["name"]: v for v in isvc["spec"]["predictor"]["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == "team-token"
    env = {e["name"]: e for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert env["DON_API_TOKEN_FILE"]["value"] == "/var/run/secrets/don/token"
    job = render.of_kind("Job")[0]
    job_env = {e["name"]: e for e in pod_specs(job)[0]["containers"][0]["env"]}
    assert job_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "team-s3"
    assert job_env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel.observability.svc.cluster.local:4318"


def test_s3_secret_carries_kserve_annotations(renders):
    secret = renders["knative-s3-everything"].named("Secret", "don-don-predictor-s3")
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "minio.storage.svc.cluster.local:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert annotations["serving.kserve.io/s3-region"] == "us-east-1"


# ---------- network policies ----------

def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("case", CASES)
def test_network_policies_deny_by_default_and_cover_every_pod(renders, case):
    render = renders[case]
    policies = render.of_kind("NetworkPolicy")
    deny = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
    assert len(deny) == 1, f"{case}: one default-deny policy expected"
    assert deny[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    labelled = [(d["kind"], d["metadata"]["name"], t["metadata"]["labels"])
                for d in render.docs for t in pod_templates(d)]
    labelled += [("InferenceService", d["metadata"]["name"], p["labels"])
                 for d in render.docs for p in kserve_pod_specs(d)]
    assert labelled
    for kind, name, labels in labelled:
        assert selects(deny[0]["spec"]["podSelector"], labels), f"{case}: {kind} {name} escapes default-deny"
        own = [p for p in policies if p is not deny[0] and selects(p["spec"]["podSelector"], labels)]
        assert own, f"{case}: {kind} {name} has no policy of its own"
        for policy in own:
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), f"{case}: {policy['metadata']['name']} admits ingress from anywhere"


def test_predictor_ingress_needs_the_client_label(renders):
    policy = renders["defaults"].named("NetworkPolicy", "don-don-predictor-predictor")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {"don-predictor.io/client": "true"} in [p.get("podSelector", {}).get("matchLabels") for p in peers]
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])}
    assert egress_ports == {53}, "pvc store, no tracing endpoint: only DNS egress"
    s3 = renders["knative-s3-everything"].named("NetworkPolicy", "don-don-predictor-predictor")
    s3_ports = {port["port"] for rule in s3["spec"]["egress"] for port in rule.get("ports", [])}
    assert s3_ports == {53, 4317, 4318, 443}


def test_training_job_has_its_own_policy(renders):
    policy = renders["knative-s3-everything"].named("NetworkPolicy", "don-don-predictor-training")
    assert "ingress" not in policy["spec"] and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    job = renders["knative-s3-everything"].of_kind("Job")[0]
    assert selects(policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])


# ---------- serving: canary per mode, storage URIs ----------

def test_defaults_render_two_inference_services(renders):
    isvcs = renders["defaults"].of_kind("InferenceService")
    assert sorted(i["metadata"]["name"] for i in isvcs) == ["don-don-predictor-rf", "don-don-predictor-tf"]
    uris = {i["metadata"]["name"]: i["spec"]["predictor"]["model"]["storageUri"] for i in isvcs}
    assert uris == {"don-don-predictor-rf": "pvc://don-don-predictor-model-store/don-rf/1",
                    "don-don-predictor-tf": "pvc://don-don-predictor-model-store/don-tf/1"}
    formats = {i["metadata"]["name"]: i["spec"]["predictor"]["model"]["modelFormat"]["name"] for i in isvcs}
    assert formats == {"don-don-predictor-rf": "don-sklearn", "don-don-predictor-tf": "don-tensorflow"}
    runtime = renders["defaults"].of_kind("ServingRuntime")[0]
    assert {f["name"] for f in runtime["spec"]["supportedModelFormats"]} == {"don-sklearn", "don-tensorflow"}
    assert runtime["spec"]["containers"][0]["args"] == [
        "--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    # Objects carry the release prefix; the model keeps its own name (KServe appends the
    # predictor's args to the runtime's, and the last --model_name wins).
    assert runtime["metadata"]["name"] == "don-don-predictor-model-server"
    models = {i["metadata"]["name"]: i["spec"]["predictor"]["model"] for i in isvcs}
    assert {name: (m["runtime"], m["args"]) for name, m in models.items()} == {
        "don-don-predictor-rf": ("don-don-predictor-model-server", ["--model_name=don-rf"]),
        "don-don-predictor-tf": ("don-don-predictor-model-server", ["--model_name=don-tf"])}
    assert all("canaryTrafficPercent" not in i["spec"]["predictor"] and "canary" not in i["spec"] for i in isvcs)


def test_knative_canary_uses_canary_traffic_percent(renders):
    isvc = renders["knative-canary"].named("InferenceService", "don-don-predictor-rf")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"] == "pvc://don-don-predictor-model-store/don-rf/2"
    assert "canary" not in isvc["spec"]
    untouched = renders["knative-canary"].named("InferenceService", "don-don-predictor-tf")
    assert "canaryTrafficPercent" not in untouched["spec"]["predictor"]


def test_standard_canary_uses_spec_canary_with_weights(renders):
    render = renders["standard-canary"]
    for key, stable, canary, percent in (("rf", 1, 2, 25), ("tf", 1, 3, 5)):
        isvc = render.named("InferenceService", f"don-don-predictor-{key}")
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
        assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == f"pvc://don-don-predictor-model-store/don-{key}/{stable}"
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
        [entry] = isvc["spec"]["canary"]
        assert entry["trafficPercent"] == percent
        assert entry["predictor"]["model"]["storageUri"] == f"pvc://don-don-predictor-model-store/don-{key}/{canary}"
        assert entry["predictor"]["labels"]["don-predictor.io/model-version"] == str(canary)
        assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"
    assert not render.of_kind("HorizontalPodAutoscaler"), "KServe owns the HPA in Standard mode"


def test_s3_storage_uri(renders):
    # With the operator the InferenceService is the ModelRollout's template (the operator creates it).
    isvc = renders["knative-s3-everything"].named("ModelRollout", "don-don-predictor-tf")["spec"]["inferenceService"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://don-models/models/don-tf/2"
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "don-don-predictor-predictor"
    assert isvc["spec"]["predictor"]["logger"] == {"mode": "all", "url": "http://logger.logging.svc.cluster.local"}


def test_deployment_engine_replica_ratio_without_gateway_api(renders):
    render = renders["deployment-canary-ratio"]
    assert not render.of_kind("HTTPRoute") and not render.of_kind("InferenceService")
    stable = render.named("Deployment", "don-don-predictor-rf")  # the ModelRollout operator's default names
    canary = render.named("Deployment", "don-don-predictor-rf-canary")
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (2, 1)  # replica_split(2, 25): 33 %
    assert canary["metadata"]["labels"]["don-predictor.io/model-version"] == "2"
    mount = canary["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "model", "mountPath": "/mnt/store", "readOnly": True}
    assert "--model_dir=/mnt/store/don-rf/2" in canary["spec"]["template"]["spec"]["containers"][0]["args"]
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in render.of_kind("HorizontalPodAutoscaler")}
    assert hpas == {"don-don-predictor-tf"}, "no HPA may change a replica-ratio split"
    service = render.named("Service", "don-don-predictor-rf")
    assert "don-predictor.io/track" not in service["spec"]["selector"]


def test_deployment_engine_weights_with_gateway_api(renders):
    render = renders["deployment-canary-gateway"]
    route = render.named("HTTPRoute", "don-don-predictor-rf")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    backends = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert backends == {"don-don-predictor-rf-stable": 70, "don-don-predictor-rf-canary": 30}
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "don-don-predictor-rf", "port": 80}]
    for backend in backends:
        render.named("Service", backend)
    for deployment in ("don-don-predictor-rf", "don-don-predictor-rf-canary", "don-don-predictor-tf", "don-don-predictor-tf-canary"):
        assert "replicas" not in render.named("Deployment", deployment)["spec"], "the HPA owns replicas"
    assert len(render.of_kind("HorizontalPodAutoscaler")) == 4


PVC_DEPLOYMENT_CASES = [c.name for c in MATRIX if "serving.engine=deployment" in c.args
                        and "modelStore.type=s3" not in c.args]


@pytest.mark.parametrize("case", PVC_DEPLOYMENT_CASES)
def test_predictors_mount_the_store_root_read_only_without_sub_path(renders, case):
    """Any install order: a subPath `<model>/<N>` would be created by the kubelet (an empty,
    root-owned directory) before the training Job publishes that version, and the Job could then
    not write it. The predictors mount the claim's root read-only and name their version in
    --model_dir; the server waits until it is published."""
    render = renders[case]
    predictors = [d for d in render.of_kind("Deployment")
                  if d["metadata"]["labels"].get("app.kubernetes.io/component") == "predictor"]
    assert predictors, case
    for deployment in predictors:
        labels, pod = deployment["metadata"]["labels"], deployment["spec"]["template"]["spec"]
        where = f"{case}: {deployment['metadata']['name']}"
        for container in pod["containers"] + pod.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                assert "subPath" not in mount and "subPathExpr" not in mount, (where, mount)
        [server] = [c for c in pod["containers"] if c["name"] == "model-server"]
        assert {"name": "model", "mountPath": "/mnt/store", "readOnly": True} in server["volumeMounts"], where
        [volume] = [v for v in pod["volumes"] if v["name"] == "model"]
        assert volume["persistentVolumeClaim"] == {"claimName": "don-don-predictor-model-store",
                                                   "readOnly": True}, where
        model_dir = f"/mnt/store/{labels['don-predictor.io/model']}/{labels['don-predictor.io/model-version']}"
        assert f"--model_dir={model_dir}" in server["args"], (where, server["args"])


def test_training_jobs_still_write_the_store_the_predictors_read(renders):
    render = renders["kube-1.20-deployment"]  # training Jobs and predictors on one claim
    trainers = [spec for doc in render.of_kind("Job") + render.of_kind("CronJob") for spec in pod_specs(doc)
                if any(c["name"] == "train" for c in spec["containers"])]
    assert len(trainers) >= 2, "a training Job per model family (and the CronJob's)"
    for spec in trainers:
        [train] = [c for c in spec["containers"] if c["name"] == "train"]
        [mount] = [m for m in train["volumeMounts"] if m["name"] == "store"]
        assert mount == {"name": "store", "mountPath": "/mnt/store"}, mount  # read-write
        [volume] = [v for v in spec["volumes"] if v["name"] == "store"]
        assert volume["persistentVolumeClaim"] == {"claimName": "don-don-predictor-model-store"}


def test_deployment_engine_fetches_from_s3_with_an_init_container(renders):
    deployment = renders["deployment-s3-everything"].named("Deployment", "don-don-predictor-rf-canary")
    spec = deployment["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    assert init["image"] == "ghcr.io/acme/don-predictor/training-job:1.2.3"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert init["args"][1:] == ["s3://don-models/models", "don-rf", "2", "/mnt/models/2"]
    assert "--model_dir=/mnt/models/2" in spec["containers"][0]["args"]


# ---------- the operator owns traffic (operator.enabled) ----------

def _rollout_crd_validator(chart_dir: Path) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((chart_dir / "crds" / "modelrollouts.yaml").read_text())
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("case", ["knative-s3-everything", "standard-operator", "deployment-s3-everything",
                                  "kube-1.20-deployment"])
def test_operator_renders_one_desired_rollout_per_model_and_no_traffic_field(renders, case, chart_dir,
                                                                               kserve_validators):
    render = renders[case]
    rollouts = {r["metadata"]["name"]: r for r in render.of_kind("ModelRollout")}
    assert set(rollouts) == {"don-don-predictor-rf", "don-don-predictor-tf"}
    validator = _rollout_crd_validator(chart_dir)
    for name, rollout in rollouts.items():
        assert not list(validator.iter_errors(rollout)), (name, list(validator.iter_errors(rollout)))
        spec = rollout["spec"]
        assert spec["delivery"] == "Desired" and spec["target"] == name
        assert spec["endpoints"]["modelName"] == spec["store"]["model"] == name.replace("don-predictor-", "")
        shadow = ["shadow"] if "recorder.enabled=true" in render.case.args else []  # tests/chart/test_rollout_steps.py
        assert spec["steps"] == shadow + [10, 25, 50, 100] and spec["progressDeadline"] == "10m"
        assert spec["analysis"]["goldenSet"] is True
    # Helm renders nothing the operator writes: no InferenceService, no stable Deployment, no
    # replicas, no HPA and no HTTPRoute (a `helm upgrade` would reset them).
    assert not render.of_kind("InferenceService") and not render.of_kind("HTTPRoute")
    assert not render.of_kind("HorizontalPodAutoscaler")
    if "deployment" in case:
        assert sorted(d["metadata"]["name"] for d in render.of_kind("Deployment")
                      if d["metadata"]["labels"].get("app.kubernetes.io/component") == "predictor") == \
            ["don-don-predictor-rf-canary", "don-don-predictor-tf-canary"]
        canary = render.named("Deployment", "don-don-predictor-rf-canary")
        assert "replicas" not in canary["spec"]
        assert canary["metadata"]["labels"]["don-predictor.io/model-version"] == "2"  # the desired version
        assert rollouts["don-don-predictor-rf"]["spec"]["mode"] == "Deployment"
        deployment = rollouts["don-don-predictor-rf"]["spec"]["deployment"]
        assert deployment["replicas"] == 2
        # the operator keeps the HPA of serving.autoscaling on the stable it owns
        assert set(deployment["autoscaling"]) == {"minReplicas", "maxReplicas",
                                                  "targetCPUUtilizationPercentage"}
        for track in ("stable", "canary"):
            render.named("Service", f"don-don-predictor-rf-{track}")
    else:
        mode = "Standard" if case == "standard-operator" else "Knative"
        for name, rollout in rollouts.items():
            assert rollout["spec"]["mode"] == mode
            template = rollout["spec"]["inferenceService"]
            isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                    "metadata": dict(template["metadata"], name=name), "spec": template["spec"]}
            errors = list(kserve_validators["serving.kserve.io/v1beta1/InferenceService"].iter_errors(isvc))
            assert not errors, errors


def test_operator_reads_the_model_store_it_gates_on(renders):
    pvc = renders["kube-1.20-deployment"].named("Deployment", "don-don-predictor-operator")["spec"]["template"]["spec"]
    [container] = pvc["containers"]
    assert {"name": "DON_STORE", "value": "/mnt/store"} in container["env"]
    assert {"name": "store", "mountPath": "/mnt/store", "readOnly": True} in container["volumeMounts"]
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "don-don-predictor-model-store", "readOnly": True}} \
        in pvc["volumes"]
    s3 = renders["knative-s3-everything"].named("Deployment", "don-don-predictor-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in s3["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "don-don-predictor-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage.svc.cluster.local:9000"
    assert not any(v["name"] == "store" for v in s3.get("volumes", []))
    rollout = renders["knative-s3-everything"].named("ModelRollout", "don-don-predictor-rf")
    assert rollout["spec"]["store"] == {"root": "s3://don-models/models", "model": "don-rf"}


def test_per_track_services_are_always_rendered(renders):
    render = renders["deployment-pvc"]  # no canary, no Gateway API, no operator
    for key in ("rf", "tf"):
        for track in ("stable", "canary"):
            service = render.named("Service", f"don-don-predictor-{key}-{track}")
            assert service["spec"]["selector"]["don-predictor.io/track"] == track


def test_manual_canary_values_are_refused_with_the_operator(helm, chart_dir):
    out = subprocess.run([helm, "template", "don", str(chart_dir), "--set", "operator.enabled=true",
                          "--set", "models.rf.canary.version=2"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "models.rf.canary.version is for manual canaries without the operator" in out.stderr


def test_rollout_values_are_the_operator_defaults(chart_dir):
    from ops.rollout.spec import DEFAULTS
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())["operator"]["rollout"]
    assert values == {key: DEFAULTS[key] for key in ("interval", "progressDeadline", "shadow", "labGate", "analysis")} \
        | {"steps": [], "canarySteps": DEFAULTS["steps"]}  # steps: automatic (tests/chart/test_rollout_steps.py)


def test_replica_split_rule_is_the_operators(helm, chart_dir):
    """The chart's manual ratio split and the operator's replica_split are one rule."""
    from concurrent.futures import ThreadPoolExecutor

    from ops.rollout.traffic import replica_split

    grid = [(total, percent) for total in (1, 2, 3, 5) for percent in (1, 10, 50, 75, 99)]

    def chart_split(point):
        total, percent = point
        out = subprocess.run([helm, "template", "don", str(chart_dir), "--set", "serving.engine=deployment",
                              "--set", f"serving.deployment.stableReplicas={total}",
                              "--set", "models.rf.canary.version=2",
                              "--set", f"models.rf.canary.trafficPercent={percent}",
                              "--show-only", "templates/deployments.yaml"],
                             capture_output=True, text=True, timeout=60, check=True)
        docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d}
        return docs["don-don-predictor-rf"]["spec"]["replicas"], docs["don-don-predictor-rf-canary"]["spec"]["replicas"]

    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(grid, pool.map(chart_split, grid)))
    assert found == {point: replica_split(*point) for point in grid}


# ---------- capabilities: Kubernetes 1.20 test cluster vs 1.29+ ----------

def test_api_versions_follow_the_cluster(renders):
    new, old = renders["deployment-canary-gateway"], renders["kube-1.20-deployment-manual-canary"]
    assert {d["apiVersion"] for d in new.of_kind("HorizontalPodAutoscaler")} == {"autoscaling/v2"}
    assert {d["apiVersion"] for d in old.of_kind("HorizontalPodAutoscaler")} == {"autoscaling/v2beta2"}
    assert {d["apiVersion"] for d in renders["deployment-s3-everything"].of_kind("CronJob")} == {"batch/v1"}
    assert {d["apiVersion"] for d in renders["kube-1.20-deployment"].of_kind("CronJob")} == {"batch/v1beta1"}
    assert {d["apiVersion"] for d in new.of_kind("PodDisruptionBudget")} == {"policy/v1"}
    assert {d["apiVersion"] for d in old.of_kind("PodDisruptionBudget")} == {"policy/v1beta1"}
    assert new.of_kind("HTTPRoute") and not old.of_kind("HTTPRoute")


def test_operator_rbac_is_least_privilege(renders):
    role = renders["knative-s3-everything"].of_kind("ClusterRole")[0]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules[("rollouts.don-predictor.io", "modelrollouts/status")] == {"get", "list", "watch", "patch", "update"}
    assert rules[("serving.kserve.io", "inferenceservices")] == {"get", "list", "watch", "create", "patch",
                                                                 "update", "delete"}
    # deletes only what the shadow step creates: the shadow Deployment and Service or
    # InferenceService, the mirror ConfigMap
    assert rules[("apps", "deployments")] == {"get", "list", "create", "patch", "update", "delete"}
    assert rules[("", "services")] == {"get", "list", "create", "delete"}
    assert rules[("", "configmaps")] == {"get", "create", "update", "delete"}
    assert rules[("", "pods")] == {"get", "list"}
    assert all("*" not in verbs for verbs in rules.values()) and all("*" not in k[1] for k in rules)
    assert not any(r == "secrets" for _, r in rules), "the operator never reads Secrets"
    operator = renders["knative-s3-everything"].named("Deployment", "don-don-predictor-operator")
    assert operator["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "ops", "operator"]
    assert not renders["defaults"].of_kind("ClusterRole"), "operator.enabled=false renders no RBAC"


def test_training_job_environment(renders):
    jobs = renders["knative-s3-everything"].of_kind("Job")
    assert sorted(j["metadata"]["name"] for j in jobs) == ["don-don-predictor-train-rf-1", "don-don-predictor-train-tf-1"]
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "training_job", "train"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DON_STORE"] == "s3://don-models/models"
    assert env["DON_DATA"] == "s3://don-data/corn_hsi_don.csv"
    assert env["DON_MODEL"] == "don-rf" and env["DON_FAMILY"] == "rf"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage.svc.cluster.local:9000"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://don-don-predictor-otel-collector.don.svc.cluster.local:4318"
    # no TTL by default: Helm would create a deleted Job again on the next upgrade (and train again)
    assert all("ttlSecondsAfterFinished" not in j["spec"] for j in jobs)
    backup = [c for c in renders["knative-s3-everything"].of_kind("CronJob") if c["metadata"]["name"].endswith("-backup")]
    [backup_container] = pod_specs(backup[0])[0]["containers"]
    assert backup_container["command"] == ["python", "-m", "ops", "backup", "--from", "/mnt/store",
                                           "--to", "s3://don-backup/models"]


def test_training_job_ttl_only_when_set():
    from tests.fixtures_chart import Case, render_case
    render = render_case(Case("training-ttl", ("--set", "training.job.enabled=true",
                                               "--set", "training.ttlSecondsAfterFinished=0")))
    assert [j["spec"]["ttlSecondsAfterFinished"] for j in render.of_kind("Job")] == [0, 0]


def _training_env(*args: str) -> list[dict[str, str]]:
    from tests.fixtures_chart import Case, render_case
    render = render_case(Case("training", ("--set", "training.job.enabled=true",
                                           "--set", "training.cronJob.enabled=true", *args)))
    containers = [pod_specs(run)[0]["containers"][0]
                  for run in render.of_kind("Job") + render.of_kind("CronJob")]
    training = [c for c in containers if c["command"][-2:] == ["training_job", "train"]]
    assert len(training) == 4  # a Job and a CronJob per model: one pod spec for all
    return [{e["name"]: e.get("value") for e in c["env"]} for c in training]


@pytest.mark.parametrize("args, accept, fraction", [
    ((), False, None),
    (("--set", "training.acceptRelabel=true", "--set", "training.referenceFraction=0"), True, 0.0),
    (("--set", "training.referenceFraction=0.25",), False, 0.25),
], ids=["defaults", "accept-relabel-no-reference-set", "fraction-from-set"])
def test_training_relabel_and_reference_values_reach_the_cli(args, accept, fraction, monkeypatch):
    """training.acceptRelabel and training.referenceFraction become the variables the training
    CLI reads (its own parser decides, as in the Job); null leaves the fraction to the store."""
    from training_job.cli import parser
    for env in _training_env(*args):
        assert env["DON_ACCEPT_RELABEL"] == ("1" if accept else "0")
        assert ("DON_REFERENCE_FRACTION" in env) == (fraction is not None)
        for name in ("DON_ACCEPT_RELABEL", "DON_REFERENCE_FRACTION"):
            monkeypatch.delenv(name, raising=False)
            if name in env:
                monkeypatch.setenv(name, env[name])
        parsed = parser().parse_args(["train"])
        assert parsed.accept_relabel is accept and parsed.reference_fraction == fraction


def test_helm_test_pod_calls_every_model(renders):
    pods = [d for d in renders["defaults"].docs if d["kind"] == "Pod"]
    [pod] = pods
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["don-predictor.io/client"] == "true"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["DON_MODELS"]) == {
        "don-rf": {"url": "http://don-don-predictor-rf.don.svc.cluster.local", "serviceEnv": ""},
        "don-tf": {"url": "http://don-don-predictor-tf.don.svc.cluster.local", "serviceEnv": ""}}
    script = pod["spec"]["containers"][0]["args"][0]
    assert "range(448)" in script and "/v1/models/" in script
    [deployment_pod] = renders["deployment-pvc"].of_kind("Pod")
    deployment_env = {e["name"]: e["value"] for e in deployment_pod["spec"]["containers"][0]["env"]}
    assert json.loads(deployment_env["DON_MODELS"])["don-rf"]["serviceEnv"] == "DON_DON_PREDICTOR_RF"


def test_helm_test_program_makes_a_real_inference_call(renders):
    """Run the hook's embedded program against a real HTTP server on loopback that answers like
    the model server, found through the injected <SERVICE>_SERVICE_HOST variables (no DNS)."""
    [pod] = renders["deployment-pvc"].of_kind("Pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, len(body["instances"][0])))
            payload = json.dumps({"predictions": [812.5]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Model-Version", "1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        run_env = {**os.environ, **env, "DON_DON_PREDICTOR_RF_SERVICE_HOST": "127.0.0.1",
                   "DON_DON_PREDICTOR_RF_SERVICE_PORT": port, "DON_DON_PREDICTOR_TF_SERVICE_HOST": "127.0.0.1",
                   "DON_DON_PREDICTOR_TF_SERVICE_PORT": port}
        out = subprocess.run([sys.executable, "-c", container["args"][0]], env=run_env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "ok don-rf version=1 ppb=812.5" in out.stdout
        assert sorted(seen) == [("/v1/models/don-rf:predict", 448), ("/v1/models/don-tf:predict", 448)]
        # A server that answers nonsense fails the test.
        run_env["DON_DON_PREDICTOR_TF_SERVICE_PORT"] = "1"
        failed = subprocess.run([sys.executable, "-c", container["args"][0]], env=run_env,
                                capture_output=True, text=True, timeout=60)
        assert failed.returncode == 1 and "FAIL don-tf" in failed.stderr
    finally:
        server.shutdown()


@pytest.mark.parametrize("case", ["knative-canary", "standard", "deployment-canary-ratio",
                                  "kube-1.20-deployment"])
def test_serving_pods_drain_before_sigterm(renders, case):
    render = renders[case]
    servers = [c for d in render.of_kind("ServingRuntime") for c in d["spec"]["containers"]]
    for deployment in render.of_kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        if any(c["name"] == "model-server" for c in spec["containers"]):
            servers += [c for c in spec["containers"] if c["name"] == "model-server"]
            # the drain fits in the grace period, with time left for requests in flight
            assert spec["terminationGracePeriodSeconds"] == 10 + 30
    assert servers, case
    for container in servers:
        assert container["lifecycle"]["preStop"]["exec"]["command"] == [
            "python", "-m", "model_server.drain", "10"]


# ---------- the operator's shadow step ----------

@pytest.mark.parametrize("case", ["deployment-s3-everything", "knative-canary", "deployment-pvc"])
def test_predictors_mount_the_mirror_configmap_optionally_where_the_server_reads_it(renders, case):
    """The operator's `<target>-mirror` ConfigMap reaches every predictor pod (updates in place:
    no subPath), and a pod starts without it (optional)."""
    from pathlib import PurePosixPath

    from don_core.contract import MIRROR_CONFIG_PATH, MIRROR_CONFIGMAP_SUFFIX
    render = renders[case]
    predictors = [obj for kind in ("Deployment", "InferenceService") for obj in render.of_kind(kind)
                  if obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "predictor"]
    assert predictors, case
    for obj in predictors:
        for pod in pod_specs(obj) + kserve_pod_specs(obj):
            [volume] = [v for v in pod["volumes"] if v.get("configMap", {}).get("name", "").endswith(MIRROR_CONFIGMAP_SUFFIX)]
            assert volume["configMap"]["optional"] is True
            assert volume["configMap"]["name"] == obj["metadata"]["name"].removesuffix("-canary") + MIRROR_CONFIGMAP_SUFFIX
            containers = pod.get("containers") or [pod["model"]]  # KServe: the predictor's model
            mounts = [m for c in containers for m in c.get("volumeMounts", []) if m["name"] == volume["name"]]
            assert mounts and all(m["mountPath"] == str(PurePosixPath(MIRROR_CONFIG_PATH).parent)
                                  and "subPath" not in m for m in mounts)


def test_stable_predictors_may_reach_a_shadow_and_the_operator_knows_the_recorder(renders):
    render = renders["kube-1.20-deployment"]
    predictor = {"app.kubernetes.io/component": "predictor"}
    peers = lambda rules, key: [p.get("podSelector", {}).get("matchLabels", {})  # noqa: E731
                                for rule in rules if {"port": 8080, "protocol": "TCP"} in rule.get("ports", [])
                                for p in rule.get(key, [])]
    # pod to pod on the deployment engine and KServe Standard; Knative goes through its gateway
    for case, reaches in (("kube-1.20-deployment", True), ("standard-operator", True),
                          ("knative-s3-everything", False)):
        policy = renders[case].named("NetworkPolicy", "don-don-predictor-predictor")
        assert any(predictor.items() <= m.items() for m in peers(policy["spec"]["egress"], "to")) == reaches, case
        assert any(predictor.items() <= m.items() for m in peers(policy["spec"]["ingress"], "from")) == reaches, case
    for rollout in render.of_kind("ModelRollout"):
        assert rollout["spec"]["labGate"]["recorderUrl"] == \
            "http://don-don-predictor-recorder.don.svc.cluster.local:8080"
        assert rollout["spec"]["shadow"]["onNoLabels"] == "RollBack"
