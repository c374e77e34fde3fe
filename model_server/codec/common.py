"""What V1 and V2 share: the refusal (ClientError) and its rules for bodies, spectra, sample
ids and outputs, and the decoded Request."""
from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
import orjson

from don_core.contract import OUT_OF_DISTRIBUTION_OUTPUT, OUTLIER_SCORE_OUTPUT, PPB_LOWER_OUTPUT
from don_core.schema import N_BANDS, REFLECTANCE_RANGE

# The optional outputs (names in don_core.contract): the calibrated ones exist when the version
# has a calibration, the drift ones when it has a drift reference.
DRIFT_OUTPUTS = (OUTLIER_SCORE_OUTPUT, OUT_OF_DISTRIBUTION_OUTPUT)
# The input datatypes a spectra tensor may have (REST JSON, REST binary and gRPC alike; the
# OpenAPI body schema lists the same: codec.openapi)
V2_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
MAX_SAMPLE_ID_CHARS = 256


class ClientError(Exception):
    """A request the server refuses: `status` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# Bodies are read as JSON whatever the content type says (curl's default form type included, as
# KServe's own servers do), unless it names another data format outright.
_NOT_JSON_FAMILIES = ("multipart/", "image/", "audio/", "video/", "font/")
_NOT_JSON_TYPES = frozenset({
    "application/xml", "text/xml", "text/csv", "text/html", "application/octet-stream",
    "application/x-protobuf", "application/protobuf", "application/grpc", "application/msgpack",
    "application/x-msgpack", "application/cbor", "application/pdf", "application/zip",
    "application/gzip", "application/x-ndjson"})


def check_json_content_type(content_type: str | None) -> None:
    kind = media_type(content_type)
    if kind in _NOT_JSON_TYPES or kind.startswith(_NOT_JSON_FAMILIES):
        raise ClientError(415, f"unsupported content type {kind!r}; send a JSON body "
                               "(application/json)")


def parse_json(body: bytes) -> dict:
    if not body:
        raise ClientError(400, "request body is empty; expected a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ClientError(400, f"request body must be a JSON object, not {type(doc).__name__}")
    return doc


def check_rows(x: np.ndarray, max_rows: int,
               valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> np.ndarray:
    """A [n, 448] batch with 1 <= n <= max_rows and only finite, plausible reflectance values."""
    if x.ndim != 2:
        raise ClientError(400, f"expected a batch of rows shaped [n, {N_BANDS}], got {x.ndim} "
                               f"dimension(s) {list(x.shape)}")
    n, bands = x.shape
    if n == 0:
        raise ClientError(400, "empty batch: send at least one spectrum")
    if bands != N_BANDS:
        raise ClientError(400, f"each spectrum must have {N_BANDS} bands, got {bands}")
    if n > max_rows:
        raise ClientError(413, f"batch of {n} rows is above this server's limit of {max_rows} "
                               "rows per request; split it")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ClientError(400, f"non-finite values (NaN or inf) in row(s) {bad[:10].tolist()}")
    low, high = valid_range
    if x.min() < low or x.max() > high:
        outside = (x < low) | (x > high)
        row, band = (int(i) for i in np.argwhere(outside)[0])
        rows = np.flatnonzero(outside.any(axis=1))
        raise ClientError(400, f"reflectance outside the plausible range [{low:g}, {high:g}] in "
                               f"row(s) {rows[:10].tolist()} (row {row} band {band} is "
                               f"{float(x[row, band]):.6g}); send reflectance, not percent or "
                               "raw counts")
    return x


def _numeric_array(data, what: str, may_hold_bool: bool) -> np.ndarray:
    try:
        x = np.array(data)
    except (ValueError, TypeError):
        # numpy refuses ragged nesting: some rows have a different length
        raise ClientError(400, f"{what} is ragged: every row must have {N_BANDS} numbers") from None
    if x.dtype.kind not in "fiu":
        raise ClientError(400, f"{what} must hold only numbers (found {_kind_name(x)})")
    # numpy turns a boolean among numbers into 1.0 silently; look only when the body has one
    if may_hold_bool and _holds_bool(data):
        raise ClientError(400, f"{what} must hold only numbers (found a boolean)")
    return x


def _holds_bool(data) -> bool:
    if isinstance(data, bool):
        return True
    return isinstance(data, list) and any(_holds_bool(v) for v in data)


def _kind_name(x: np.ndarray) -> str:
    if x.dtype.kind == "b":
        return "booleans"
    if x.dtype.kind in "US":
        return "strings"
    return "null or nested values" if x.dtype.kind == "O" else f"dtype {x.dtype}"


class RequestedOutput(NamedTuple):
    name: str
    binary: bool = False


def _unique(outputs: list[RequestedOutput]) -> list[RequestedOutput]:
    names = [o.name for o in outputs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ClientError(400, f"output(s) {repeated} named more than once")
    return outputs


def _may_hold_bool(body: bytes) -> bool:
    return b"true" in body or b"false" in body


class Request:
    """A decoded inference request (V1 or V2): the batch, the caller's sample ids and what the
    caller asked about the response (`outputs` empty: just ppb, today's response)."""

    __slots__ = ("x", "id", "outputs", "named", "sample_ids")

    def __init__(self, x: np.ndarray, request_id: str | None, outputs: list[RequestedOutput],
                 named: bool, sample_ids: list[str | None] | None = None):
        self.x = x
        self.id = request_id
        self.outputs = outputs   # in the order the response lists them (V1: the extras only)
        self.named = named       # False: the caller named no outputs (ppb only, as always)
        self.sample_ids = sample_ids

    @property
    def binary_output(self) -> bool:
        return any(o.binary for o in self.outputs)


V2Request = Request


def check_sample_ids(ids: list, n: int, what: str) -> list[str | None]:
    if len(ids) != n:
        raise ClientError(400, f"{what} has {len(ids)} entries for {n} spectra; send one per "
                               "spectrum (null where there is none)")
    for i, value in enumerate(ids):
        if value is not None and not isinstance(value, str):
            raise ClientError(400, f"{what}[{i}] must be a string or null, not "
                                   f"{type(value).__name__}")
        if value is not None and len(value) > MAX_SAMPLE_ID_CHARS:
            raise ClientError(400, f"{what}[{i}] is longer than {MAX_SAMPLE_ID_CHARS} characters")
    return ids


def check_outputs(outputs: list[RequestedOutput], available: Mapping[str, str]) -> None:
    """400 naming the unknown output and what this version offers."""
    for out in outputs:
        if out.name not in available:
            hint = ""
            if out.name in DRIFT_OUTPUTS:
                hint = (" (this version has no drift reference: it was published before "
                        "outlier scores existed)")
            elif PPB_LOWER_OUTPUT not in available:
                hint = " (decisions and intervals need a version trained with calibration)"
            raise ClientError(400, f"unknown output {out.name!r}; this model version has "
                                   f"outputs {', '.join(available)}{hint}")
