"""KServe V2 (Open Inference Protocol) over REST: JSON tensors or the binary tensor extension in,
the same out; `decode_v2_document` is the one V2 reader gRPC uses too."""
from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
import orjson

from don_core.contract import (BINARY_HEADER_LENGTH_HEADER, INPUT_NAME, OUTPUT_NAME,
                               SAMPLE_ID_INPUT, V1_SAMPLE_IDS)
from don_core.schema import N_BANDS, REFLECTANCE_RANGE
from model_server.codec.common import (V2_DTYPES, ClientError, Request, RequestedOutput,
                                       _may_hold_bool, _numeric_array, _unique, check_rows,
                                       check_sample_ids, parse_json)


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
    return head + b"".join(raw), {BINARY_HEADER_LENGTH_HEADER: str(len(head))}


def _bytes_tensor(values: np.ndarray) -> bytes:
    """The binary BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    parts = []
    for value in values:
        data = value.encode() if isinstance(value, str) else bytes(value)
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)
