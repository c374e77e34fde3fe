"""One V2 decoder: REST JSON, REST binary and gRPC (raw and typed contents) read a request by the
same rules, so the same bad input gets the same status and message on every path; the OpenAPI
body schema states the rules the decoder applies."""
from __future__ import annotations

import struct

import jsonschema
import numpy as np
import orjson
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferRequest

from don_core.schema import N_BANDS, REFLECTANCE_RANGE
from model_server import codec

LIMIT = 10
ROWS = np.full((2, N_BANDS), 0.5)
NUMPY = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT8": "<i1", "INT16": "<i2",
         "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4",
         "UINT64": "<u8", "BOOL": "?"}
# the protobuf field each datatype's typed contents go in
CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents",
            "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
            "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}


class T:
    """One input tensor, independent of the transport."""

    def __init__(self, name: str, datatype: str, shape: list[int], values):
        self.name, self.datatype, self.shape, self.values = name, datatype, shape, values

    def flat(self) -> list:
        if self.datatype == "BYTES":
            return list(self.values)
        return np.asarray(self.values, NUMPY[self.datatype]).reshape(-1).tolist()

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(v)) + v for v in self.values)
        return np.asarray(self.values, NUMPY[self.datatype]).tobytes()


def spectra(rows=ROWS, datatype="FP32", shape=None) -> T:
    rows = np.asarray(rows)
    return T(codec.INPUT_NAME, datatype, list(rows.shape) if shape is None else shape, rows)


def ids(values: list[bytes], datatype="BYTES", shape=None) -> T:
    return T(codec.SAMPLE_ID_INPUT, datatype, [len(values)] if shape is None else shape, values)


def rest_json(inputs: list[T], outputs=()):
    doc = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape,
                       "data": [v.decode() for v in t.values] if t.datatype == "BYTES"
                       else t.flat()} for t in inputs]}
    if outputs:
        doc["outputs"] = [{"name": n} for n in outputs]
    return codec.decode_v2(orjson.dumps(doc), None, LIMIT, REFLECTANCE_RANGE)


def rest_binary(inputs: list[T], outputs=()):
    chunks = [t.raw() for t in inputs]
    doc = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": t.shape,
                       "parameters": {"binary_data_size": len(c)}}
                      for t, c in zip(inputs, chunks)]}
    if outputs:
        doc["outputs"] = [{"name": n} for n in outputs]
    head = orjson.dumps(doc)
    return codec.decode_v2(head + b"".join(chunks), str(len(head)), LIMIT, REFLECTANCE_RANGE)


def _grpc(inputs: list[T], outputs, raw: bool):
    tensors = []
    for t in inputs:
        tensor = pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype,
                                                       shape=t.shape)
        if not raw:
            getattr(tensor.contents, CONTENTS[t.datatype]).extend(t.flat())
        tensors.append(tensor)
    message = pb.ModelInferRequest(
        model_name="don-rf", inputs=tensors,
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
        raw_input_contents=[t.raw() for t in inputs] if raw else [])
    # what KServe's gRPC servicer hands the model
    return codec.decode_infer_request(InferRequest.from_grpc(message), LIMIT, REFLECTANCE_RANGE)


def grpc_raw(inputs, outputs=()):
    return _grpc(inputs, outputs, raw=True)


def grpc_typed(inputs, outputs=()):
    return _grpc(inputs, outputs, raw=False)


ALL = (rest_json, rest_binary, grpc_raw, grpc_typed)
BINARY = (rest_binary, grpc_raw)   # raw bytes after a header
TYPED = (rest_json, grpc_typed)    # values listed one by one


def refusal(path, inputs, outputs=()):
    with pytest.raises(codec.ClientError) as err:
        req = path(inputs, outputs)
        codec.check_outputs(req.outputs, {codec.OUTPUT_NAME: "FP32"})
    return err.value.status, err.value.message


def test_a_good_request_decodes_the_same_on_every_path():
    rows = np.random.default_rng(1).uniform(0.2, 1.0, (3, N_BANDS)).astype(np.float32)
    inputs = [spectra(rows), ids([b"lot-1", b"lot-2", "l\u00f6t-3".encode()])]
    decoded = [path(inputs, ["ppb"]) for path in ALL]
    for req in decoded:
        assert np.array_equal(req.x, rows) and req.sample_ids == ["lot-1", "lot-2", "l\u00f6t-3"]
        assert [o.name for o in req.outputs] == ["ppb"] and req.named


BAD = [  # (inputs, requested outputs, status, words in the message)
    ([spectra(np.zeros((1, N_BANDS), int), "INT32")], (), 400, "FP32 or FP64, got 'INT32'"),
    ([spectra(np.zeros((1, N_BANDS), bool), "BOOL")], (), 400, "FP32 or FP64, got 'BOOL'"),
    ([spectra(np.full((1, 447), 0.5))], (), 400, f"must be [n, {N_BANDS}], got [1, 447]"),
    ([spectra(np.full((LIMIT + 1, N_BANDS), 0.5))], (), 413, f"limit of {LIMIT} rows"),
    ([spectra(np.zeros((0, N_BANDS)))], (), 400, "empty batch"),
    ([spectra(np.where(np.arange(N_BANDS) == 3, 50.0, 0.5)[None])], (), 400,
     "plausible range [-1, 10] in row(s) [0] (row 0 band 3 is 50)"),
    ([spectra(), spectra()], (), 400, "expected exactly one input tensor of spectra"),
    ([spectra(), ids([b"a", b"b"], "BYTES", [2, 2])], (), 400, "must have shape [2]"),
    ([spectra(), ids([b"a", b"b", b"c"])], (), 400, "must have shape [2]"),
    ([spectra(), ids([b"a", b"x" * 300])], (), 400, "longer than 256 characters"),
    ([spectra(), T(codec.SAMPLE_ID_INPUT, "FP32", [2], np.zeros(2))], (), 400,
     "must have datatype BYTES, got 'FP32'"),
    ([spectra()], ("ppb_lower", "ppb_lower"), 400, "named more than once"),
    ([spectra()], ("decision_42",), 400, "unknown output 'decision_42'"),
]


@pytest.mark.parametrize("inputs, outputs, status, words", BAD)
def test_the_same_bad_input_gets_the_same_answer_on_every_path(inputs, outputs, status, words):
    answers = {path.__name__: refusal(path, inputs, outputs) for path in ALL}
    assert len(set(answers.values())) == 1, answers
    got_status, message = answers["rest_json"]
    assert got_status == status and words in message, message


def test_what_json_cannot_carry_gets_the_same_answer_on_the_other_paths():
    nan = np.full((2, N_BANDS), 0.5)
    nan[1, 5] = np.nan
    bad_text = [spectra(), ids([b"ok", b"\xff\xfe"])]
    for inputs, words in (([spectra(nan)], "non-finite values (NaN or inf) in row(s) [1]"),
                          (bad_text, "input 'sample_id'[1] is not UTF-8 text")):
        answers = {path.__name__: refusal(path, inputs) for path in (rest_binary, grpc_raw,
                                                                      grpc_typed)}
        assert set(answers.values()) == {(400, words)}, answers


def test_a_count_that_does_not_fit_the_shape_is_named_alike_per_encoding():
    short = [spectra(np.full((1, N_BANDS), 0.5), shape=[2, N_BANDS])]
    assert {refusal(p, short) for p in TYPED} == {
        (400, f"input data holds {N_BANDS} numbers but shape [2, {N_BANDS}] needs "
              f"{2 * N_BANDS}")}
    assert {refusal(p, short) for p in BINARY} == {
        (400, f"binary tensor of {4 * N_BANDS} bytes does not match shape and datatype "
              f"({2 * N_BANDS} x 4 bytes)")}


# --- the OpenAPI body schema against the decoder ---

DATATYPES = sorted([*NUMPY, "BYTES"])


def v2_cases():
    """(JSON body, what it varies): datatypes, shapes and values on and beyond every limit."""
    low, high = REFLECTANCE_RANGE

    def doc(rows=1, bands=N_BANDS, datatype="FP32", value=0.5, name=codec.INPUT_NAME):
        data = np.full((rows, bands), value).tolist()
        return {"inputs": [{"name": name, "shape": [rows, bands], "datatype": datatype,
                            "data": data}]}, f"{name} {datatype} [{rows}, {bands}] {value}"
    yield from (doc(datatype=d) for d in DATATYPES)
    yield from (doc(rows=n) for n in (0, 1, LIMIT, LIMIT + 1))
    yield from (doc(bands=b) for b in (N_BANDS - 1, N_BANDS + 1))
    yield from (doc(value=v) for v in (low, high, low - 0.01, high + 0.01))
    yield doc(name=codec.SAMPLE_ID_INPUT)


@pytest.mark.parametrize("body, case", list(v2_cases()))
def test_the_v2_body_schema_accepts_exactly_what_the_decoder_accepts(body, case):
    schema = codec.v2_body_schema(REFLECTANCE_RANGE, LIMIT)
    valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        codec.decode_v2(orjson.dumps(body), None, LIMIT, REFLECTANCE_RANGE)
        accepted = True
    except codec.ClientError:
        accepted = False
    assert valid == accepted, case


@pytest.mark.parametrize("rows, value", [(1, 0.5), (0, 0.5), (LIMIT + 1, 0.5), (1, 10.5),
                                         (1, -1.5)])
def test_the_v1_body_schema_accepts_exactly_what_the_decoder_accepts(rows, value):
    body = {"instances": np.full((rows, N_BANDS), value).tolist()}
    schema = codec.v1_body_schema(REFLECTANCE_RANGE, LIMIT)
    valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        codec.decode_v1(orjson.dumps(body), LIMIT, REFLECTANCE_RANGE)
        accepted = True
    except codec.ClientError:
        accepted = False
    assert valid == accepted
