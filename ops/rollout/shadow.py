"""The shadow step's objects (Deployment engine; KServe's: shadow_isvc.py): the candidate running
beside the stable on mirrored copies only, and the mirror setting the stable's servers read.

- Deployment and Service `<target>-shadow`: the canary Deployment's pod template (the candidate as
  the chart deploys it) on track "shadow" and WITHOUT the model label, so that the model's Service,
  which selects by model, never sends it a caller's request; DON_SHADOW=1 makes its server record
  every answer as the shadow's, with or without X-Don-Shadow, and never mirror what it answers
  (the operator's golden and reference calls) to itself.
- ConfigMap `<target>-mirror`: `mirror.json` {"url", "percent"}, which the chart mounts into the
  stable's pods at MIRROR_CONFIG_PATH (optional, no subPath: the kubelet updates it in place and the
  server re-reads it, model_server/mirror.py), so a shadow starts and stops with no restart.
- On the HTTPRoute engine the Gateway sends the copies instead: a RequestMirror filter to the
  shadow Service on the route's rules that send to the stable (`percent` from spec.shadow), and no
  ConfigMap. Such a copy carries no X-Don-Shadow; the shadow's server records it as the shadow's
  all the same (DON_SHADOW=1), and it pairs up with the stable's answer by X-Request-Id, which the
  Gateway must set on the request before mirroring it (Envoy-based Gateways do).

On the KServe engines the shadow is an InferenceService of its own (shadow_isvc.py, the same
interface); shadows.of picks by mode.

Every object carries an ownerReference to its ModelRollout (garbage-collected with it); `ensure` and
`remove` are idempotent, so a restarted operator finishes what the status asks for, and one owner
(the operator) removes them on every way out of the shadow step.
"""
from __future__ import annotations

import copy
import json
from pathlib import PurePosixPath

from don_core.contract import (MIRROR_CONFIG_PATH, MIRROR_CONFIGMAP_SUFFIX, MODEL_LABEL_KEY,
                               SHADOW_ENV, SHADOW_SUFFIX, SHADOW_TRACK, TRACK_LABEL)
from ops.rollout import endpoints, traffic
from ops.rollout.kube import ApiException, Kube

MIRROR_KEY = PurePosixPath(MIRROR_CONFIG_PATH).name  # mirror.json, the ConfigMap's one key
# model_server/mirror.py: a shadow server, whose every answer is recorded as the shadow's (a copy
# without X-Don-Shadow, from a Gateway, too) and which never mirrors what it answers
SHADOW_MARK = {"name": SHADOW_ENV, "value": "1"}
# On the watch's shadow: the stable's pod template before the promotion, restored on a Fail.
PREVIOUS_TEMPLATE = "rollouts.don-predictor.io/previous-template"


class ShadowLost(Exception):
    """The watch's shadow cannot be made: the stable no longer runs the previous version."""


def _annotations(deployment: dict) -> dict:
    return (deployment.get("metadata") or {}).get("annotations") or {}


def shadow_labels(labels: dict | None) -> dict:
    out = {k: v for k, v in (labels or {}).items() if k != MODEL_LABEL_KEY}
    out[TRACK_LABEL] = SHADOW_TRACK
    return out


def shadow_deployment(canary: dict, name: str, replicas: int, owner: dict,
                      annotations: dict | None = None) -> dict:
    """The shadow Deployment: a copy of the canary's (the watch's: the stable's), relabelled off
    the model's Service."""
    spec = copy.deepcopy(canary.get("spec") or {})
    spec["replicas"] = int(replicas)
    spec["selector"] = {"matchLabels": shadow_labels((spec.get("selector") or {}).get("matchLabels"))}
    template = spec.setdefault("template", {})
    meta = template.setdefault("metadata", {})
    meta["labels"] = shadow_labels(meta.get("labels"))
    for container in (template.get("spec") or {}).get("containers") or []:
        env = [e for e in container.get("env") or [] if e.get("name") != SHADOW_MARK["name"]]
        container["env"] = env + [dict(SHADOW_MARK)]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": shadow_labels((canary.get("metadata") or {}).get("labels")),
                         "annotations": dict(annotations or {}), "ownerReferences": [owner]},
            "spec": spec}


def shadow_service(name: str, selector: dict, owner: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": dict(selector), "ownerReferences": [owner]},
            "spec": {"type": "ClusterIP", "selector": dict(selector),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def request_mirror(service: str, percent: float) -> dict:
    """The Gateway API RequestMirror filter copying `percent` % of a rule's requests to Service
    `service` (at 100 % without percent/fraction, which the standard channel has from Gateway API
    v1.3; an older CRD prunes them, and the Gateway would copy every request). The backendRef
    spells out the schema's defaults (group "", kind Service): the API server would add them, and
    the filter read back must equal this one, or `Shadow._route_mirror` rewrites it every pass."""
    mirror: dict = {"backendRef": {"group": "", "kind": "Service", "name": service, "port": 80}}
    if percent < 100:
        mirror.update({"percent": int(percent)} if float(percent).is_integer() else
                      {"fraction": {"numerator": round(percent * 100), "denominator": 10000}})
    return {"type": "RequestMirror", "requestMirror": mirror}


def mirrored_rules(route: dict, stable_service: str, shadow_service: str,
                   percent: float | None) -> list:
    """The route's rules with the RequestMirror filter to `shadow_service` on each rule that sends
    to `stable_service` (percent None: without it); other filters are kept."""
    rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
    for rule in rules:
        if not any(ref.get("name") == stable_service for ref in rule.get("backendRefs") or []):
            continue
        kept = [f for f in rule.get("filters") or [] if not (
            f.get("type") == "RequestMirror"
            and (f.get("requestMirror") or {}).get("backendRef", {}).get("name") == shadow_service)]
        if percent is not None:
            kept.append(request_mirror(shadow_service, percent))
        rule["filters"] = kept
    return rules


def mirror_configmap(name: str, url: str, percent: float, owner: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [owner]},
            "data": {MIRROR_KEY: json.dumps({"url": url, "percent": percent}, sort_keys=True)}}


class Shadow:
    """The shadow of one ModelRollout's target (spec.deployment names the canary to copy)."""

    def __init__(self, kube: Kube, ns: str, spec):
        self.kube, self.ns, self.spec = kube, ns, spec
        self.name = spec.target + SHADOW_SUFFIX
        self.mirror_name = spec.target + MIRROR_CONFIGMAP_SUFFIX
        self.canary_name = spec.deployment.canary

    def url(self) -> str:
        """Where the stable's servers send copies and the operator calls the shadow:
        spec.endpoints.shadowUrl, else the shadow Service by its ClusterIP (clusters without
        cluster DNS too), else its DNS name."""
        if self.spec.endpoints.shadow_url:
            return self.spec.endpoints.shadow_url
        try:
            return self.kube.service_url(self.ns, self.name) or endpoints.dns_url(self.ns, self.name)
        except ApiException:
            return endpoints.dns_url(self.ns, self.name)

    def ensure(self, status, owner: dict) -> list[str]:
        """The candidate's shadow with the mirror setting; what was created, for the Event."""
        return self.ensure_pods(status.replicas or 1, owner, self.canary_name) + self.ensure_mirror(owner)

    def ensure_pods(self, replicas: int, owner: dict, source: str,
                    previous: int | None = None) -> list[str]:
        """The shadow Deployment (a copy of Deployment `source`) and Service, when missing.
        `previous`: the post-promotion watch's shadow, the stable Deployment's copy while it
        still runs that version (its template kept verbatim in PREVIOUS_TEMPLATE; raises
        ShadowLost once the stable runs another); a shadow of the other kind is replaced."""
        created, found = [], self._found()
        if found and (PREVIOUS_TEMPLATE in _annotations(found)) != (previous is not None):
            self.kube.delete("Deployment", self.ns, self.name)
            found = None
        if found is None:
            body = self.kube.raw_deployment(self.ns, source)
            annotations = {}
            if previous is not None:
                runs = traffic.deployment_version(body, self.spec.deployment.version_env)
                if str(runs) != str(previous):
                    raise ShadowLost(f"Deployment {source} runs version {runs}, not {previous}")
                annotations[PREVIOUS_TEMPLATE] = json.dumps(body["spec"]["template"], sort_keys=True)
            found = self.kube.create_deployment(self.ns, shadow_deployment(
                body, self.name, replicas, owner, annotations))
            created.append(f"Deployment {self.name}")
        try:  # on its own: an operator stopped between the two creates finishes here
            self.kube.create_service(self.ns, shadow_service(
                self.name, found["spec"]["selector"]["matchLabels"], owner))
            created.append(f"Service {self.name}")
        except ApiException as exc:
            if exc.status != 409:
                raise
        return created

    def ensure_mirror(self, owner: dict) -> list[str]:
        """The mirror setting: the HTTPRoute's RequestMirror filter on the HTTPRoute engine,
        else the ConfigMap the stable's servers read."""
        if self.spec.deployment.http_route:
            return self._route_mirror(self.spec.shadow.percent)
        return self._mirror_configmap(self.url(), owner)

    def _mirror_configmap(self, url: str, owner: dict) -> list[str]:
        """The ConfigMap the stable's servers read, sending copies to `url`; created or replaced."""
        body = mirror_configmap(self.mirror_name, url, self.spec.shadow.percent, owner)
        try:
            if self.kube.get_configmap(self.ns, self.mirror_name).get("data") != body["data"]:
                self.kube.replace_configmap(self.ns, self.mirror_name, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.kube.create_configmap(self.ns, body)
            return [f"ConfigMap {self.mirror_name}"]
        return []

    kind = "Deployment"  # of the shadow itself

    def _read(self) -> dict:
        return self.kube.raw_deployment(self.ns, self.name)

    def _found(self) -> dict | None:
        try:
            return self._read()
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None

    def previous_template(self) -> dict | None:
        """The stable's pod template kept by the watch's shadow (None without one)."""
        kept = _annotations(self._found() or {}).get(PREVIOUS_TEMPLATE)
        return json.loads(kept) if kept else None

    def not_ready(self) -> str | None:
        """Why the shadow cannot answer yet (None once it can, or with shadowUrl)."""
        if self.spec.endpoints.shadow_url:
            return None
        try:
            found = self._read()
        except ApiException as exc:
            return f"{self.kind} {self.name}: {exc.status} {exc.reason}"
        return self._not_ready(found)

    def _not_ready(self, found: dict) -> str | None:
        """None once the Deployment's pods are ready."""
        wanted = int((found.get("spec") or {}).get("replicas") or 0)
        if traffic.deployment_ready(found, wanted):
            return None
        return f"the shadow's pods are starting (Deployment {self.name})"

    def _route_mirror(self, percent: float | None) -> list[str]:
        """Writes the route's RequestMirror filter (None: removes it); what changed, for the Event."""
        name = self.spec.deployment.http_route
        route = self.kube.get_route(self.ns, name)
        rules = mirrored_rules(route, self.spec.deployment.stable_service, self.name, percent)
        if rules == (route.get("spec") or {}).get("rules"):
            return []
        self.kube.patch_route(self.ns, name, {"spec": {"rules": rules}})
        return [f"RequestMirror filter of HTTPRoute {name}"]

    def remove(self) -> list[str]:
        """Clears the mirror setting first (the stable stops copying), then the shadow itself."""
        removed = self._route_mirror(None) if self.spec.deployment.http_route else []
        return removed + [f"{kind} {name}" for kind, name in (
            ("ConfigMap", self.mirror_name), ("Deployment", self.name), ("Service", self.name))
            if self.kube.delete(kind, self.ns, name)]
