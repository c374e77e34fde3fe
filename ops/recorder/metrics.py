"""The recorder's Prometheus metrics: its own counters and the live-accuracy gauges (computed from
the database when scraped, cached briefly). Names here are the ones the chart's alerts use."""
from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from ops.recorder import accuracy

EVENTS = "don_recorder_events"                  # _total{type, outcome}
RECORDS = "don_recorder_records"                # _total{outcome=stored|duplicate}
RECORDS_DELETED = "don_recorder_records_deleted"  # _total{reason=retention|size}
UNPAIRED_DROPPED = "don_recorder_kserve_unpaired_dropped"  # _total
LAB_RESULTS = "don_recorder_lab_results"        # _total{outcome=stored|duplicate|rejected}
LIVE_PREFIX = "don_live_"
LIVE_MATCHED = LIVE_PREFIX + "matched_samples"
LIVE_FALSE_ACCEPT = LIVE_PREFIX + "false_accept_rate"
LIVE_GAUGES = {  # metric name -> (key in accuracy.figures, help)
    LIVE_PREFIX + "mae_log1p": ("maeLog1p", "MAE of log1p(ppb) against lab results"),
    LIVE_PREFIX + "r2_log1p": ("r2Log1p", "R2 of log1p(ppb) against lab results"),
}
LIVE_THRESHOLD_GAUGES = {
    LIVE_FALSE_ACCEPT: ("falseAcceptRate", "Share of contaminated samples (lab > limit) predicted at or below it"),
    LIVE_PREFIX + "false_reject_rate": ("falseRejectRate", "Share of clean samples predicted above the limit"),
    LIVE_PREFIX + "balanced_accuracy": ("balancedAccuracy", "Balanced accuracy of the accept/reject decision"),
}


class LiveAccuracyCollector:
    def __init__(self, engine, cache_seconds: float = 30.0):
        self.engine, self.cache_seconds = engine, cache_seconds
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def report(self) -> dict:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.cache_seconds:
                self._cached = (time.monotonic(), accuracy.report(self.engine))
            return self._cached[1]

    def collect(self):
        results = self.report()["results"]
        labels = ["model", "version", "window"]
        matched = GaugeMetricFamily(LIVE_MATCHED, "Lab results matched to predictions", labels=labels)
        plain = {name: GaugeMetricFamily(name, text, labels=labels) for name, (_, text) in LIVE_GAUGES.items()}
        per_limit = {name: GaugeMetricFamily(name, text, labels=labels + ["threshold_ppb"])
                     for name, (_, text) in LIVE_THRESHOLD_GAUGES.items()}
        for r in results:
            values = [r["model"], str(r["version"]), r["window"]]
            matched.add_metric(values, r["matched"])
            for name, (key, _) in LIVE_GAUGES.items():
                if r[key] is not None:
                    plain[name].add_metric(values, r[key])
            for limit, figures in r["thresholds"].items():
                for name, (key, _) in LIVE_THRESHOLD_GAUGES.items():
                    if figures[key] is not None:
                        per_limit[name].add_metric(values + [limit], figures[key])
        yield matched
        yield from plain.values()
        yield from per_limit.values()


class RecorderMetrics:
    def __init__(self, engine, cache_seconds: float = 30.0):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(EVENTS, "CloudEvents received", ["type", "outcome"], registry=r)
        self.records = Counter(RECORDS, "Prediction records received", ["outcome"], registry=r)
        self.deleted = Counter(RECORDS_DELETED, "Rows deleted by the retention job", ["reason"], registry=r)
        self.unpaired = Counter(UNPAIRED_DROPPED, "KServe request/response events dropped without their pair",
                                registry=r)
        self.lab = Counter(LAB_RESULTS, "Lab result rows received", ["outcome"], registry=r)
        self.retention_runs = Counter("don_recorder_retention_runs", "Retention job runs", ["outcome"], registry=r)
        self.pending = Gauge("don_recorder_kserve_pending_events", "KServe events waiting for their pair",
                             registry=r)
        self.live = LiveAccuracyCollector(engine, cache_seconds)
        r.register(self.live)
