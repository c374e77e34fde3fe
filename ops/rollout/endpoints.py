"""How the analysis reaches the stable and the canary model server.

`spec.endpoints.*Url` when given (tests, or Services of your own), else the engine's Services
(routers.Router.services: KServe's `<target>-predictor` / `<target>-predictor-canary`, Knative's
tag routes `prev-<target>-predictor` / `latest-<target>-predictor`, the chart's
`<target>-stable` / `<target>-canary`) by cluster DNS. Metrics are scraped from every ready
address behind those Services (or from `spec.endpoints.*MetricsUrl`).
"""
from __future__ import annotations

import requests

from don_core.contract import VERSION_HEADER
from ops.rollout.kube import ApiException, Kube
from ops.rollout.metrics import MetricsError
from ops.rollout.routers import Router
from ops.rollout.spec import SIDES


def service_of(url: str) -> str:
    return url.split("://", 1)[1].split(".", 1)[0].split(":", 1)[0].split("/", 1)[0]


def dns_url(ns: str, service: str) -> str:
    """A Service's base URL by cluster DNS."""
    return f"http://{service}.{ns}.svc"


def base_urls(router: Router) -> tuple[str, str]:
    """Base URLs of the stable and the canary model server for V1 calls."""
    given, ns = router.spec.endpoints.urls, router.ns
    return tuple(given.get(side) or dns_url(ns, service)
                 for side, service in zip(SIDES, router.services()))


def direct_urls(kube: Kube, router: Router, urls: tuple[str, str]) -> tuple[str, ...]:
    """The engine's own Services by ClusterIP (no cluster DNS needed); other URLs as they are."""
    if not router.own_services:
        return urls
    found = []
    for side, url in zip(SIDES, urls):
        if side in router.spec.endpoints.urls:
            found.append(url)
            continue
        try:
            found.append(kube.service_url(router.ns, service_of(url)) or url)
        except ApiException:
            found.append(url)
    return tuple(found)


def canary_not_ready(kube: Kube, router: Router, canary_url: str) -> str | None:
    """Why no traffic can reach the canary yet (its Service has no ready pod), or None. Only for
    the engine's own canary Service; explicit URLs are taken as they are."""
    endpoints = router.spec.endpoints
    if not router.own_services or "canary" in endpoints.urls or "canary" in endpoints.metrics_urls:
        return None
    service = service_of(canary_url)
    try:
        ready = kube.endpoint_urls(router.ns, service)
    except ApiException as exc:
        return f"no traffic reached the canary: Service {service}: {exc.status} {exc.reason}"
    if not ready:
        return f"no traffic reached the canary: Service {service} has no ready pods"
    return None


def metrics_urls(kube: Kube, router: Router, side: str, base_url: str) -> list[str]:
    """Where one side's /metrics are scraped: the explicit URL, else every ready pod."""
    endpoints = router.spec.endpoints
    if side in endpoints.metrics_urls:
        return [endpoints.metrics_urls[side]]
    if side in endpoints.urls:
        return [endpoints.urls[side].rstrip("/") + "/metrics"]
    urls = kube.endpoint_urls(router.ns, service_of(base_url))
    if not urls:
        raise MetricsError(f"Service {service_of(base_url)} has no ready endpoints")
    return urls


def serving_urls(kube: Kube, router: Router) -> list[str]:
    """Base URLs of every server that answers callers of the live version: `spec.endpoints.stableUrl`
    when given, else each ready pod behind the engine's own Service, else the engine's Service."""
    given = router.spec.endpoints.urls
    if "stable" in given:
        return [given["stable"]]
    service = router.live_service()
    if router.own_services:
        return kube.endpoint_urls(router.ns, service, path="")
    return [dns_url(router.ns, service)]


def not_serving(kube: Kube, router: Router, version: int, timeout: float) -> str | None:
    """Why `version` cannot be verified as what callers get (None once it is): the engine's wanted
    replicas are not all ready, or a ready server is not ready for the model or answers as another
    version (its X-Model-Version on the open readiness path /v2/models/<name>/ready)."""
    try:
        problem = router.replicas_not_ready()
        urls = [] if problem else serving_urls(kube, router)
    except ApiException as exc:
        return f"cannot read the serving objects: {exc.status} {exc.reason}"
    if problem:
        return problem
    if not urls:
        return f"Service {router.live_service()} has no ready pods"
    model = router.spec.model_name
    for url in urls:
        where = f"{url.rstrip('/')}/v2/models/{model}/ready"
        try:
            answer = requests.get(where, timeout=timeout)
        except requests.RequestException as exc:
            return f"{where}: {type(exc).__name__}"
        served = answer.headers.get(VERSION_HEADER)
        if answer.status_code != 200:
            return f"{where} answered {answer.status_code}: {answer.text[:200]}"
        if served != str(version):
            return f"{where} answers as version {served}, not {version}"
    return None
