"""How each serving engine moves traffic between the stable and the candidate version.

- Knative (KServe Serverless): the predictor spec IS the candidate; `canaryTrafficPercent: x` keeps
  100-x on the previously rolled-out revision. Promotion drops `canaryTrafficPercent`; rollback
  restores the stable storageUri with `canaryTrafficPercent: 0`, so the previous (stable) revision
  keeps all traffic and no revision ever serves the candidate again.
- Standard (KServe raw deployment + Gateway API): `spec.canary[]` holds a copy of the stable
  predictor pointing at the candidate with `trafficPercent: x`. Promotion writes the candidate into
  `spec.predictor` and removes `spec.canary`; rollback removes `spec.canary`.
- Deployment (the chart's plain engine): Deployments `<target>` (stable) and `<target>-canary`,
  the canary already serving the candidate (the chart's `canary.version`; its env `versionEnv`
  says which). Traffic follows HTTPRoute backend weights when a route is named, otherwise the
  replica ratio. Promotion copies the canary's pod template into the stable Deployment (so the
  stable serves exactly what was analysed) and scales the canary to zero.
With `delivery: Desired` (the chart's ModelRollouts) the operator also owns the objects whose
traffic fields it writes: it creates the InferenceService from `spec.inferenceService`, and the
stable Deployment from the chart's canary Deployment (Flagger's primary/target split), so that a
`helm upgrade` never renders, and so never resets, a field the operator moves.
Every function here is idempotent: applying it twice gives the same object.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import NamedTuple

from don_core.contract import MODEL_VERSION_ENV, MODEL_VERSION_LABEL, TRACK_LABEL
from ops.rollout.spec import AutoscalingSpec

# Where a predictor may keep its storageUri, in KServe's order of preference.
_FRAMEWORK_KEYS = ("model", "sklearn", "onnx", "tensorflow", "triton", "xgboost", "lightgbm",
                   "pytorch", "pmml", "paddle", "huggingface")


class TrafficError(RuntimeError):
    """The target object cannot carry this rollout; the message says what is missing."""


class Served(NamedTuple):
    """What an InferenceService predictor serves: its storageUri and the version published there
    (None for a URI outside the store's <root>/<model>/<N> layout)."""
    uri: str
    version: int | None


def storage_key(predictor: dict) -> str:
    for key in _FRAMEWORK_KEYS:
        if isinstance(predictor.get(key), dict) and predictor[key].get("storageUri"):
            return key
    raise TrafficError("the InferenceService predictor has no storageUri "
                       f"(looked in {', '.join(_FRAMEWORK_KEYS)})")


def stable_storage_uri(isvc: dict) -> str:
    predictor = isvc.get("spec", {}).get("predictor") or {}
    return predictor[storage_key(predictor)]["storageUri"]


VERSION_ENV, VERSION_LABEL = MODEL_VERSION_ENV, MODEL_VERSION_LABEL


def retarget(predictor: dict, served: Served) -> dict:
    """A copy of `predictor` serving `served`: the storageUri, and where the chart put them, the
    version env (the model server's X-Model-Version) and the pod label, so they never lie."""
    out = copy.deepcopy(predictor)
    out.pop("canaryTrafficPercent", None)
    key = storage_key(out)
    out[key]["storageUri"] = served.uri
    if served.version is not None:
        version = str(served.version)
        for env in out[key].get("env") or []:
            if env.get("name") == VERSION_ENV:
                env["value"] = version
        if VERSION_LABEL in (out.get("labels") or {}):
            out["labels"][VERSION_LABEL] = version
    return out


def _serving(predictor: dict, served: Served, **extra) -> dict:
    """Merge-patch body of spec.predictor that makes it serve `served`."""
    new = retarget(predictor, served)
    key = storage_key(new)
    body = {key: new[key], **extra}
    if "labels" in new:
        body["labels"] = new["labels"]
    return body


def isvc_patch(mode: str, isvc: dict, phase: str, weight: int, stable: Served,
               candidate: Served) -> dict:
    """JSON merge patch that makes `isvc` carry `phase` at `weight` percent on the candidate."""
    predictor = isvc.get("spec", {}).get("predictor") or {}
    if mode == "Knative":
        if phase == "Promoted":
            return {"spec": {"predictor": _serving(predictor, candidate, canaryTrafficPercent=None)}}
        if phase in ("RolledBack", "Failed"):
            return {"spec": {"predictor": _serving(predictor, stable, canaryTrafficPercent=0)}}
        return {"spec": {"predictor": _serving(predictor, candidate,
                                               canaryTrafficPercent=int(weight))}}
    if mode == "Standard":
        if phase == "Promoted":
            return {"spec": {"predictor": _serving(predictor, candidate), "canary": None}}
        if phase in ("RolledBack", "Failed"):
            return {"spec": {"canary": None}}
        # the canary: a copy of the stable predictor that serves the candidate
        return {"spec": {"canary": [{"trafficPercent": int(weight),
                                     "predictor": retarget(predictor, candidate)}]}}
    raise TrafficError(f"mode {mode!r} does not patch an InferenceService")


def isvc_weight(mode: str, isvc: dict) -> int | None:
    """Candidate percent the InferenceService currently asks for (None: no canary)."""
    spec = isvc.get("spec", {})
    if mode == "Knative":
        return spec.get("predictor", {}).get("canaryTrafficPercent")
    canary = spec.get("canary") or []
    return canary[0].get("trafficPercent") if canary else None


def replica_split(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for `weight` percent on the canary, with whole pods: up to 50 %
    the stable keeps its `total` replicas and the canary gets the count nearest the share (at
    least 1); above 50 % the canary runs `total` and the stable the count nearest the share (at
    least 1). Callers get capacity at every step, and the share really given is
    `replica_share(...)` of the result, which is what the status reports."""
    total, weight = max(1, int(total)), int(weight)
    if weight <= 0:
        return total, 0
    if weight >= 100:
        return 0, total
    if weight <= 50:  # floor(x + 0.5): the same rounding as the chart's template
        return total, max(1, (2 * total * weight + 100 - weight) // (2 * (100 - weight)))
    return max(1, (2 * total * (100 - weight) + weight) // (2 * weight)), total


def replica_share(stable: int, canary: int) -> int:
    """The percent of requests `canary` of `stable + canary` equal pods answer."""
    return round(100 * canary / (stable + canary)) if stable + canary else 0


def route_rules(route: dict, stable_service: str, canary_service: str, weight: int) -> list:
    """The HTTPRoute's rules with backend weights set (100-weight stable, weight canary)."""
    rules = copy.deepcopy(route.get("spec", {}).get("rules") or [])
    found = set()
    for rule in rules:
        for ref in rule.get("backendRefs") or []:
            if ref.get("name") == stable_service:
                ref["weight"] = 100 - int(weight)
                found.add("stable")
            elif ref.get("name") == canary_service:
                ref["weight"] = int(weight)
                found.add("canary")
    if found != {"stable", "canary"}:
        raise TrafficError(f"HTTPRoute {route.get('metadata', {}).get('name')} needs backendRefs "
                           f"to both {stable_service} and {canary_service}")
    return rules


def promotion_patch(canary: dict, version_label: str = MODEL_VERSION_LABEL) -> list[dict]:
    """JSON Patch (RFC 6902) giving the stable Deployment the canary's pod spec, replaced whole (a
    field the chart dropped goes too, which a merge patch would keep), and its version label.

    Labels other than the version stay the stable's own: the Deployment's selector needs them.
    """
    template = canary.get("spec", {}).get("template", {})
    patch = [{"op": "replace", "path": "/spec/template/spec", "value": copy.deepcopy(template.get("spec") or {})}]
    labels = (template.get("metadata") or {}).get("labels") or {}
    if version_label in labels:
        key = version_label.replace("~", "~0").replace("/", "~1")  # a JSON Pointer token
        patch.append({"op": "add", "path": f"/spec/template/metadata/labels/{key}", "value": labels[version_label]})
    return patch


def deployment_version(deployment: dict, env_name: str) -> str | None:
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    for kind in ("containers", "initContainers"):
        for container in pod.get(kind) or []:
            for env in container.get("env") or []:
                if env.get("name") == env_name:
                    return env.get("value")
    return None



def stable_from_canary(canary: dict, name: str, replicas: int, owner: dict) -> dict:
    """The stable Deployment, first created as a copy of the canary (the chart's Deployment that
    runs the desired version), relabelled to the stable track; `replicas` is the whole total."""
    meta = canary.get("metadata") or {}
    spec = copy.deepcopy(canary.get("spec") or {})
    labels = dict(meta.get("labels") or {}, **{TRACK_LABEL: "stable"})
    spec["replicas"] = int(replicas)
    spec.setdefault("selector", {}).setdefault("matchLabels", {})[TRACK_LABEL] = "stable"
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = dict(template_meta.get("labels") or {}, **{TRACK_LABEL: "stable"})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
            "spec": spec}


# On an InferenceService the operator made: the digest of the spec.inferenceService it last took
# (KServe's webhook adds defaults to the object, so the object itself cannot be compared).
TEMPLATE_DIGEST = "rollouts.don-predictor.io/template-sha256"


def template_digest(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


def isvc_from_template(template: dict, name: str, owner: dict) -> dict:
    """The InferenceService of `spec.inferenceService` (metadata labels/annotations and spec)."""
    meta = template.get("metadata") or {}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "labels": dict(meta.get("labels") or {}),
                         "annotations": {**(meta.get("annotations") or {}),
                                         TEMPLATE_DIGEST: template_digest(template)},
                         "ownerReferences": [owner]},
            "spec": copy.deepcopy(template.get("spec") or {})}


def template_patch(isvc: dict, template: dict) -> list[dict]:
    """JSON Patch giving `isvc` the template's predictor, whole (a field the chart dropped goes
    too), its labels and annotations (others kept) and the template's digest."""
    meta, found = template.get("metadata") or {}, isvc.get("metadata") or {}
    labels = {**(found.get("labels") or {}), **(meta.get("labels") or {})}
    annotations = {**(found.get("annotations") or {}), **(meta.get("annotations") or {}),
                   TEMPLATE_DIGEST: template_digest(template)}
    return [{"op": "add", "path": "/metadata/labels", "value": labels},
            {"op": "add", "path": "/metadata/annotations", "value": annotations},
            {"op": "replace", "path": "/spec/predictor",
             "value": copy.deepcopy((template.get("spec") or {}).get("predictor") or {})}]


def deployment_ready(deployment: dict, replicas: int) -> bool:
    """All `replicas` pods run the Deployment's current template and are ready, none left over."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    return (int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and int(status.get("updatedReplicas") or 0) >= replicas
            and int(status.get("readyReplicas") or 0) >= replicas
            and int(status.get("replicas") or 0) == replicas)


def hpa_spec(deployment: str, autoscaling: AutoscalingSpec) -> dict:
    """The spec of the HorizontalPodAutoscaler the operator keeps on the stable Deployment
    (spec.deployment.autoscaling, from the chart's serving.autoscaling)."""
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": autoscaling.min_replicas, "maxReplicas": autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization",
                "averageUtilization": autoscaling.target_cpu_percent}}}]}


def autoscaled_split(stable: int, weight: int, most: int) -> tuple[int, int]:
    """(stable, canary) when an HPA owns the stable's replicas: the stable keeps what the HPA gave
    it and the canary gets the count nearest `weight` % of the whole (at least 1, at most `most`);
    at 100 % the canary runs that many and the stable none (an HPA leaves a Deployment scaled to
    zero alone; promotion gives the stable its pods back)."""
    if weight <= 0:
        return stable, 0
    if weight >= 100:
        return 0, stable
    wanted = (2 * stable * weight + 100 - weight) // (2 * (100 - weight))
    return stable, min(max(1, most), max(1, wanted))
