"""Prometheus metrics labelled with model name and version, so a canary can be compared with stable.

Label children are bound once per (protocol, outcome): a labels() lookup per request is measurable
at thousands of requests per second. Predicted values are counted a batch at a time (one
searchsorted per batch instead of one observe() per row).

With --workers N every process writes its samples to files in one directory and /metrics sums them
(prometheus_client's multiprocess mode), so a scrape covers every worker.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import exposition as prometheus_exposition
from prometheus_client.multiprocess import MultiProcessCollector

from don_core.contract import (BATCH_ROWS_METRIC, CLIENT_ERROR, DRIFT_WINDOW_SCORE_METRIC,
                               LATENCY_METRIC, MIRROR_OUTCOMES, MIRROR_REQUESTS_METRIC,
                               MODEL_INFO_METRIC, MODEL_LABEL, MODEL_READY_METRIC, OUTCOME_LABEL,
                               OUTCOMES, OUT_OF_DISTRIBUTION_METRIC, OUTLIER_SCORE_METRIC,
                               PREDICTED_PPB_METRIC, PROTOCOL_LABEL, RECORDS_DROPPED_METRIC,
                               RECORDS_SENDER_CPU_METRIC, RECORDS_SENT_METRIC, REFUSED_METRIC,
                               REQUESTS_METRIC, SCORED_ROWS_METRIC, SERVER_ERROR, SUCCESS,
                               VERSION_LABEL)

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
BATCH_ROWS = Histogram(BATCH_ROWS_METRIC, "Spectra per inference request",
                       [MODEL_LABEL, VERSION_LABEL], buckets=ROW_BUCKETS)
# Gauges across workers: the highest value of any worker (every worker serves the same version)
MODEL_INFO = Gauge(MODEL_INFO_METRIC, "The model version this process serves (value 1)",
                   [MODEL_LABEL, VERSION_LABEL, "family", "backend"], multiprocess_mode="max")
# Refused before reaching the model (no model/version labels: the guard answers for the process).
REFUSED = Counter(REFUSED_METRIC, "Requests refused by auth or rate limit, by outcome "
                  "(unauthenticated, auth_throttled, rate_limited, unavailable)",
                  [PROTOCOL_LABEL, OUTCOME_LABEL])
MODEL_READY = Gauge(MODEL_READY_METRIC, "1 when the model is loaded, verified and warmed up",
                    [MODEL_LABEL, VERSION_LABEL], multiprocess_mode="max")
OUT_OF_DISTRIBUTION = Counter(OUT_OF_DISTRIBUTION_METRIC,
                              "Spectra whose outlier score is above 1 (far from the training data)",
                              [MODEL_LABEL, VERSION_LABEL])
SCORED_ROWS = Counter(SCORED_ROWS_METRIC, "Spectra given an outlier score",
                      [MODEL_LABEL, VERSION_LABEL])
RECORDS_SENT = Counter(RECORDS_SENT_METRIC, "Prediction records delivered to the recorder",
                       [MODEL_LABEL, VERSION_LABEL])
PREDICTED_PPB = Histogram(PREDICTED_PPB_METRIC, "Predicted DON (ppb), for drift",
                          [MODEL_LABEL, VERSION_LABEL], buckets=PPB_BUCKETS)
OUTLIER_SCORE = Histogram(OUTLIER_SCORE_METRIC,
                          "Input outlier score per spectrum (above 1: out of distribution)",
                          [MODEL_LABEL, VERSION_LABEL], buckets=OUTLIER_BUCKETS)
RECORDS_SENDER_CPU = Counter(RECORDS_SENDER_CPU_METRIC,
                             "CPU time of the records sender thread (hashing, encoding, sending): "
                             "what recording costs beside the requests", [MODEL_LABEL, VERSION_LABEL])
# Per worker process (each keeps its own window); across workers the highest, like the alert wants.
DRIFT_WINDOW_SCORE = Gauge(DRIFT_WINDOW_SCORE_METRIC,
                           "Mean ln(Q / Q_limit) of the last rows against the training data's "
                           "(|shift| / limit; above 1 the inputs as a whole have moved)",
                           [MODEL_LABEL, VERSION_LABEL], multiprocess_mode="max")
RECORDS_DROPPED = Counter(RECORDS_DROPPED_METRIC,
                          "Prediction records lost (queue full, recorder down or refusing)",
                          [MODEL_LABEL, VERSION_LABEL, "reason"])

MIRROR_REQUESTS = Counter(MIRROR_REQUESTS_METRIC,
                          "Copies of requests mirrored to a shadow, by outcome (sent, dropped: "
                          "queue full, failed: shadow unreachable, slow or not 2xx)",
                          [MODEL_LABEL, VERSION_LABEL, OUTCOME_LABEL])


def mirror_counters(model: str, version: str) -> dict:
    """outcome -> the bound child of don_mirror_requests_total for this model version."""
    return {outcome: MIRROR_REQUESTS.labels(model, version, outcome) for outcome in MIRROR_OUTCOMES}


class BatchHistogram:
    """One labelled child of a Histogram, filled a whole batch at a time: one searchsorted and one
    increment per bucket instead of n observe(). prometheus_client has no batch observe, so this
    adds to the child's own bucket and sum values: its samples stay the Histogram's, in one
    process and in multiprocess mode alike."""

    def __init__(self, histogram: Histogram, model: str, version: str):
        child = histogram.labels(model, version)
        self._bounds = np.asarray(child._upper_bounds[:-1])  # the last one is +Inf
        self._buckets, self._sum = child._buckets, child._sum  # per bucket, not cumulative

    def observe(self, batch: np.ndarray) -> None:
        idx = np.searchsorted(self._bounds, batch, side="left")  # le: value <= bound
        for bucket, count in zip(self._buckets, np.bincount(idx, minlength=len(self._buckets))):
            if count:
                bucket.inc(int(count))
        self._sum.inc(float(batch.sum()))


class ServingMetrics:
    """The metrics of one served model version."""

    def __init__(self, model: str, version: str, family: str, backend: str):
        self.model, self.version = model, version
        MODEL_INFO.labels(model, version, family, backend).set(1)
        self._requests = {(p, o): REQUESTS.labels(model, version, p, o)
                          for p in ("v1", "v2", "grpc") for o in OUTCOMES}
        self._latency = {p: LATENCY.labels(model, version, p) for p in ("v1", "v2", "grpc")}
        self._rows = BATCH_ROWS.labels(model, version)
        self.predictions = BatchHistogram(PREDICTED_PPB, model, version)
        self.outlier_scores = BatchHistogram(OUTLIER_SCORE, model, version)
        self._flagged = OUT_OF_DISTRIBUTION.labels(model, version)
        self._scored = SCORED_ROWS.labels(model, version)
        self._window_score = None  # bound once the window is full: no value before there is one
        self.records_sent = RECORDS_SENT.labels(model, version)
        self.records_sender_cpu = RECORDS_SENDER_CPU.labels(model, version)
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

    def drift_window(self, score: float | None) -> None:
        if score is None:
            return
        if self._window_score is None:
            self._window_score = DRIFT_WINDOW_SCORE.labels(self.model, self.version)
        self._window_score.set(score)

    def set_ready(self, ready: bool) -> None:
        MODEL_READY.labels(self.model, self.version).set(1 if ready else 0)


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch


def share_across_workers() -> str:
    """Multiprocess mode for this process and the workers it spawns (they inherit the variable),
    in a fresh directory removed at exit. Call before any labelled metric is first used."""
    path = tempfile.mkdtemp(prefix="don-metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    # prometheus_client picks its value class when imported, and KServe imported it already
    values.ValueClass = values.get_value_class()
    atexit.register(shutil.rmtree, path, True)
    return path


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The /metrics body and its content type: this process's registry, or with workers the
    samples of every process."""
    registry = REGISTRY
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    encoder, content_type = prometheus_exposition.choose_encoder(accept)
    return encoder(registry), content_type


def count_refusal(protocol: str, outcome: str) -> None:
    REFUSED.labels(protocol, outcome).inc()


def outcome_of(status: int) -> str:
    if status < 400:
        return SUCCESS
    return CLIENT_ERROR if status < 500 else SERVER_ERROR
