"""How the analysis reaches the stable and the canary model server.

`spec.endpoints.*Url` when given (tests, or Services of your own), else the engine's Services
(routers.Router.services: KServe's `<target>-predictor` / `<target>-predictor-canary`, Knative's
tag routes `prev-<target>-predictor` / `latest-<target>-predictor`, the chart's
`<target>-stable` / `<target>-canary`) by cluster DNS. Metrics are scraped from every ready
address behind those Services (or from `spec.endpoints.*MetricsUrl`).
"""
from __future__ import annotations

from ops.rollout.kube import ApiException, Kube
from ops.rollout.metrics import MetricsError
from ops.rollout.routers import Router

SIDES = ("stable", "canary")


def service_of(url: str) -> str:
    return url.split("://", 1)[1].split(".", 1)[0].split(":", 1)[0].split("/", 1)[0]


def base_urls(router: Router) -> tuple[str, str]:
    """Base URLs of the stable and the canary model server for V1 calls."""
    endpoints, ns = router.spec.endpoints, router.ns
    stable, canary = router.services()
    return (endpoints.get("stableUrl") or f"http://{stable}.{ns}.svc",
            endpoints.get("canaryUrl") or f"http://{canary}.{ns}.svc")


def direct_urls(kube: Kube, router: Router, urls: tuple[str, str]) -> tuple[str, ...]:
    """The engine's own Services by ClusterIP (no cluster DNS needed); other URLs as they are."""
    if not router.own_services:
        return urls
    found = []
    for side, url in zip(SIDES, urls):
        if router.spec.endpoints.get(f"{side}Url"):
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
    if not router.own_services or endpoints.get("canaryUrl") or endpoints.get("canaryMetricsUrl"):
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
    if endpoints.get(f"{side}MetricsUrl"):
        return [endpoints[f"{side}MetricsUrl"]]
    if endpoints.get(f"{side}Url"):
        return [endpoints[f"{side}Url"].rstrip("/") + "/metrics"]
    urls = kube.endpoint_urls(router.ns, service_of(base_url))
    if not urls:
        raise MetricsError(f"Service {service_of(base_url)} has no ready endpoints")
    return urls
