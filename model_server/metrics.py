"""Prometheus metrics labelled with model name and version, so a canary can be compared with stable.

Label children are bound once per (protocol, outcome): a labels() lookup per request is measurable
at thousands of requests per second. Predicted values go into a numpy-backed histogram (one
searchsorted per batch instead of one observe() per row).
"""
from __future__ import annotations

import threading

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

from don_core.contract import (CLIENT_ERROR, LATENCY_METRIC, MODEL_LABEL, OUTCOME_LABEL, OUTCOMES,
                               PROTOCOL_LABEL, REQUESTS_METRIC, SERVER_ERROR, SUCCESS, VERSION_LABEL)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# ppb: dense around the 1,000 and 5,000 ppb decision thresholds
PPB_BUCKETS = (0.0, 50.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2500.0, 5000.0, 7500.0,
               10000.0, 25000.0, 50000.0, 100000.0)
ROW_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# outlier score (max of T2 and Q over their training 99th percentiles): above 1 is flagged
OUTLIER_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)

REQUESTS = Counter(REQUESTS_METRIC, "Inference requests by outcome",
                   [MODEL_LABEL, VERSION_LABEL, PROTOCOL_LABEL, OUTCOME_LABEL])
LATENCY = Histogram(LATENCY_METRIC, "Inference request latency (server side)",
                    [MODEL_LABEL, VERSION_LABEL, PROTOCOL_LABEL], buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("don_batch_rows", "Spectra per inference request",
                       ["model", "version"], buckets=ROW_BUCKETS)
MODEL_INFO = Gauge("don_model_info", "The model version this process serves (value 1)",
                   ["model", "version", "family", "backend"])
# Refused before reaching the model (no model/version labels: the guard answers for the process).
REFUSED = Counter("don_requests_refused", "Requests refused by auth or rate limit, by outcome "
                  "(unauthenticated, auth_throttled, rate_limited, unavailable)",
                  ["protocol", "outcome"])
MODEL_READY = Gauge("don_model_ready", "1 when the model is loaded, verified and warmed up",
                    ["model", "version"])
OUT_OF_DISTRIBUTION = Counter("don_out_of_distribution_rows",
                              "Spectra whose outlier score is above 1 (far from the training data)",
                              ["model", "version"])
SCORED_ROWS = Counter("don_drift_scored_rows", "Spectra given an outlier score",
                      ["model", "version"])
RECORDS_SENT = Counter("don_records_sent", "Prediction records delivered to the recorder",
                       ["model", "version"])
RECORDS_DROPPED = Counter("don_records_dropped",
                          "Prediction records lost (queue full, recorder down or refusing)",
                          ["model", "version", "reason"])


class BatchHistogram:
    """A histogram filled a whole batch at a time (one searchsorted instead of n observe())."""

    def __init__(self, name: str, documentation: str, buckets: tuple, model: str, version: str):
        self._name, self._doc, self._buckets = name, documentation, buckets
        self._labels = [model, version]
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()  # gRPC handlers run in threads

    def observe(self, ppb: np.ndarray) -> None:
        idx = np.searchsorted(self._buckets, ppb, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        total = float(ppb.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self):
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        family = HistogramMetricFamily(self._name, self._doc, labels=["model", "version"])
        buckets = [(str(b), int(c)) for b, c in zip(self._buckets, cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        family.add_metric(self._labels, buckets, total)
        yield family


class ServingMetrics:
    """The metrics of one served model version."""

    def __init__(self, model: str, version: str, family: str, backend: str):
        self.model, self.version = model, version
        MODEL_INFO.labels(model, version, family, backend).set(1)
        self._requests = {(p, o): REQUESTS.labels(model, version, p, o)
                          for p in ("v1", "v2", "grpc") for o in OUTCOMES}
        self._latency = {p: LATENCY.labels(model, version, p) for p in ("v1", "v2", "grpc")}
        self._rows = BATCH_ROWS.labels(model, version)
        self.predictions = BatchHistogram("don_prediction_ppb", "Predicted DON (ppb), for drift",
                                          PPB_BUCKETS, model, version)
        self.outlier_scores = BatchHistogram(
            "don_outlier_score", "Input outlier score per spectrum (above 1: out of distribution)",
            OUTLIER_BUCKETS, model, version)
        _register_histograms(self.predictions, self.outlier_scores)
        self._flagged = OUT_OF_DISTRIBUTION.labels(model, version)
        self._scored = SCORED_ROWS.labels(model, version)
        self.records_sent = RECORDS_SENT.labels(model, version)
        self.records_dropped = {reason: RECORDS_DROPPED.labels(model, version, reason)
                                for reason in ("queue_full", "send_failed")}

    def request(self, protocol: str, outcome: str, seconds: float) -> None:
        self._requests[(protocol, outcome)].inc()
        self._latency[protocol].observe(seconds)

    def batch(self, ppb: np.ndarray) -> None:
        self._rows.observe(len(ppb))
        self.predictions.observe(ppb)

    def outliers(self, scores: np.ndarray, flagged: int) -> None:
        self.outlier_scores.observe(scores)
        self._scored.inc(len(scores))
        if flagged:
            self._flagged.inc(flagged)

    def set_ready(self, ready: bool) -> None:
        MODEL_READY.labels(self.model, self.version).set(1 if ready else 0)


_REGISTERED: list[BatchHistogram] = []


def _register_histograms(*histograms: BatchHistogram) -> None:
    """One set of batch histograms per process: a model loaded again replaces the previous."""
    while _REGISTERED:
        REGISTRY.unregister(_REGISTERED.pop())
    for histogram in histograms:
        REGISTRY.register(histogram)
        _REGISTERED.append(histogram)


def count_refusal(protocol: str, outcome: str) -> None:
    REFUSED.labels(protocol, outcome).inc()


def outcome_of(status: int) -> str:
    if status < 400:
        return SUCCESS
    return CLIENT_ERROR if status < 500 else SERVER_ERROR
