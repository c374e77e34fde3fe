"""Calibrated decisions and intervals, served only when a request names them: tritonclient (HTTP
JSON and binary), KServe's gRPC client, raw JSON V1 and V2, both families; a request naming none
is unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from don_core.calibration import Calibration

EXTRA = ["decision_1000", "decision_5000", "ppb_lower", "ppb_upper"]


@pytest.fixture(scope="module", params=["rf", "tf"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def metadata_of(server) -> dict:
    return json.loads((server.model_dir / "metadata.json").read_text())


def calibration_of(server) -> Calibration:
    return Calibration.from_metadata(metadata_of(server))


def head_scores(server, rows) -> dict[int, np.ndarray]:
    """The decision head's scores straight from the version's ONNX files (not via the server)."""
    import onnxruntime as ort

    files = metadata_of(server)["artifacts"]["decision"]
    return {int(limit): ort.InferenceSession(str(server.model_dir / name)).run(
                [f"score_{limit}"], {"spectra": np.asarray(rows, np.float32)})[0]
            for limit, name in files.items()}


def spread_rows(golden_rows) -> np.ndarray:
    """Golden rows with a spread of predictions, so every decision can occur."""
    return np.asarray(golden_rows[:40], dtype=np.float32)


def check(server, rows, ppb, decisions: dict, lower, upper):
    calibration = calibration_of(server)
    assert calibration.score == "decision_head"   # every trained version decides on its head
    expected = calibration.decisions(ppb, head_scores(server, rows))
    for limit in (1000, 5000):
        got = [d.decode() if isinstance(d, bytes) else d for d in decisions[limit]]
        assert got == expected[limit].tolist(), limit
        assert set(got) <= {"accept", "reject", "lab"}
    want_lower, want_upper = calibration.interval(ppb)
    np.testing.assert_allclose(lower, want_lower, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(upper, want_upper, rtol=1e-5, atol=1e-3)
    assert (lower <= ppb + 1e-3).all() and (ppb <= upper + 1e-3).all()


def test_version_metadata_lists_the_extra_outputs(server):
    meta = requests.get(server.url(f"/v2/models/{server.model_name}")).json()
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "ppb": "FP32", "decision_1000": "BYTES", "decision_5000": "BYTES", "ppb_lower": "FP32",
        "ppb_upper": "FP32", "outlier_score": "FP32", "out_of_distribution": "BOOL"}


def test_requests_naming_no_outputs_are_unchanged(server, golden_rows):
    rows = spread_rows(golden_rows)[:3].tolist()
    v1 = requests.post(server.url(f"/v1/models/{server.model_name}:predict"),
                       json={"instances": rows})
    assert list(v1.json()) == ["predictions"]
    v2 = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
        "inputs": [{"name": "spectra", "shape": [3, 448], "datatype": "FP32", "data": rows}]})
    body = v2.json()
    assert [o["name"] for o in body["outputs"]] == ["ppb"]
    assert set(body) == {"model_name", "model_version", "outputs"}
    assert set(body["outputs"][0]) == {"name", "datatype", "shape", "data"}


def test_raw_json_v1_and_v2(server, golden_rows):
    rows = spread_rows(golden_rows)
    v1 = requests.post(server.url(f"/v1/models/{server.model_name}:predict"),
                       json={"instances": rows.tolist(), "parameters": {"outputs": EXTRA}})
    assert v1.status_code == 200, v1.text
    doc = v1.json()
    assert list(doc) == ["predictions", *EXTRA]
    ppb = np.asarray(doc["predictions"])
    check(server, rows, ppb, {1000: doc["decision_1000"], 5000: doc["decision_5000"]},
          np.asarray(doc["ppb_lower"]), np.asarray(doc["ppb_upper"]))
    v2 = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
        "inputs": [{"name": "spectra", "shape": list(rows.shape), "datatype": "FP32",
                    "data": rows.tolist()}],
        "outputs": [{"name": name} for name in ["ppb", *EXTRA]]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert list(outputs) == ["ppb", *EXTRA]
    assert outputs["decision_1000"]["datatype"] == "BYTES"
    assert outputs["ppb_lower"]["datatype"] == "FP32"
    np.testing.assert_allclose(outputs["ppb"]["data"], ppb, rtol=1e-6)
    check(server, rows, ppb, {1000: outputs["decision_1000"]["data"],
                        5000: outputs["decision_5000"]["data"]},
          np.asarray(outputs["ppb_lower"]["data"]), np.asarray(outputs["ppb_upper"]["data"]))
    # what is named, beside ppb (a caller naming only the extras still gets the prediction)
    one = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
        "inputs": [{"name": "spectra", "shape": [1, 448], "datatype": "FP32",
                    "data": rows[:1].tolist()}], "outputs": [{"name": "decision_5000"}]})
    assert [o["name"] for o in one.json()["outputs"]] == ["ppb", "decision_5000"]


@pytest.mark.parametrize("body, words", [
    ({"outputs": [{"name": "decision_42"}]}, "unknown output 'decision_42'"),
    ({"outputs": [{"name": "ppb"}, {"name": "ppb"}]}, "more than once"),
    ({"outputs": [{"name": "ppb_lower", "parameters": []}]}, "JSON object"),
])
def test_bad_output_requests_get_400(server, golden_rows, body, words):
    rows = spread_rows(golden_rows)[:1].tolist()
    r = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
        "inputs": [{"name": "spectra", "shape": [1, 448], "datatype": "FP32", "data": rows}],
        **body})
    assert r.status_code == 400 and words in r.json()["error"]
    r = requests.post(server.url(f"/v1/models/{server.model_name}:predict"), json={
        "instances": rows, "parameters": {"outputs": ["decision_42"]}})
    assert r.status_code == 400 and "decision_1000" in r.json()["error"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http(server, golden_rows, binary):
    import tritonclient.http as httpclient

    rows = spread_rows(golden_rows)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        tensor = httpclient.InferInput("spectra", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput(name, binary_data=binary)
                  for name in ["ppb", *EXTRA]]
        result = client.infer(server.model_name, [tensor], outputs=wanted)
        ppb = result.as_numpy("ppb")
        check(server, rows, ppb, {1000: result.as_numpy("decision_1000"),
                            5000: result.as_numpy("decision_5000")},
              result.as_numpy("ppb_lower"), result.as_numpy("ppb_upper"))
        assert result.as_numpy("ppb_lower").dtype == np.float32
    finally:
        client.close()


def test_grpc(server, golden_rows):
    """KServe's gRPC client (tritonclient.grpc's protos clash with KServe's in one process)."""
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    rows = spread_rows(golden_rows)

    async def call():
        client = InferenceGRPCClient(f"127.0.0.1:{server.grpc_port}", timeout=30)
        try:
            def request(names):
                tensor = InferInput("spectra", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows)
                return InferRequest(server.model_name, infer_inputs=[tensor], request_outputs=[
                    RequestedOutput(name) for name in names] or None)
            named = await client.infer(request(EXTRA))  # ppb comes first, named or not
            plain = await client.infer(request([]))
            with pytest.raises(Exception) as err:
                await client.infer(request(["decision_42"]))
            return named, plain, err.value
        finally:
            await client.close()

    named, plain, error = asyncio.run(call())
    outputs = {o.name: o.as_numpy() for o in named.outputs}
    assert list(outputs) == ["ppb", *EXTRA]
    check(server, rows, outputs["ppb"], {1000: outputs["decision_1000"],
                                   5000: outputs["decision_5000"]},
          outputs["ppb_lower"], outputs["ppb_upper"])
    assert [o.name for o in plain.outputs] == ["ppb"]    # names nothing: ppb only
    assert "INVALID_ARGUMENT" in str(error) and "decision_42" in str(error)
