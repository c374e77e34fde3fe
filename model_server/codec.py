"""Request decoding, validation and response encoding for KServe V1 and V2 (Open Inference Protocol).

Everything a caller can get wrong raises ClientError with an HTTP status and a message that names
the problem, so the server answers 4xx and never 5xx for bad input.
"""
from __future__ import annotations

import struct
from typing import Mapping, NamedTuple

import numpy as np
import orjson

from don_core.contract import (INPUT_NAME, OUT_OF_DISTRIBUTION_OUTPUT, OUTLIER_SCORE_OUTPUT,
                               OUTPUT_NAME, PPB_LOWER_OUTPUT, PPB_UPPER_OUTPUT, SAMPLE_ID_INPUT,
                               V1_OUTPUTS_PARAMETER, V1_SAMPLE_IDS, decision_output)
from don_core.schema import DECISION_THRESHOLDS_PPB, N_BANDS, REFLECTANCE_RANGE

# The optional outputs (names in don_core.contract): the calibrated ones exist when the version
# has a calibration, the drift ones when it has a drift reference.
DRIFT_OUTPUTS = (OUTLIER_SCORE_OUTPUT, OUT_OF_DISTRIBUTION_OUTPUT)
# The input datatypes a spectra tensor may have (REST JSON, REST binary and gRPC alike; the
# OpenAPI body schema lists the same, see request_schemas)
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


def decode_v1(body: bytes, max_rows: int,
              valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> np.ndarray:
    """`{"instances": [[448 numbers], ...]}` -> float64 array [n, 448]."""
    return decode_v1_request(body, max_rows, valid_range).x


def decode_v1_request(body: bytes, max_rows: int,
                      valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> "Request":
    """The batch, the extra outputs named in `parameters.outputs` (ppb is always there, as
    "predictions") and the optional `"sample_ids": [str | null, ...]` (one per instance)."""
    doc = parse_json(body)
    x = _v1_instances(doc, body, max_rows, valid_range)
    sample_ids = doc.get(V1_SAMPLE_IDS)
    if sample_ids is not None:
        if not isinstance(sample_ids, list):
            raise ClientError(400, f'"{V1_SAMPLE_IDS}" must be a list of strings (or nulls), '
                                   "one per instance")
        sample_ids = check_sample_ids(sample_ids, len(x), f'"{V1_SAMPLE_IDS}"')
    outputs = _v1_outputs(doc)
    return Request(x, None, outputs, bool(outputs), sample_ids)


def _v1_outputs(doc: dict) -> list[RequestedOutput]:
    if "parameters" not in doc:  # null is not an object: 400, as documented
        return []
    params = doc["parameters"]
    if not isinstance(params, dict):
        raise ClientError(400, '"parameters" must be a JSON object')
    if V1_OUTPUTS_PARAMETER not in params:
        return []
    names = params[V1_OUTPUTS_PARAMETER]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ClientError(400, f'parameters.{V1_OUTPUTS_PARAMETER} must be a list of output '
                               f'names, e.g. ["{decision_output(DECISION_THRESHOLDS_PPB[0])}", '
                               f'"{PPB_LOWER_OUTPUT}", "{PPB_UPPER_OUTPUT}"]')
    return _unique([RequestedOutput(n) for n in names if n != OUTPUT_NAME])


def _unique(outputs: list[RequestedOutput]) -> list[RequestedOutput]:
    names = [o.name for o in outputs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ClientError(400, f"output(s) {repeated} named more than once")
    return outputs


def _v1_instances(doc: dict, body: bytes, max_rows: int,
                  valid_range: tuple[float, float]) -> np.ndarray:
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
    return check_rows(_numeric_array(instances, '"instances"', _may_hold_bool(body)), max_rows,
                      valid_range)


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


def decode_v2(body: bytes, header_length: str | None, max_rows: int,
              valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> Request:
    """REST V2: a JSON request, or the binary tensor extension (JSON header + raw little-endian
    tensors, in the order of the inputs), read by `decode_v2_document`."""
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
    return decode_v2_document(parse_json(body), binary, max_rows, valid_range,
                              _may_hold_bool(body))


def decode_infer_request(request, max_rows: int,
                         valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> Request:
    """gRPC V2 (KServe's InferRequest): its tensors are put in the binary extension's form (raw
    contents as binary chunks, typed contents as "data") and read by the same rules as REST."""
    inputs, chunks = [], []
    for tensor in request.inputs:
        doc = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        raw = tensor._raw_data  # KServe keeps raw_input_contents there; no public accessor
        if raw is not None:
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = list(tensor.data or ())
        inputs.append(doc)
    doc = {"inputs": inputs}
    if request.id:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = _grpc_parameters(request.parameters)
    if request.request_outputs:
        doc["outputs"] = [{"name": o.name} for o in request.request_outputs]
    # typed contents hold numbers only (a protobuf field per datatype): no boolean can hide there
    return decode_v2_document(doc, b"".join(chunks), max_rows, valid_range, False)


def _grpc_parameters(params) -> dict:
    """gRPC InferParameter messages (one of bool/int64/string) as the JSON values they stand for."""
    plain = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice") if hasattr(value, "WhichOneof") else None
        plain[key] = getattr(value, choice) if choice else value
    return plain


def decode_v2_document(doc: dict, binary: bytes, max_rows: int,
                       valid_range: tuple[float, float] = REFLECTANCE_RANGE,
                       may_hold_bool: bool = True) -> Request:
    """The one V2 decoder (REST JSON, REST binary and gRPC): one spectra tensor [n, 448]; sample
    ids optionally as a BYTES tensor `sample_id` [n] or as the request parameter `sample_ids` (a
    list). `binary`: the raw tensors that follow the JSON header (binary_data_size each, in the
    order of the inputs)."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError(400, f'V2 request needs "inputs": a list with one tensor '
                               f'"{INPUT_NAME}" of shape [n, {N_BANDS}]')
    spectra, sample_ids, offset = [], None, 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise ClientError(400, "each input must be a JSON object")
        if not isinstance(tensor.get("name"), str):
            raise ClientError(400, f'input needs a "name" string (e.g. "{INPUT_NAME}")')
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise ClientError(400, "input parameters must be a JSON object")
        chunk = None
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ClientError(400, "binary_data_size must be a non-negative integer")
            chunk, offset = binary[offset:offset + size], offset + size
        if tensor.get("name") == SAMPLE_ID_INPUT and sample_ids is None:
            sample_ids = (tensor, chunk)
        else:
            spectra.append((tensor, chunk))
    if len(spectra) != 1:
        raise ClientError(400, f"expected exactly one input tensor of spectra (and optionally "
                               f"a BYTES tensor {SAMPLE_ID_INPUT!r}), got {len(inputs)} inputs")
    if offset != len(binary):
        raise ClientError(400, f"binary_data_size of the inputs adds up to {offset} but "
                               f"{len(binary)} bytes of binary data follow the JSON header")
    x = _spectra(*spectra[0], max_rows, valid_range, may_hold_bool)
    ids = _sample_id_tensor(*sample_ids, len(x)) if sample_ids is not None else None
    params = doc.get("parameters")
    if ids is None and isinstance(params, dict) and V1_SAMPLE_IDS in params:
        # the request-parameter form (what a KServe payload logger's event carries to the
        # recorder): "parameters": {"sample_ids": [...]}
        listed = params[V1_SAMPLE_IDS]
        if not isinstance(listed, list):
            raise ClientError(400, f'parameters.{V1_SAMPLE_IDS} must be a list of strings')
        ids = check_sample_ids(listed, len(x), f"parameters.{V1_SAMPLE_IDS}")
    outputs, named = _requested_outputs(doc)
    return Request(x, _request_id(doc), outputs, named, ids)


def _spectra(tensor: dict, chunk: bytes | None, max_rows: int,
             valid_range: tuple[float, float], may_hold_bool: bool) -> np.ndarray:
    shape = _shape(tensor.get("shape"))
    dtype = check_tensor_header(tensor.get("datatype"), shape, max_rows)
    count = shape[0] * shape[1]
    if chunk is not None:
        x = _binary_tensor(len(chunk), chunk, dtype, count)
    else:
        if "data" not in tensor:
            raise ClientError(400, 'input has neither "data" nor parameters.binary_data_size')
        x = _numeric_array(tensor["data"], "input data", may_hold_bool)
        if x.size != count:
            raise ClientError(400, f"input data holds {x.size} numbers but shape {shape} "
                                   f"needs {count}")
    return check_rows(x.reshape(shape), max_rows, valid_range)


def check_tensor_header(datatype, shape: list[int], max_rows: int) -> np.dtype:
    """The datatype and shape of the one spectra tensor; its numpy dtype."""
    if not isinstance(datatype, str) or datatype not in V2_DTYPES:
        raise ClientError(400, f"input datatype must be FP32 or FP64, got {datatype!r}")
    if len(shape) != 2 or shape[1] != N_BANDS:
        raise ClientError(400, f"input shape must be [n, {N_BANDS}], got {shape}")
    if shape[0] > max_rows:
        raise ClientError(413, f"batch of {shape[0]} rows is above this server's limit of "
                               f"{max_rows} rows per request; split it")
    return V2_DTYPES[datatype]


def _sample_id_tensor(tensor: dict, chunk: bytes | None, n: int) -> list[str | None]:
    what = f"input {SAMPLE_ID_INPUT!r}"
    if tensor.get("datatype") != "BYTES":
        raise ClientError(400, f"{what} must have datatype BYTES, got {tensor.get('datatype')!r}")
    shape = _shape(tensor.get("shape"))
    if shape not in ([n], [n, 1]):
        raise ClientError(400, f"{what} must have shape [{n}] (one id per spectrum), got {shape}")
    if chunk is not None:
        ids = _binary_bytes(chunk, n, what)
    else:
        data = tensor.get("data")
        if isinstance(data, list) and len(data) == n and all(isinstance(d, list) and len(d) == 1
                                                             for d in data):
            data = [d[0] for d in data]  # shape [n, 1] sent nested
        if not isinstance(data, list):
            raise ClientError(400, f'{what} needs "data": a list of {n} strings')
        ids = [_text(v, what, i) if isinstance(v, bytes) else v for i, v in enumerate(data)]
    return check_sample_ids(ids, n, what)


def _text(value: bytes, what: str, i: int) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError(400, f"{what}[{i}] is not UTF-8 text") from None


def _binary_bytes(chunk: bytes, n: int, what: str) -> list[str]:
    """BYTES elements of the binary extension: a 4-byte little-endian length, then the bytes."""
    ids, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise ClientError(400, f"{what}: truncated binary BYTES element")
        size = int.from_bytes(chunk[pos:pos + 4], "little")
        value = chunk[pos + 4:pos + 4 + size]
        if len(value) != size:
            raise ClientError(400, f"{what}: truncated binary BYTES element")
        ids.append(_text(value, what, len(ids)))
        pos += 4 + size
    if len(ids) != n:
        raise ClientError(400, f"{what} has {len(ids)} entries for {n} spectra")
    return ids


def _shape(shape) -> list[int]:
    # JSON has one number type: 2.0 is an integer there (JSON Schema agrees), 2.5 is not
    if isinstance(shape, list):
        shape = [int(d) if isinstance(d, float) and d.is_integer() else d for d in shape]
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
    if "id" in doc and not isinstance(rid, str):
        raise ClientError(400, '"id" must be a string')
    return rid


def _requested_outputs(doc: dict) -> tuple[list[RequestedOutput], bool]:
    """(outputs in response order, whether the caller named any). Names are checked against
    what the served version offers later, by `check_outputs`."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ClientError(400, '"parameters" must be a JSON object')
    default_binary = bool(params.get("binary_data_output", False))
    if "outputs" not in doc:
        return [RequestedOutput(OUTPUT_NAME, default_binary)], False
    outputs = doc["outputs"]  # null is not a list: 400 below
    if not isinstance(outputs, list):
        raise ClientError(400, '"outputs" must be a list')
    if not outputs:  # an empty list names nothing: the default response
        return [RequestedOutput(OUTPUT_NAME, default_binary)], False
    wanted = []
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ClientError(400, f'each requested output must be an object with a "name", '
                                   f"got {out!r}")
        out_params = out.get("parameters")
        out_params = {} if out_params is None else out_params
        if not isinstance(out_params, dict):
            raise ClientError(400, f"parameters of output {out['name']!r} must be a JSON object")
        wanted.append(RequestedOutput(out["name"],
                                      bool(out_params.get("binary_data", default_binary))))
    wanted = _unique(wanted)
    if OUTPUT_NAME not in {o.name for o in wanted}:  # the extras come beside ppb, never instead
        wanted.insert(0, RequestedOutput(OUTPUT_NAME, default_binary))
    return wanted, True


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


def encode_v1(ppb: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """`{"predictions": [ppb...]}`, plus one list per extra output named in the request."""
    doc = {"predictions": ppb}
    for name, values in (extra or {}).items():
        doc[name] = values.tolist() if values.dtype == object else values
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


class Tensor(NamedTuple):
    name: str
    datatype: str      # FP32 | BOOL | BYTES
    values: np.ndarray
    binary: bool


def encode_v2(tensors: list[Tensor], model_name: str, version: str,
              request_id: str | None) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and the headers the binary extension needs."""
    outs, raw = [], []
    for tensor in tensors:
        out = {"name": tensor.name, "datatype": tensor.datatype,
               "shape": [int(tensor.values.shape[0])]}
        if tensor.datatype == "BYTES":
            if tensor.binary:
                blob = _bytes_tensor(tensor.values)
                raw.append(blob)
                out["parameters"] = {"binary_data_size": len(blob)}
            else:
                out["data"] = tensor.values.tolist()
        else:
            values = np.ascontiguousarray(
                tensor.values, dtype=np.bool_ if tensor.datatype == "BOOL" else "<f4")
            if tensor.binary:
                raw.append(values.tobytes())  # BOOL: one byte per element
                out["parameters"] = {"binary_data_size": len(raw[-1])}
            else:
                out["data"] = values
        outs.append(out)
    doc = {"model_name": model_name, "model_version": version, "outputs": outs}
    if request_id is not None:
        doc["id"] = request_id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return head, {}
    return head + b"".join(raw), {"Inference-Header-Content-Length": str(len(head))}


def _bytes_tensor(values: np.ndarray) -> bytes:
    """The binary BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    parts = []
    for value in values:
        data = value.encode() if isinstance(value, str) else bytes(value)
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)



# --- The request bodies as OpenAPI (JSON Schema 2020-12) documents them, from the rules above ---

def spectrum_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> dict:
    low, high = valid_range
    return {"type": "array", "items": {"type": "number", "minimum": low, "maximum": high},
            "minItems": N_BANDS, "maxItems": N_BANDS,
            "description": f"{N_BANDS} reflectance values, each within the server's plausible "
                           "range (--reflectance_range)"}


def v1_body_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE,
                   max_rows: int | None = None, outputs: list[str] | None = None) -> dict:
    """`outputs`: the extra outputs the served version has (None: not known yet)."""
    instances = {"type": "array", "items": spectrum_schema(valid_range), "minItems": 1}
    if max_rows is not None:
        instances["maxItems"] = max_rows
    names = {"type": "string"} if outputs is None else {"type": "string", "enum": outputs}
    return {"type": "object", "required": ["instances"], "properties": {
        "instances": instances,
        "parameters": {"type": "object", "properties": {V1_OUTPUTS_PARAMETER: {
            "type": "array", "items": names,
            "description": f"extra outputs: {decision_output('<limit>')}, {PPB_LOWER_OUTPUT}, "
                           f"{PPB_UPPER_OUTPUT}, {OUTLIER_SCORE_OUTPUT}, "
                           f"{OUT_OF_DISTRIBUTION_OUTPUT}"}}}}}


def v2_body_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE,
                   max_rows: int | None = None) -> dict:
    """The JSON form with one spectra tensor (the binary extension and the optional sample_id
    tensor are described in prose: a schema cannot tie binary_data_size to the bytes after it)."""
    spectrum = spectrum_schema(valid_range)
    rows = {"type": "integer", "minimum": 1}
    if max_rows is not None:
        rows["maximum"] = max_rows
    return {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {
                # any name but the sample id tensor's, which must be BYTES
                "name": {"type": "string", "not": {"const": SAMPLE_ID_INPUT}},
                "shape": {"type": "array", "minItems": 2, "maxItems": 2,
                          "prefixItems": [rows, {"type": "integer", "const": N_BANDS}],
                          "description": f"[n, {N_BANDS}]: n spectra; data holds n x {N_BANDS} "
                                         "numbers"},
                "datatype": {"type": "string", "enum": sorted(V2_DTYPES)},
                "data": {"description": f"row-major: nested rows, or flat (n x {N_BANDS} "
                                        "numbers)",
                         "anyOf": [{"type": "array", "items": spectrum, "minItems": 1},
                                   {"type": "array", "items": spectrum["items"],
                                    "minItems": N_BANDS}]}}}},
        "outputs": {"type": "array", "items": {"type": "object",
                                               "properties": {"name": {"type": "string"}}}}}}
