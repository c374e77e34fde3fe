"""Prediction records: what the model server emits for every prediction and the recorder stores.

Records travel as CloudEvents over HTTP in binary mode (``ce-*`` headers, JSON body), the way
KServe's payload logger sends them, so a KServe ``logger`` sink and ours are interchangeable: the
recorder also accepts KServe's request/response events. One of our events carries a batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import MISSING, dataclass, fields

import numpy as np

CLOUDEVENTS_SPEC_VERSION = "1.0"
# Our batched records; body: {"records": [<PredictionRecord as dict>, ...]}.
RECORDS_EVENT_TYPE = "io.don-predictor.prediction.records"
# What KServe's payload logger sends (paired by ce-id).
KSERVE_REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"
KSERVE_RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"


@dataclass(frozen=True)
class PredictionRecord:
    """One predicted row. ``time`` is RFC 3339 UTC; ``row`` is the row's index in its request."""

    time: str
    model: str
    version: int
    request_id: str
    row: int
    predicted_ppb: float
    spectrum_sha256: str
    trace_id: str | None = None
    caller: str | None = None
    sample_id: str | None = None
    outlier_score: float | None = None
    out_of_distribution: bool | None = None
    spectrum: list[float] | None = None  # only when the server is told to keep spectra

    def to_dict(self) -> dict:
        # getattr, not dataclasses.asdict: asdict deep-copies every value (about 20 us a record
        # against 1 us), and the model server builds one record per predicted row
        return {name: value for name in _FIELD_NAMES if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, data: dict) -> PredictionRecord:
        """Build a record from a decoded event; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError("a record must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown record field(s): {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if missing:
            raise ValueError(f"record is missing field(s): {', '.join(missing)}")
        return cls(**data)


_FIELD_NAMES = tuple(f.name for f in fields(PredictionRecord))


def spectrum_sha256(row: np.ndarray) -> str:
    """Hash of one spectrum as float32 little-endian bytes (the served dtype), so the same
    spectrum sent over V1 JSON, V2 JSON or binary tensors hashes the same."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


# Counters the model server exports about records and input drift (Prometheus appends _total).
# The chart's alerts and dashboard (charts/don-predictor/templates/monitoring.yaml) query them.
RECORDS_DROPPED_METRIC = "don_records_dropped"  # records that could not be delivered to the recorder
OUT_OF_DISTRIBUTION_METRIC = "don_out_of_distribution_rows"  # {model, version}: rows flagged out of distribution
