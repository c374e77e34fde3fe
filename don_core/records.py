"""Prediction records: what the model server emits for every prediction and the recorder stores.

Records travel as CloudEvents over HTTP in binary mode (``ce-*`` headers, JSON body), the way
KServe's payload logger sends them, so a KServe ``logger`` sink and ours are interchangeable: the
recorder also accepts KServe's request/response events. One of our events carries a batch, in
one of two bodies, both read by `record_dicts` (the one reader):

* row form, ``{"records": [<PredictionRecord as dict>, ...]}``: easy to write by hand or from
  another tool;
* column form (what the model server sends, `records_body`): ``{"model": ..., "version": ...,
  "requests": {<column>: [one value per request], ...}, "rows": {<column>: [one value per row],
  ...}}``, where ``requests.rows`` says how many rows each request has (its rows are the next
  ones, in order). A column holds the same values as the record field of its name. It is built
  straight from the server's numpy arrays with no per-row Python object, 2-3 times cheaper to
  build and half the bytes of the row form (benchmarks/records.py).
"""
from __future__ import annotations

import hashlib
import types
import typing
from dataclasses import MISSING, dataclass, fields

import numpy as np

CLOUDEVENTS_SPEC_VERSION = "1.0"
# Our batched records; body: the row or the column form above.
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
    # True for a shadow's answer to a mirrored copy of a request: recorded, never returned to the
    # caller; the stable's record of the same request has the same request_id (and sample ids).
    shadow: bool | None = None
    sample_id: str | None = None
    outlier_score: float | None = None
    out_of_distribution: bool | None = None
    spectrum: list[float] | None = None  # only when the server is told to keep spectra

    def to_dict(self) -> dict:
        # getattr, not dataclasses.asdict: asdict deep-copies every value (about 20 us a record
        # against 1 us)
        return {name: value for name in RECORD_FIELDS if (value := getattr(self, name)) is not None}

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


# The record schema, one home: the server writes it, the recorder checks it and stores it as the
# columns of its `predictions` table (ops/recorder/db.py), in this order.
RECORD_FIELDS = tuple(f.name for f in fields(PredictionRecord))
REQUIRED_FIELDS = tuple(f.name for f in fields(PredictionRecord) if f.default is MISSING)


def _base_type(hint) -> type:
    """str for `str | None`, list for `list[float] | None`."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


FIELD_TYPES: dict[str, type] = {name: _base_type(hint) for name, hint in
                                typing.get_type_hints(PredictionRecord).items()}
# The most characters a text field may hold (the recorder's column widths and its checks; a
# model is a Kubernetes object name).
TEXT_LIMITS = {"model": 253, "request_id": 200, "spectrum_sha256": 64, "trace_id": 64,
               "caller": 200, "sample_id": 200}
assert {name for name, kind in FIELD_TYPES.items() if kind is str} - {"time"} == set(TEXT_LIMITS)

# The column form: which record fields are given once per request, which once per row (the rest,
# EVENT_FIELDS, once per event; `row` is implicit: the index within the request).
EVENT_FIELDS = ("model", "version")
REQUEST_COLUMNS = ("time", "request_id", "trace_id", "caller", "shadow")
ROW_COLUMNS = tuple(name for name in RECORD_FIELDS
                    if name not in EVENT_FIELDS + REQUEST_COLUMNS + ("row",))
_ROWS_PER_REQUEST = "rows"
_REQUIRED_COLUMNS = set(REQUIRED_FIELDS) - set(EVENT_FIELDS) - {"row"}


def records_body(model: str, version: int, requests: dict, rows: dict) -> dict:
    """The column form of an event body. `requests` maps REQUEST_COLUMNS to one value per request
    plus "rows" (rows per request); `rows` maps ROW_COLUMNS to one value per row; an optional
    column may be left out. Values may be numpy arrays (the sender serializes them as JSON lists:
    orjson's OPT_SERIALIZE_NUMPY)."""
    for given, allowed in ((requests, REQUEST_COLUMNS + (_ROWS_PER_REQUEST,)), (rows, ROW_COLUMNS)):
        unknown = set(given) - set(allowed)
        if unknown:
            raise ValueError(f"unknown column(s): {', '.join(sorted(unknown))}")
    return {"model": model, "version": version, "requests": requests, "rows": rows}


def record_count(doc) -> int:
    """How many records a decoded event body holds (to refuse an oversized one before reading
    it); ValueError when it is neither form."""
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        return len(doc["records"])
    if isinstance(doc, dict) and isinstance(doc.get("rows"), dict) and \
            isinstance(doc["rows"].get("predicted_ppb"), list):
        return len(doc["rows"]["predicted_ppb"])
    raise ValueError('body must be a JSON object {"records": [...]} or the column form '
                     '{"model", "version", "requests": {...}, "rows": {"predicted_ppb": [...], ...}}')


def record_dicts(doc) -> list:
    """The records of a decoded event body, either form, each as the dict PredictionRecord.from_dict
    reads (the row form's items as they came: from_dict checks them). ValueError naming the column
    for a malformed column form."""
    count = record_count(doc)
    if "records" in doc and isinstance(doc["records"], list):
        return doc["records"]
    extra = set(doc) - {"model", "version", "requests", "rows"}
    if extra:
        raise ValueError(f"unknown body field(s): {', '.join(sorted(extra))}")
    requests, rows = doc.get("requests"), doc["rows"]
    if not isinstance(requests, dict):
        raise ValueError('"requests" must be an object of columns')
    sizes = requests.get(_ROWS_PER_REQUEST)
    if not isinstance(sizes, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
        raise ValueError('requests.rows must be a list of row counts (integers >= 0)')
    if sum(sizes) != count:
        raise ValueError(f"requests.rows add up to {sum(sizes)} rows, rows.predicted_ppb has {count}")
    columns = {}
    for part, given, allowed, length in (("requests", requests, REQUEST_COLUMNS + (_ROWS_PER_REQUEST,), len(sizes)),
                                         ("rows", rows, ROW_COLUMNS, count)):
        unknown = set(given) - set(allowed)
        if unknown:
            raise ValueError(f"unknown {part} column(s): {', '.join(sorted(unknown))}")
        for name in allowed:
            values = given.get(name)
            if values is None:
                if name in _REQUIRED_COLUMNS:
                    raise ValueError(f"{part}.{name} is missing")
                continue
            if not isinstance(values, list) or len(values) != length:
                raise ValueError(f"{part}.{name} must be a list of {length} values (one per "
                                 f"{part[:-1]})")
            columns[name] = values
    per_request = [name for name in REQUEST_COLUMNS if name in columns]
    per_row = [name for name in ROW_COLUMNS if name in columns]
    head = {name: doc.get(name) for name in EVENT_FIELDS}
    out, at = [], 0
    for r, n in enumerate(sizes):
        shared = {**head, **{name: columns[name][r] for name in per_request}}
        for i in range(n):
            out.append({**shared, "row": i, **{name: columns[name][at + i] for name in per_row}})
        at += n
    return out


def spectrum_sha256(row: np.ndarray) -> str:
    """Hash of one spectrum as float32 little-endian bytes (the served dtype), so the same
    spectrum sent over V1 JSON, V2 JSON or binary tensors hashes the same."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def spectra_sha256(matrix: np.ndarray) -> list[str]:
    """spectrum_sha256 of every row of a 2-D batch: one conversion for the batch, then each row's
    bytes hashed in place (no per-row array or bytes copy)."""
    data = np.ascontiguousarray(matrix, dtype="<f4")
    if data.ndim != 2:
        raise ValueError(f"spectra must be a 2-D batch, got shape {data.shape}")
    step = data.shape[1] * 4
    view, sha256 = memoryview(data).cast("B"), hashlib.sha256
    return [sha256(view[at:at + step]).hexdigest() for at in range(0, len(view), step)]

