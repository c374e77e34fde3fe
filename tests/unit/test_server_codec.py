"""Request decoding and validation: every bad input is a ClientError naming the problem."""
from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from model_server import codec

ROW = [0.5] * 448


def v1(doc) -> bytes:
    return json.dumps(doc).encode()


def test_v1_batch_decodes_to_rows():
    x = codec.decode_v1(v1({"instances": [ROW, ROW]}), max_rows=10)
    assert x.shape == (2, 448) and x.dtype.kind == "f"


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "empty"),
    (b"{", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"rows": []}', 400, '"instances"'),
    (b'{"instances": 3}', 400, "list"),
    (b'{"instances": []}', 400, "empty batch"),
    (v1({"instances": [[0.5] * 447]}), 400, "448 bands, got 447"),
    (v1({"instances": [ROW, [0.5] * 447]}), 400, "ragged"),
    (v1({"instances": ROW}), 400, "dimension"),
    (v1({"instances": [["a"] * 448]}), 400, "strings"),
    (v1({"instances": [[True] * 448]}), 400, "booleans"),
    (v1({"instances": [[None] * 448]}), 400, "null"),
    (b'{"instances": [[NaN]]}', 400, "malformed JSON"),
    (v1({"instances": [ROW] * 11}), 413, "limit of 10 rows"),
])
def test_v1_bad_input_is_named(body, status, words):
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v1(body, max_rows=10)
    assert err.value.status == status
    assert words in err.value.message


def test_non_finite_values_are_refused_with_their_rows():
    x = np.full((3, 448), 0.5)
    x[2, 7] = np.inf
    with pytest.raises(codec.ClientError, match=r"non-finite .* row\(s\) \[2\]"):
        codec.check_rows(x, max_rows=10)


def v2_doc(rows, datatype="FP64", **extra):
    return {"inputs": [{"name": "spectra", "shape": [len(rows), 448], "datatype": datatype,
                        "data": rows}], **extra}


def test_v2_json_nested_and_flat_data():
    a = codec.decode_v2(v1(v2_doc([ROW, ROW], id="r1")), None, 10)
    flat = v2_doc([ROW, ROW])
    flat["inputs"][0]["data"] = ROW + ROW
    b = codec.decode_v2(v1(flat), None, 10)
    assert a.x.shape == b.x.shape == (2, 448) and a.id == "r1" and not a.binary_output


def binary_request(x: np.ndarray, datatype="FP32", **params):
    head = orjson.dumps({"inputs": [{"name": "spectra", "shape": list(x.shape),
                                     "datatype": datatype,
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": params})
    return head + x.tobytes(), str(len(head))


def test_v2_binary_tensor_round_trip():
    x = np.random.default_rng(0).random((5, 448)).astype("<f4")
    body, length = binary_request(x, binary_data_output=True)
    req = codec.decode_v2(body, length, 10)
    np.testing.assert_array_equal(req.x, x)
    assert req.binary_output
    content, headers = codec.encode_v2([codec.Tensor("ppb", "FP32", np.arange(5.0), True)],
                                       "m", "3", "id-1")
    json_len = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(content[:json_len])
    assert head["model_version"] == "3" and head["outputs"][0]["parameters"] == {
        "binary_data_size": 20}
    np.testing.assert_array_equal(np.frombuffer(content[json_len:], "<f4"), np.arange(5.0))


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(inputs=[]), '"inputs"'),
    (lambda d: d["inputs"].append(d["inputs"][0]), "exactly one input"),
    (lambda d: d["inputs"][0].update(datatype="INT32"), "FP32 or FP64"),
    (lambda d: d["inputs"][0].update(shape=[1, 447]), "shape must be [n, 448]"),
    (lambda d: d["inputs"][0].update(shape="1,448"), "non-negative integers"),
    (lambda d: d["inputs"][0].update(shape=[0, 448], data=[]), "empty batch"),
    (lambda d: d["inputs"][0].update(shape=[2, 448]), "needs 896"),
    (lambda d: d["inputs"][0].pop("data"), "neither"),
    (lambda d: d.update(outputs=["ppb"]), "object with a \"name\""),
    (lambda d: d.update(outputs=[{"name": "ppb"}, {"name": "ppb"}]), "more than once"),
    (lambda d: d.update(outputs=[{"name": "ppb", "parameters": 3}]), "must be a JSON object"),
    (lambda d: d.update(id=5), '"id" must be a string'),
])
def test_v2_bad_input_is_named(mutate, words):
    doc = v2_doc([ROW])
    mutate(doc)
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v2(v1(doc), None, 10)
    assert err.value.status == 400 and words in err.value.message


def test_v2_binary_size_mismatches_are_refused():
    x = np.zeros((2, 448), "<f4")
    body, length = binary_request(x)
    with pytest.raises(codec.ClientError, match="bytes of binary"):
        codec.decode_v2(body[:-4], length, 10)
    with pytest.raises(codec.ClientError, match="does not fit"):
        codec.decode_v2(body, str(len(body) + 1), 10)
    with pytest.raises(codec.ClientError, match="integer"):
        codec.decode_v2(body, "abc", 10)
    body64, length64 = binary_request(x, datatype="FP64")  # 4-byte floats declared as FP64
    with pytest.raises(codec.ClientError, match="does not match shape and datatype"):
        codec.decode_v2(body64, length64, 10)


def test_v2_batch_limit():
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v2(v1(v2_doc([ROW] * 3)), None, 2)
    assert err.value.status == 413


def test_v1_response_is_plain_json():
    assert orjson.loads(codec.encode_v1(np.array([1.5, 0.0], "f4"))) == {
        "predictions": [1.5, 0.0]}


CALIBRATED = {"ppb": "FP32", "decision_1000": "BYTES", "ppb_lower": "FP32", "ppb_upper": "FP32"}


def test_named_outputs_are_decoded_in_order_with_their_binary_flags():
    doc = v2_doc([ROW], outputs=[{"name": "decision_1000", "parameters": {"binary_data": True}},
                                 {"name": "ppb"}], parameters={"binary_data_output": False})
    req = codec.decode_v2(v1(doc), None, 10)
    assert req.named and req.outputs == [codec.RequestedOutput("decision_1000", True),
                                         codec.RequestedOutput("ppb", False)]
    codec.check_outputs(req.outputs, CALIBRATED)
    plain = codec.decode_v2(v1(v2_doc([ROW])), None, 10)
    assert not plain.named and plain.outputs == [codec.RequestedOutput("ppb", False)]


def test_unknown_outputs_name_what_the_version_offers():
    with pytest.raises(codec.ClientError, match="has outputs ppb, decision_1000"):
        codec.check_outputs([codec.RequestedOutput("decision_42")], CALIBRATED)
    with pytest.raises(codec.ClientError, match="need a version trained with calibration"):
        codec.check_outputs([codec.RequestedOutput("ppb_lower")], {"ppb": "FP32"})


def test_v1_outputs_parameter():
    body = v1({"instances": [ROW], "parameters": {"outputs": ["ppb", "decision_1000"]}})
    x, outputs = codec.decode_v1_request(body, 10)
    assert x.shape == (1, 448) and outputs == [codec.RequestedOutput("decision_1000")]
    for params, words in (({"outputs": "decision_1000"}, "list of output names"),
                          ({"outputs": ["a", "a"]}, "more than once"), (3, "JSON object")):
        with pytest.raises(codec.ClientError, match=words):
            codec.decode_v1_request(v1({"instances": [ROW], "parameters": params}), 10)
    decided = np.array(["accept", "lab"], dtype=object)
    assert orjson.loads(codec.encode_v1(np.array([1.5, 0.0], "f4"),
                                        {"decision_1000": decided})) == {
        "predictions": [1.5, 0.0], "decision_1000": ["accept", "lab"]}


def test_bytes_and_fp32_outputs_json_and_binary():
    decided = np.array(["accept", "reject", "lab"], dtype=object)
    tensors = [codec.Tensor("ppb", "FP32", np.array([1.0, 2.0, 3.0]), False),
               codec.Tensor("decision_1000", "BYTES", decided, False)]
    content, headers = codec.encode_v2(tensors, "m", "1", None)
    assert headers == {} and orjson.loads(content)["outputs"][1] == {
        "name": "decision_1000", "datatype": "BYTES", "shape": [3],
        "data": ["accept", "reject", "lab"]}
    content, headers = codec.encode_v2([t._replace(binary=True) for t in tensors], "m", "1", None)
    json_len = int(headers["Inference-Header-Content-Length"])
    head, raw = orjson.loads(content[:json_len]), content[json_len:]
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [12, 3 * 4 + len("acceptrejectlab")]
    assert raw[12:] == b"\x06\x00\x00\x00accept\x06\x00\x00\x00reject\x03\x00\x00\x00lab"


@pytest.mark.parametrize("datatype", [{}, [], None, 3, True, {"FP32": 1}, ["FP32"]])
def test_v2_datatype_of_any_json_type_is_a_400(datatype):
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v2(v1(v2_doc([ROW], datatype=datatype)), None, 10)
    assert err.value.status == 400 and "FP32 or FP64" in err.value.message


def test_a_boolean_among_numbers_is_refused_not_read_as_one():
    row = ROW[:-1] + [True]
    with pytest.raises(codec.ClientError, match="boolean"):
        codec.decode_v1(v1({"instances": [ROW, row]}), max_rows=10)
    flat = v2_doc(row)
    flat["inputs"][0]["shape"] = [1, 448]
    with pytest.raises(codec.ClientError, match="boolean"):
        codec.decode_v2(v1(flat), None, 10)
    # "true" elsewhere in the document is fine
    ok = v2_doc([ROW], parameters={"binary_data_output": True})
    assert codec.decode_v2(v1(ok), None, 10).binary_output


@pytest.mark.parametrize("value", [1e308, -1e308, 3.5e38, 50.0, -2.0, 1e-320 - 5])
def test_values_outside_the_reflectance_range_are_named(value):
    row = ROW[:-1] + [value]
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v1(v1({"instances": [ROW, row]}), max_rows=10)
    assert err.value.status == 400
    assert "plausible range [-1, 10]" in err.value.message and "row 1 band 447" in err.value.message


def test_reflectance_range_is_configurable_and_real_spectra_pass(real_data_path):
    import pandas as pd
    real = pd.read_csv(real_data_path).iloc[:, 1:449].to_numpy(float)
    assert codec.check_rows(real, max_rows=1000) is real  # the default passes every lab spectrum
    with pytest.raises(codec.ClientError, match=r"\[0, 1\]"):
        codec.check_rows(real, max_rows=1000, valid_range=(0.0, 1.0))


def test_binary_fp64_beyond_float32_is_refused():
    x = np.full((1, 448), 0.5, "<f8")
    x[0, 3] = 1e300
    raw = x.tobytes()
    head = orjson.dumps({"inputs": [{"name": "spectra", "shape": [1, 448], "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(raw)}}]})
    with pytest.raises(codec.ClientError, match="plausible range"):
        codec.decode_v2(head + raw, str(len(head)), 10)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain",
                                          "application/x-www-form-urlencoded", "*/*",
                                          "application/json; charset=utf-8"])
def test_json_is_read_whatever_the_content_type_unless_it_names_another_format(content_type):
    codec.check_json_content_type(content_type)


@pytest.mark.parametrize("content_type", ["text/csv", "application/xml", "multipart/form-data; b=x",
                                          "application/octet-stream", "image/png"])
def test_other_data_formats_are_415(content_type):
    with pytest.raises(codec.ClientError) as err:
        codec.check_json_content_type(content_type)
    assert err.value.status == 415 and content_type.split(";")[0] in err.value.message


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["inputs"][0].update(name=5), '"name" string'),
    (lambda d: d["inputs"][0].pop("name"), '"name" string'),
    (lambda d: d.update(id=None), '"id" must be a string'),
    (lambda d: d.update(outputs=None), '"outputs" must be a list'),
    (lambda d: d["inputs"][0].update(shape=[1.5, 448]), "non-negative integers"),
])
def test_v2_fields_are_typed_as_the_openapi_document_says(mutate, words):
    doc = v2_doc([ROW])
    mutate(doc)
    with pytest.raises(codec.ClientError) as err:
        codec.decode_v2(v1(doc), None, 10)
    assert err.value.status == 400 and words in err.value.message


def test_integral_floats_in_shape_are_integers_as_in_json_schema():
    doc = v2_doc([ROW])
    doc["inputs"][0]["shape"] = [1.0, 448.0]
    assert codec.decode_v2(v1(doc), None, 10).x.shape == (1, 448)
