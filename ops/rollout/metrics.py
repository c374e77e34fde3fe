"""Request outcomes and latency of one model version, from Prometheus metrics.

Two sources:
- Direct: scrape the model servers' `/metrics` text and keep the raw counters; a window is the
  difference between two scrapes (the previous one lives in the rollout's status, so a restarted
  operator computes the same window). A counter that went down means the server restarted.
- Prometheus: ask a Prometheus server for the increase over the window.
Client errors (4xx: the caller sent a bad request) say nothing about the model and are left out
of the success rate.
"""
from __future__ import annotations

import math

import requests
from prometheus_client.parser import text_string_to_metric_families

# The names the model server puts on its metrics: don_requests_total{model,version,protocol,outcome},
# don_request_duration_seconds histogram {model,version,protocol}.
from don_core.contract import CLIENT_ERROR, MODEL_LABEL, OUTCOME_LABEL, SUCCESS, VERSION_LABEL


class MetricsError(RuntimeError):
    """Metrics that cannot be read; the message names the source."""


def empty_counters() -> dict:
    return {"outcomes": {}, "buckets": {}}


def parse_counters(text: str, model: str, requests_metric: str, latency_metric: str,
                   version: str | None = None) -> dict:
    """Counters for `model` (and `version` when given) from Prometheus exposition text."""
    counters = empty_counters()
    requests_base = requests_metric[:-len("_total")] if requests_metric.endswith("_total") \
        else requests_metric
    for family in text_string_to_metric_families(text):
        if family.name not in (requests_base, latency_metric):
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get(MODEL_LABEL) != model:
                continue
            if version is not None and labels.get(VERSION_LABEL) != str(version):
                continue
            if family.name == requests_base and sample.name == requests_base + "_total":
                outcome = labels.get(OUTCOME_LABEL, SUCCESS)
                counters["outcomes"][outcome] = counters["outcomes"].get(outcome, 0.0) + sample.value
            elif family.name == latency_metric and sample.name == latency_metric + "_bucket":
                le = labels["le"]
                counters["buckets"][le] = counters["buckets"].get(le, 0.0) + sample.value
    return counters


def scrape(url: str, model: str, requests_metric: str, latency_metric: str,
           timeout: float = 10.0, headers: dict | None = None) -> dict:
    try:
        response = requests.get(url, timeout=timeout, headers=headers or {})
        response.raise_for_status()
    except requests.RequestException as exc:
        raise MetricsError(f"cannot scrape {url}: {exc}") from None
    return parse_counters(response.text, model, requests_metric, latency_metric)


def _minus(current: dict, previous: dict | None) -> dict:
    """current - previous for one flat counter map; a decrease means a restart: count from zero."""
    previous = previous or {}
    if any(current.get(k, 0.0) < v for k, v in previous.items()):
        return dict(current)
    return {k: v - previous.get(k, 0.0) for k, v in current.items()}


def window(current: dict[str, dict], previous: dict[str, dict] | None) -> dict:
    """Sum over sources (scraped URLs) of what each counted since the previous snapshot."""
    total = empty_counters()
    previous = previous or {}
    for source, counters in current.items():
        before = previous.get(source) or {}
        for part in ("outcomes", "buckets"):
            for key, value in _minus(counters[part], before.get(part)).items():
                total[part][key] = total[part].get(key, 0.0) + value
    return total


def summarise(counters: dict) -> dict:
    """requests, successRate (None without requests) and p99 latency in ms (None without data)."""
    outcomes = counters["outcomes"]
    judged = {k: v for k, v in outcomes.items() if k != CLIENT_ERROR}
    total = sum(judged.values())
    success_rate = (judged.get(SUCCESS, 0.0) / total) if total > 0 else None
    p99 = quantile(0.99, counters["buckets"])
    return {"requests": int(round(total)), "successRate": success_rate,
            "p99LatencyMs": None if p99 is None else p99 * 1000.0}


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """Quantile from cumulative histogram buckets, interpolated as PromQL's histogram_quantile."""
    items = sorted(((math.inf if le in ("+Inf", "inf") else float(le)), count)
                   for le, count in buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    rank = q * items[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in items:
        if count >= rank:
            if math.isinf(upper):
                return lower_bound  # the highest finite bucket, as Prometheus does
            if count == lower_count:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper, count
    return lower_bound


class PrometheusSource:
    """Window figures for one model version from a Prometheus server's HTTP API."""

    def __init__(self, url: str, requests_metric: str, latency_metric: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.requests_metric = requests_metric
        self.latency_metric = latency_metric
        self.timeout = timeout

    def _query(self, promql: str) -> list:
        try:
            response = requests.get(f"{self.url}/api/v1/query", params={"query": promql},
                                    timeout=self.timeout)
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise MetricsError(f"Prometheus query at {self.url} failed: {exc}") from None
        if body.get("status") != "success":
            raise MetricsError(f"Prometheus query failed: {body.get('error', body)}")
        return body["data"]["result"]

    def figures(self, model: str, version: str | None, window_s: int) -> dict:
        selector = f'{MODEL_LABEL}="{model}"'
        if version is not None:
            selector += f',{VERSION_LABEL}="{version}"'
        outcomes = {}
        for row in self._query(f"sum by ({OUTCOME_LABEL}) (increase({self.requests_metric}"
                               f"{{{selector}}}[{window_s}s]))"):
            outcomes[row["metric"].get(OUTCOME_LABEL, SUCCESS)] = float(row["value"][1])
        figures = summarise({"outcomes": outcomes, "buckets": {}})
        rows = self._query(f"histogram_quantile(0.99, sum by (le) (rate({self.latency_metric}"
                           f"_bucket{{{selector}}}[{window_s}s])))")
        value = float(rows[0]["value"][1]) if rows else math.nan
        figures["p99LatencyMs"] = None if math.isnan(value) else value * 1000.0
        return figures
