"""Request decoding, validation and response encoding for KServe V1 and V2 (Open Inference Protocol).

Everything a caller can get wrong raises ClientError with an HTTP status and a message that names
the problem, so the server answers 4xx and never 5xx for bad input.
"""
from __future__ import annotations

import numpy as np
import orjson

from don_core.schema import N_BANDS, REFLECTANCE_RANGE

OUTPUT_NAME = "ppb"
INPUT_NAME = "spectra"
HEADER_LENGTH = "inference-header-content-length"
_V2_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


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


def _numeric_array(data, what: str, body: bytes) -> np.ndarray:
    try:
        x = np.array(data)
    except (ValueError, TypeError):
        # numpy refuses ragged nesting: some rows have a different length
        raise ClientError(400, f"{what} is ragged: every row must have {N_BANDS} numbers") from None
    if x.dtype.kind not in "fiu":
        raise ClientError(400, f"{what} must hold only numbers (found {_kind_name(x)})")
    # numpy turns a boolean among numbers into 1.0 silently; look only when the body has one
    if (b"true" in body or b"false" in body) and _holds_bool(data):
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


def decode_v1(body: bytes, max_rows: int,
              valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> np.ndarray:
    """`{"instances": [[448 numbers], ...]}` -> float64 array [n, 448]."""
    doc = parse_json(body)
    if "instances" not in doc:
        raise ClientError(400, 'V1 request needs an "instances" list of spectra '
                               f'([[{N_BANDS} numbers], ...])')
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise ClientError(400, '"instances" must be a list of spectra')
    if not instances:
        raise ClientError(400, "empty batch: \"instances\" holds no spectrum")
    if not isinstance(instances[0], list):
        raise ClientError(400, f'each instance must be a list of {N_BANDS} numbers '
                               f'(got {type(instances[0]).__name__}); wrong dimension')
    if len(instances) > max_rows:  # refuse before converting a huge batch
        raise ClientError(413, f"batch of {len(instances)} rows is above this server's limit "
                               f"of {max_rows} rows per request; split it")
    return check_rows(_numeric_array(instances, '"instances"', body), max_rows, valid_range)


class V2Request:
    """A decoded V2 inference request: the batch plus what the caller asked about the response."""

    __slots__ = ("x", "id", "binary_output")

    def __init__(self, x: np.ndarray, request_id: str | None, binary_output: bool):
        self.x = x
        self.id = request_id
        self.binary_output = binary_output


def decode_v2(body: bytes, header_length: str | None, max_rows: int,
              valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> V2Request:
    """JSON V2 request, or the binary tensor extension (JSON header + raw little-endian tensors)."""
    binary = b""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise ClientError(400, "Inference-Header-Content-Length must be an integer") from None
        if not 0 < json_len <= len(body):
            raise ClientError(400, f"Inference-Header-Content-Length {json_len} does not fit a "
                                   f"body of {len(body)} bytes")
        body, binary = body[:json_len], body[json_len:]
    doc = parse_json(body)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError(400, f'V2 request needs "inputs": a list with one tensor '
                               f'"{INPUT_NAME}" of shape [n, {N_BANDS}]')
    if len(inputs) != 1:
        raise ClientError(400, f"expected exactly one input tensor, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ClientError(400, "each input must be a JSON object")
    shape = _shape(tensor.get("shape"))
    datatype = tensor.get("datatype")
    dtype = check_tensor_header(datatype, shape, max_rows)
    count = shape[0] * shape[1]
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ClientError(400, "input parameters must be a JSON object")
    if "binary_data_size" in params:
        x = _binary_tensor(params["binary_data_size"], binary, dtype, count)
    else:
        if binary:
            raise ClientError(400, "binary data sent but no input declares binary_data_size")
        if "data" not in tensor:
            raise ClientError(400, 'input has neither "data" nor parameters.binary_data_size')
        x = _numeric_array(tensor["data"], "input data", body)
        if x.size != count:
            raise ClientError(400, f"input data holds {x.size} numbers but shape {shape} "
                                   f"needs {count}")
    return V2Request(check_rows(x.reshape(shape), max_rows, valid_range), _request_id(doc),
                     _binary_output_requested(doc))


def check_tensor_header(datatype, shape: list[int], max_rows: int) -> np.dtype:
    """The datatype and shape of the one input tensor (JSON V2 and gRPC); its numpy dtype."""
    if not isinstance(datatype, str) or datatype not in _V2_DTYPES:
        raise ClientError(400, f"input datatype must be FP32 or FP64, got {datatype!r}")
    if len(shape) != 2 or shape[1] != N_BANDS:
        raise ClientError(400, f"input shape must be [n, {N_BANDS}], got {shape}")
    if shape[0] > max_rows:
        raise ClientError(413, f"batch of {shape[0]} rows is above this server's limit of "
                               f"{max_rows} rows per request; split it")
    return _V2_DTYPES[datatype]


def _shape(shape) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in shape):
        raise ClientError(400, f'input "shape" must be a list of non-negative integers, '
                               f"got {shape!r}")
    return shape


def _binary_tensor(size, binary: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ClientError(400, "binary_data_size must be a non-negative integer")
    if size != len(binary):
        raise ClientError(400, f"binary_data_size {size} but {len(binary)} bytes of binary "
                               "data follow the JSON header")
    if size != count * dtype.itemsize:
        raise ClientError(400, f"binary tensor of {size} bytes does not match shape and "
                               f"datatype ({count} x {dtype.itemsize} bytes)")
    return np.frombuffer(binary, dtype=dtype)


def _request_id(doc: dict) -> str | None:
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ClientError(400, '"id" must be a string')
    return rid


def _binary_output_requested(doc: dict) -> bool:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ClientError(400, '"parameters" must be a JSON object')
    wanted = bool(params.get("binary_data_output", False))
    outputs = doc.get("outputs")
    if outputs is None:
        return wanted
    if not isinstance(outputs, list):
        raise ClientError(400, '"outputs" must be a list')
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != OUTPUT_NAME:
            name = out.get("name") if isinstance(out, dict) else out
            raise ClientError(400, f"unknown output {name!r}; this model has one output "
                                   f"{OUTPUT_NAME!r}")
        out_params = out.get("parameters") or {}
        if isinstance(out_params, dict) and "binary_data" in out_params:
            wanted = bool(out_params["binary_data"])
    return wanted


def encode_v1(ppb: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": ppb}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_v2(ppb: np.ndarray, model_name: str, version: str, request_id: str | None,
              binary: bool) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and the headers the binary extension needs."""
    out = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [int(ppb.shape[0])]}
    ppb = np.ascontiguousarray(ppb, dtype="<f4")
    if binary:
        raw = ppb.tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
    else:
        out["data"] = ppb
    doc = {"model_name": model_name, "model_version": version, "outputs": [out]}
    if request_id is not None:
        doc["id"] = request_id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return head, {}
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}

