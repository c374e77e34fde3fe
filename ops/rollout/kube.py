"""The Kubernetes calls the operator and the CLI make, in one place (kubeconfig or in-cluster)."""
from __future__ import annotations

import datetime
import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ops.rollout import GROUP, PLURAL, VERSION

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
HTTPROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
# Seconds to connect and to wait for the answer, on every call: the client's default is to wait
# forever, and a tick stuck on a stalled connection would hold its rollout (the operator retries
# a tick that raises).
REQUEST_TIMEOUT = (5.0, 30.0)


def load_config(kubeconfig: str | None = None) -> None:
    """Explicit kubeconfig, else $KUBECONFIG / ~/.kube/config, else the in-cluster account."""
    if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()


def current_namespace() -> str:
    try:
        return config.list_kube_config_contexts()[1]["context"].get("namespace") or "default"
    except Exception:
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        return open(path).read().strip() if os.path.exists(path) else "default"


def _timed(api_client: client.ApiClient | None, timeout) -> client.ApiClient:
    """`api_client` (a new one from the loaded configuration when None) whose calls give up after
    `timeout` unless the call names its own."""
    api_client = api_client or client.ApiClient()
    untimed = api_client.call_api

    def call_api(*args, _request_timeout=None, **kwargs):
        return untimed(*args, _request_timeout=timeout if _request_timeout is None
                       else _request_timeout, **kwargs)

    api_client.call_api = call_api
    return api_client


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None, timeout=REQUEST_TIMEOUT):
        api_client = _timed(api_client, timeout)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self._hpa_version: str | None = None

    # ModelRollouts
    def get_rollout(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def list_rollouts(self, ns: str | None) -> list[dict]:
        if ns:
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]

    def create_rollout(self, ns: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def patch_rollout(self, ns: str, name: str, patch: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch,
                                                          _content_type=MERGE)

    def patch_rollout_status(self, ns: str, name: str, status: dict) -> dict:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, {"status": status}, _content_type=MERGE)

    def remove_rollout_finalizer(self, ns: str, name: str, finalizers: list[str], finalizer: str) -> None:
        """JSON patch: removes ``finalizer`` only if it is still where it was seen (else 422)."""
        at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, [{"op": "test", "path": at, "value": finalizer},
                                               {"op": "remove", "path": at}], _content_type=JSON_PATCH)

    # Events
    def create_event(self, obj: dict, kind: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about ``obj`` (Normal|Warning), as `kubectl describe` shows them."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.core.create_namespaced_event(meta["namespace"], {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": kind, "reason": reason, "message": message, "source": {"component": component},
            "reportingComponent": component, "firstTimestamp": now, "lastTimestamp": now, "count": 1})

    # InferenceServices
    def get_isvc(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(*ISVC[:2], ns, ISVC[2], name)

    def create_isvc(self, ns: str, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(*ISVC[:2], ns, ISVC[2], body)

    def patch_isvc(self, ns: str, name: str, patch: dict | list) -> dict:
        """A list is a JSON Patch; a dict a JSON merge patch."""
        kind = JSON_PATCH if isinstance(patch, list) else MERGE
        return self.custom.patch_namespaced_custom_object(*ISVC[:2], ns, ISVC[2], name, patch, _content_type=kind)

    # Deployment engine
    def get_deployment(self, ns: str, name: str) -> dict:
        return self.apps.read_namespaced_deployment(name, ns).to_dict()

    def raw_deployment(self, ns: str, name: str) -> dict:
        """The Deployment as the API spells it (camelCase), for patch builders."""
        return self.apps.api_client.sanitize_for_serialization(
            self.apps.read_namespaced_deployment(name, ns))

    def create_deployment(self, ns: str, body: dict) -> dict:
        created = self.apps.create_namespaced_deployment(ns, body)
        return self.apps.api_client.sanitize_for_serialization(created)

    def patch_deployment(self, ns: str, name: str, patch: dict | list) -> None:
        """A list is a JSON Patch; a dict a strategic merge patch."""
        kind = JSON_PATCH if isinstance(patch, list) else STRATEGIC
        self.apps.patch_namespaced_deployment(name, ns, patch, _content_type=kind)

    def scale_deployment(self, ns: str, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": int(replicas)}},
                                                   _content_type=MERGE)

    def get_route(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(*HTTPROUTE[:2], ns, HTTPROUTE[2], name)

    def patch_route(self, ns: str, name: str, patch: dict) -> None:
        self.custom.patch_namespaced_custom_object(*HTTPROUTE[:2], ns, HTTPROUTE[2], name, patch,
                                                   _content_type=MERGE)

    # HorizontalPodAutoscalers: built-in, addressed like custom objects so that the API version
    # can be the one the cluster serves (autoscaling/v2 from 1.23, v2beta2 before; same fields).
    def _hpa(self) -> tuple[str, str, str]:
        if self._hpa_version is None:
            group = client.AutoscalingApi(self.custom.api_client).get_api_group()
            served = {v.version for v in group.versions or []}
            self._hpa_version = "v2" if "v2" in served else "v2beta2"
        return "autoscaling", self._hpa_version, "horizontalpodautoscalers"

    def get_hpa(self, ns: str, name: str) -> dict:
        group, version, plural = self._hpa()
        return self.custom.get_namespaced_custom_object(group, version, ns, plural, name)

    def create_hpa(self, ns: str, body: dict) -> dict:
        group, version, plural = self._hpa()
        return self.custom.create_namespaced_custom_object(
            group, version, ns, plural, dict(body, apiVersion=f"{group}/{version}", kind="HorizontalPodAutoscaler"))

    def patch_hpa(self, ns: str, name: str, patch: dict) -> None:
        group, version, plural = self._hpa()
        self.custom.patch_namespaced_custom_object(group, version, ns, plural, name, patch,
                                                   _content_type=MERGE)

    # The shadow step's objects (ops/rollout/shadow.py): created, replaced and deleted whole
    def create_configmap(self, ns: str, body: dict) -> None:
        self.core.create_namespaced_config_map(ns, body)

    def replace_configmap(self, ns: str, name: str, body: dict) -> None:
        self.core.replace_namespaced_config_map(name, ns, body)

    def get_configmap(self, ns: str, name: str) -> dict:
        return self.core.api_client.sanitize_for_serialization(
            self.core.read_namespaced_config_map(name, ns))

    def create_service(self, ns: str, body: dict) -> None:
        self.core.create_namespaced_service(ns, body)

    def delete(self, kind: str, ns: str, name: str) -> bool:
        """Deletes a ConfigMap, Service, Deployment or InferenceService (dependents in the
        background); False when there was none."""
        delete = {"ConfigMap": self.core.delete_namespaced_config_map,
                  "Service": self.core.delete_namespaced_service,
                  "Deployment": self.apps.delete_namespaced_deployment,
                  "InferenceService": lambda name, ns, **kw: self.custom.delete_namespaced_custom_object(
                      *ISVC[:2], ns, ISVC[2], name, **kw)}[kind]
        try:
            # not deserialised: what a delete answers differs by server version (Kubernetes 1.20
            # answers a Service delete with a Status, which this client cannot read as a Service)
            delete(name, ns, propagation_policy="Background", _preload_content=False).read()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # Service discovery for direct scraping
    def service_url(self, ns: str, service: str) -> str | None:
        """http://<clusterIP>:<http port> of a Service (None when it has no ClusterIP)."""
        svc = self.core.read_namespaced_service(service, ns)
        ip = svc.spec.cluster_ip
        if not ip or ip == "None":
            return None
        ports = svc.spec.ports or []
        port = next((p.port for p in ports if p.name in ("http", "http1")), ports[0].port if ports else 80)
        return f"http://{ip}:{port}"

    def endpoint_urls(self, ns: str, service: str, path: str = "/metrics") -> list[str]:
        """http://<pod-ip>:<port><path> for every ready address behind a Service."""
        endpoints = self.core.read_namespaced_endpoints(service, ns)
        urls = []
        for subset in endpoints.subsets or []:
            ports = subset.ports or []
            port = next((p.port for p in ports if p.name in ("http", "http1", "metrics")),
                        ports[0].port if ports else 80)
            for address in subset.addresses or []:
                urls.append(f"http://{address.ip}:{port}{path}")
        return urls


__all__ = ["ApiException", "Kube", "current_namespace", "load_config"]
