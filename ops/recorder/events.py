"""Turn CloudEvents (binary mode: ``ce-*`` headers, JSON body) into prediction rows.

Two kinds arrive: our own batches (RECORDS_EVENT_TYPE, in the row or the column form of
don_core.records) and KServe's payload-logger request/response events, which are paired by
``ce-id`` and turned into the same rows (the spectrum is hashed with the contract's
spectrum_sha256 and not kept). Every problem
raises EventError with the HTTP status to answer and a message naming the field.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import math
import re
import threading

import numpy as np

from don_core.contract import SAMPLE_ID_INPUT
from don_core.contract import V1_SAMPLE_IDS as SAMPLE_IDS_KEY
from don_core.records import (CLOUDEVENTS_SPEC_VERSION, FIELD_TYPES, KSERVE_REQUEST_EVENT_TYPE,
                              KSERVE_RESPONSE_EVENT_TYPE, RECORD_FIELDS, RECORDS_EVENT_TYPE,
                              REQUIRED_FIELDS, TEXT_LIMITS, PredictionRecord, record_count,
                              record_dicts, spectra_sha256)
from don_core.schema import N_BANDS
from ops.recorder.db import utcnow

# How a caller attaches its lab sample ids to a request (as the model server reads them): V1 a
# top-level list (SAMPLE_IDS_KEY), V2 a request parameter or a BYTES input tensor (one id per row,
# in row order).
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
INT32_MAX = 2**31 - 1


class EventError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _bad(message: str) -> EventError:
    return EventError(400, message)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(body: bytes, what: str = "body"):
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"{what} is not valid JSON: {exc}") from None


def parse_time(value, field: str) -> dt.datetime:
    """RFC 3339 / ISO 8601 to naive UTC; a time without an offset is taken as UTC."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be an RFC 3339 time string")
    text = value.strip()
    text = text[:-1] + "+00:00" if text[-1:] in "zZ" else text
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field} {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _text(data: dict, field: str, required: bool) -> str | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string")
    if len(value) > TEXT_LIMITS[field]:
        raise ValueError(f"{field} is longer than {TEXT_LIMITS[field]} characters")
    if "\x00" in value:
        raise ValueError(f"{field} contains a NUL character")
    return value


def _int(data: dict, field: str, required: bool = True) -> int:
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT32_MAX:
        raise ValueError(f"{field} must be an integer between 0 and {INT32_MAX}")
    return value


def _number(data: dict, field: str, required: bool) -> float | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number")
    return float(value)


def _flag(data: dict, field: str, required: bool) -> bool | None:
    value = data.get(field)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{field} must be true or false")
    return value


def _time(data: dict, field: str, required: bool) -> dt.datetime:
    return parse_time(data.get(field), field)


def _sha256(data: dict, field: str, required: bool) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError(f"{field} must be 64 lower-case hex digits")
    return value


def _spectrum(data: dict, field: str, required: bool) -> list | None:
    value = data.get(field)
    if value is not None and (not isinstance(value, list) or len(value) != N_BANDS or not all(
            not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) for v in value)):
        raise ValueError(f"{field} must be a list of {N_BANDS} finite numbers")
    return value


# Each record field is checked by its type in the record schema, a few by their own rule.
_CHECK_BY_TYPE = {str: _text, int: _int, float: _number, bool: _flag}
_CHECK_BY_FIELD = {"time": _time, "spectrum_sha256": _sha256, "spectrum": _spectrum}


def record_row(data: dict, received_at: dt.datetime) -> dict:
    """One record (as decoded JSON) checked field by field and shaped as a `predictions` row."""
    PredictionRecord.from_dict(data)  # unknown / missing fields
    row = {name: (_CHECK_BY_FIELD.get(name) or _CHECK_BY_TYPE[FIELD_TYPES[name]])(
        data, name, name in REQUIRED_FIELDS) for name in RECORD_FIELDS}
    row["shadow"] = bool(row["shadow"])  # a record without it is a served answer
    row["received_at"] = received_at
    return row


def records_rows(body: bytes, max_records: int) -> list[dict]:
    """The rows of one of our events, in the row or the column form (don_core.records reads both)."""
    doc = parse_json(body)
    try:
        count = record_count(doc)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if count > max_records:
        raise EventError(413, f"{count} records in one event; at most {max_records}")
    try:
        records = record_dicts(doc)
    except (ValueError, TypeError) as exc:
        raise _bad(str(exc)) from None
    now = utcnow()
    rows = []
    for index, data in enumerate(records):
        try:
            rows.append(record_row(data, now))
        except (ValueError, TypeError) as exc:
            raise _bad(f"records[{index}]: {exc}") from None
    return rows


def ce_headers(headers) -> dict[str, str]:
    """The CloudEvents attributes of a binary-mode request, checked."""
    attrs = {key.lower()[3:]: value for key, value in headers.items() if key.lower().startswith("ce-")}
    for required in ("specversion", "type", "id", "source"):
        if not attrs.get(required):
            raise _bad(f"missing CloudEvents header ce-{required} (binary mode: ce-specversion, "
                       "ce-type, ce-id, ce-source)")
    if attrs["specversion"] != CLOUDEVENTS_SPEC_VERSION:
        raise _bad(f"ce-specversion {attrs['specversion']!r} is not supported; use {CLOUDEVENTS_SPEC_VERSION}")
    if len(attrs["id"]) > TEXT_LIMITS["request_id"]:
        raise _bad(f"ce-id is longer than {TEXT_LIMITS['request_id']} characters")
    return attrs


# ---- KServe payload logger ----------------------------------------------------------------------

def _v1_request(doc: dict) -> tuple[np.ndarray, list | None]:
    instances = doc.get("instances", doc.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise _bad('V1 request body needs a non-empty "instances" list')
    return _matrix(instances, "instances"), doc.get(SAMPLE_IDS_KEY)


def _v2_request(doc: dict) -> tuple[np.ndarray, list | None]:
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise _bad('V2 request body needs a list of tensors in "inputs"')
    ids = [t for t in inputs if t.get("name") == SAMPLE_ID_INPUT]
    spectra = [t for t in inputs if t.get("name") != SAMPLE_ID_INPUT]
    if len(spectra) != 1 or len(ids) > 1:
        raise _bad(f'V2 request body needs one spectra tensor (and at most one "{SAMPLE_ID_INPUT}" tensor)')
    tensor = spectra[0]
    shape, data = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(s, int) for s in shape):
        raise _bad(f"V2 input shape must be [rows, {N_BANDS}]")
    matrix = _matrix(data, "inputs[0].data")
    if matrix.size != shape[0] * shape[1]:
        raise _bad(f"V2 input data has {matrix.size} values, shape {shape} needs {shape[0] * shape[1]}")
    params = doc.get("parameters")
    sample_ids = params.get(SAMPLE_IDS_KEY) if isinstance(params, dict) else None
    if ids:
        sample_ids = ids[0].get("data")
    return matrix.reshape(shape), sample_ids


def _matrix(values, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise _bad(f"{where} must hold numbers only, in rows of equal length") from None
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1) if matrix.size == N_BANDS else matrix
    if not np.isfinite(matrix).all():
        raise _bad(f"{where} holds a non-finite number")
    return matrix


def kserve_request(body: bytes) -> dict:
    """What a request event contributes to its pair: spectrum hashes and sample ids (no spectra)."""
    doc = parse_json(body, "request body")
    if not isinstance(doc, dict):
        raise _bad("request body must be a JSON object")
    matrix, sample_ids = _v2_request(doc) if "inputs" in doc and isinstance(doc["inputs"], list) and \
        doc["inputs"] and isinstance(doc["inputs"][0], dict) else _v1_request(doc)
    if matrix.ndim != 2 or matrix.shape[1] != N_BANDS:
        raise _bad(f"each spectrum must have {N_BANDS} bands, got shape {list(matrix.shape)}")
    if sample_ids is not None:
        if not isinstance(sample_ids, list) or len(sample_ids) != len(matrix):
            raise _bad(f"{SAMPLE_IDS_KEY} must be a list with one id (or null) per row")
        for index, value in enumerate(sample_ids):
            if value is not None:
                try:
                    _text({"sample_id": value}, "sample_id", True)
                except ValueError as exc:
                    raise _bad(f"{SAMPLE_IDS_KEY}[{index}]: {exc}") from None
    return {"hashes": spectra_sha256(matrix), "sample_ids": sample_ids}


def kserve_response(body: bytes) -> dict:
    doc = parse_json(body, "response body")
    if not isinstance(doc, dict):
        raise _bad("response body must be a JSON object")
    version = None
    if "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
            raise _bad('V2 response body needs an "outputs" list of tensors')
        values = outputs[0].get("data")
        raw_version = doc.get("model_version")
        if raw_version is not None:
            if not str(raw_version).isdigit() or int(raw_version) > INT32_MAX:
                raise _bad(f"model_version {str(raw_version)[:40]!r} is not a version number")
            version = int(raw_version)
        model = doc.get("model_name")
    else:
        values, model = doc.get("predictions"), None
    if not isinstance(values, list) or not values:
        raise _bad('response body needs a non-empty "predictions" list (V1) or outputs[0].data (V2)')
    ppb = _matrix(values, "predictions").reshape(-1)
    return {"ppb": [float(v) for v in ppb], "version": version, "model": model}


class KServePairs:
    """Holds the first half of each request/response pair until the other arrives. Bounded: past
    `capacity` the oldest half is dropped (counted), and so is a half older than `ttl` seconds."""

    def __init__(self, capacity: int = 10_000, ttl: float = 300.0, on_drop=None):
        self.capacity, self.ttl, self.on_drop = capacity, ttl, on_drop or (lambda n: None)
        self._pending: collections.OrderedDict[str, tuple[float, str, dict, dict]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, attrs: dict, body: bytes, now: float) -> list[dict] | None:
        """Parse one event; the rows of the completed pair, or None while waiting for its half."""
        kind = "request" if attrs["type"] == KSERVE_REQUEST_EVENT_TYPE else "response"
        half = kserve_request(body) if kind == "request" else kserve_response(body)
        key = attrs["id"]
        with self._lock:
            self._expire(now)
            other = self._pending.pop(key, None)
            if other is None or other[1] == kind:
                if other is not None:
                    self.on_drop(1)  # the same half twice: keep the newer one
                self._pending[key] = (now, kind, half, attrs)
                while len(self._pending) > self.capacity:
                    self._pending.popitem(last=False)
                    self.on_drop(1)
                return None
        request, response = (half, other[2]) if kind == "request" else (other[2], half)
        return _pair_rows(attrs, other[3], request, response)

    def _expire(self, now: float) -> None:
        while self._pending:
            first = next(iter(self._pending.values()))
            if now - first[0] <= self.ttl:
                return
            self._pending.popitem(last=False)
            self.on_drop(1)

    def __len__(self) -> int:
        return len(self._pending)


def _pair_rows(attrs: dict, other_attrs: dict, request: dict, response: dict) -> list[dict]:
    hashes, ppb = request["hashes"], response["ppb"]
    if len(hashes) != len(ppb):
        raise EventError(422, f"request event {attrs['id']!r} has {len(hashes)} rows but its response "
                              f"has {len(ppb)} predictions")
    model = response["model"] or attrs.get("inferenceservicename") or other_attrs.get("inferenceservicename")
    if not model:
        raise _bad("cannot tell the model: no ce-inferenceservicename header and no V2 model_name")
    time_attr = attrs.get("time") or other_attrs.get("time")
    try:
        when = parse_time(time_attr, "ce-time") if time_attr else utcnow()
        model = _text({"model": model}, "model", True)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    sample_ids = request["sample_ids"] or [None] * len(hashes)
    now = utcnow()
    # A V1 response does not carry the version: such rows are recorded as version 0 (unknown).
    empty = dict.fromkeys(RECORD_FIELDS)  # what KServe's events do not carry stays empty
    return [{**empty, "time": when, "model": model, "version": response["version"] or 0,
             "request_id": attrs["id"], "row": i, "predicted_ppb": ppb[i],
             "spectrum_sha256": hashes[i], "shadow": False, "sample_id": sample_ids[i],
             "received_at": now} for i in range(len(hashes))]


EVENT_TYPES = (RECORDS_EVENT_TYPE, KSERVE_REQUEST_EVENT_TYPE, KSERVE_RESPONSE_EVENT_TYPE)
