"""Which source the success rate and latency of a window come from (spec.metrics.source).

- Direct: scrape the model servers' /metrics (endpoints.metrics_urls); the counters of the last
  scrape live in the rollout's status (`snapshot`), so a window is the difference to them.
- Prometheus: ask Prometheus for the increase over the analysis interval; nothing is kept.
"""
from __future__ import annotations

from ops.rollout import endpoints
from ops.rollout import metrics as metrics_mod
from ops.rollout.kube import ApiException, Kube
from ops.rollout.routers import Router

FAULTS = (metrics_mod.MetricsError, ApiException)  # what makes one side's figures an error


class DirectSource:
    def __init__(self, kube: Kube, router: Router):
        self.kube, self.router, self.spec = kube, router, router.spec

    def _scrape(self, side: str, base_url: str) -> dict:
        metrics, timeout = self.spec.metrics, self.spec.endpoints.timeout_s
        return {url: metrics_mod.scrape(url, self.spec.model_name, metrics.requests_metric,
                                        metrics.latency_metric, timeout)
                for url in endpoints.metrics_urls(self.kube, self.router, side, base_url)}

    def baseline(self, urls: tuple[str, str]) -> dict:
        """Counters at the start, so the first window counts only requests made during the rollout."""
        snapshot = {}
        for side, url in zip(endpoints.SIDES, urls):
            try:
                snapshot[side] = self._scrape(side, url)
            except FAULTS:
                pass  # not up yet: its first window starts at its own start
        return snapshot

    def figures(self, side: str, base_url: str, version, snapshot: dict) -> dict:
        """The window since snapshot[side]; snapshot[side] becomes this scrape."""
        current = self._scrape(side, base_url)
        figures = metrics_mod.summarise(metrics_mod.window(current, snapshot.get(side)))
        snapshot[side] = current
        return figures


class PrometheusSource:
    def __init__(self, router: Router):
        spec = router.spec
        self.spec = spec
        self.source = metrics_mod.PrometheusSource(
            spec.metrics.prometheus_url, spec.metrics.requests_metric,
            spec.metrics.latency_metric, spec.endpoints.timeout_s)

    def baseline(self, urls: tuple[str, str]) -> dict:
        return {}  # Prometheus keeps the history

    def figures(self, side: str, base_url: str, version, snapshot: dict) -> dict:
        return self.source.figures(self.spec.model_name, version, self.spec.interval_s)


def for_spec(kube: Kube, router: Router):
    if router.spec.metrics.source == "Prometheus":
        return PrometheusSource(router)
    return DirectSource(kube, router)
