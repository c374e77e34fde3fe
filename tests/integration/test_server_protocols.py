"""A real server on loopback: V1, V2 (JSON and binary), gRPC, health, metadata, status, metrics,
and a 4xx naming the problem for every kind of bad input, after which it keeps serving."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import requests

ROW = [0.5] * 448


@pytest.fixture(scope="module", params=["rf", "tf"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def version_of(server) -> str:
    return str(json.loads((server.model_dir / "metadata.json").read_text())["version"])


def test_v1_predicts_a_batch_in_ppb(server, golden_rows):
    r = requests.post(server.url(f"/v1/models/{server.model_name}:predict"),
                      json={"instances": golden_rows[:10]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 10 and all(p >= 0 for p in preds)
    assert r.headers["X-Model-Version"] == version_of(server)


def test_v2_json_fp32_and_fp64_agree(server, golden_rows):
    answers = []
    for datatype in ("FP32", "FP64"):
        r = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
            "id": "req-1", "inputs": [{"name": "spectra", "shape": [3, 448],
                                       "datatype": datatype, "data": golden_rows[:3]}]})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_version"] == version_of(server) == r.headers["X-Model-Version"]
        assert doc["id"] == "req-1" and doc["outputs"][0]["shape"] == [3]
        answers.append(doc["outputs"][0]["data"])
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-4)


def test_v1_and_v2_give_the_same_predictions(server, golden_rows):
    v1 = requests.post(server.url(f"/v1/models/{server.model_name}:predict"),
                       json={"instances": golden_rows[:5]}).json()["predictions"]
    v2 = requests.post(server.url(f"/v2/models/{server.model_name}/infer"), json={
        "inputs": [{"name": "spectra", "shape": [5, 448], "datatype": "FP64",
                    "data": golden_rows[:5]}]}).json()["outputs"][0]["data"]
    np.testing.assert_allclose(v1, v2, rtol=1e-6)


def test_health_metadata_and_status(server):
    name = server.model_name
    assert requests.get(server.url("/v2/health/live")).status_code == 200
    assert requests.get(server.url("/v2/health/ready")).json() == {"ready": True}
    assert requests.get(server.url(f"/v1/models/{name}")).json()["ready"] is True
    assert requests.get(server.url(f"/v2/models/{name}/ready")).status_code == 200
    meta = requests.get(server.url(f"/v2/models/{name}")).json()
    assert meta["versions"] == [version_of(server)]
    assert meta["inputs"][0]["shape"] == [-1, 448]
    status = requests.get(server.url(f"/v2/models/{name}/status")).json()
    assert status["version"] == version_of(server) and status["ready"]
    assert status["family"] in ("sklearn", "tensorflow")
    assert status["rss_bytes"] > 10_000_000 and status["uptime_seconds"] > 0
    assert status["load_seconds"] > 0 and status["backend"] == "onnxruntime"
    phases = status["load_phases"]  # where start-to-ready goes, per load phase
    assert list(phases) == ["verify", "golden", "backend", "warm_up"]
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= status["load_seconds"] + 0.01
    assert requests.get(server.url("/status")).json()["model"] == name
    other = version_of(server) + "0"
    r = requests.post(server.url(f"/v2/models/{name}/versions/{other}/infer"), json={})
    assert r.status_code == 404 and "not served here" in r.json()["error"]


def bad_requests(name):
    v1, v2 = f"/v1/models/{name}:predict", f"/v2/models/{name}/infer"
    json_type = {"Content-Type": "application/json"}

    def v2doc(**tensor):
        base = {"name": "spectra", "shape": [1, 448], "datatype": "FP32", "data": ROW}
        return json.dumps({"inputs": [{**base, **tensor}]})

    return [
        (v1, json.dumps({"instances": [[0.5] * 447]}), json_type, 400, "448 bands"),
        (v1, json.dumps({"instances": [["x"] * 448]}), json_type, 400, "numbers"),
        (v1, '{"instances": [[NaN]]}', json_type, 400, "malformed JSON"),
        (v1, json.dumps({"instances": [ROW[:-1] + [1e309]]}).replace("Infinity", "1e999"),
         json_type, 400, ""),
        (v1, json.dumps({"instances": []}), json_type, 400, "empty batch"),
        (v1, json.dumps({"instances": [ROW] * 60}), json_type, 413, "limit of 50 rows"),
        (v1, '{"instances": [[0.5, ', json_type, 400, "malformed JSON"),
        (v1, "instances=1", {"Content-Type": "application/x-www-form-urlencoded"}, 400,
         "malformed JSON"),
        (v1, json.dumps({"instances": [ROW]}), {"Content-Type": "application/xml"}, 415,
         "content type"),
        (v1, json.dumps({"instances": [ROW[:-1] + [1e308]]}), json_type, 400, "plausible range"),
        (v2, v2doc(datatype={}), json_type, 400, "FP32 or FP64"),
        (v2, v2doc(shape=[1, 100]), json_type, 400, "[n, 448]"),
        (v2, v2doc(datatype="BYTES"), json_type, 400, "FP32 or FP64"),
        (v2, v2doc(data=["a"] * 448), json_type, 400, "numbers"),
        (v2, v2doc(shape=[0, 448], data=[]), json_type, 400, "empty batch"),
        (v2, v2doc(), {"Inference-Header-Content-Length": "99999"}, 400, "does not fit"),
        ("/v1/models/other:predict", json.dumps({"instances": [ROW]}), json_type, 404,
         "not served here"),
    ]


@pytest.fixture(scope="module")
def small_limit_server(serving_store, start_server):
    return start_server("don-rf", serving_store / "don-rf" / "1", "--max_batch_rows", "50",
                        env={"DON_MAX_BODY_BYTES": "200000"})


@pytest.mark.parametrize("case", range(len(bad_requests("don-rf"))))
def test_bad_request_is_4xx_with_reason(small_limit_server, case):
    path, body, headers, status, words = bad_requests("don-rf")[case]
    r = requests.post(small_limit_server.url(path), data=body, headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()


def test_oversized_body_is_413_and_server_keeps_serving(small_limit_server):
    long_row = [0.123456789012] * 448
    big = json.dumps({"instances": [long_row] * 40}).encode()  # under the row limit
    assert len(big) > 200_000
    r = requests.post(small_limit_server.url("/v1/models/don-rf:predict"), data=big,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "byte limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield json.dumps(long_row).encode() + b","

    r = requests.post(small_limit_server.url("/v1/models/don-rf:predict"), data=chunks(),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    ok = requests.post(small_limit_server.url("/v1/models/don-rf:predict"),
                       json={"instances": [ROW]})
    assert ok.status_code == 200


def test_metrics_count_outcomes_by_version(small_limit_server):
    url = small_limit_server.url("/v1/models/don-rf:predict")
    requests.post(url, json={"instances": [ROW, ROW]})
    requests.post(url, json={"instances": [[1.0]]})
    text = requests.get(small_limit_server.url("/metrics")).text
    version = version_of(small_limit_server)

    def value(prefix):
        line = next(l for l in text.splitlines() if l.startswith(prefix))
        return float(line.rsplit(" ", 1)[1])

    labels = f'model="don-rf",outcome="%s",protocol="v1",version="{version}"'
    assert value("don_requests_total{" + labels % "success") >= 1
    assert value("don_requests_total{" + labels % "client_error") >= 1
    assert value("don_requests_total{" + labels % "server_error") == 0
    assert value(f'don_request_duration_seconds_count{{model="don-rf",protocol="v1",'
                 f'version="{version}"}}') >= 2
    assert value(f'don_prediction_ppb_count{{model="don-rf",version="{version}"}}') >= 2
    assert f'don_model_info{{backend="onnxruntime",family="sklearn",model="don-rf",' \
           f'version="{version}"}} 1.0' in text


def test_repository_and_explain_endpoints_are_closed(rf_server):
    r = requests.post(rf_server.url("/v2/repository/models/don-rf/unload"))
    assert r.status_code == 403
    assert requests.post(rf_server.url("/v1/models/don-rf:explain"), json={}).status_code == 404
    assert requests.get(rf_server.url("/v2/health/ready")).status_code == 200


def test_grpc_v2_as_kserve_provides_it(rf_server, golden_rows):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def call():
        client = InferenceGRPCClient(f"127.0.0.1:{rf_server.grpc_port}", timeout=30)
        try:
            tensor = InferInput("spectra", [2, 448], "FP32")
            tensor.set_data_from_numpy(np.asarray(golden_rows[:2], dtype=np.float32))
            ok = await client.infer(InferRequest("don-rf", infer_inputs=[tensor]))
            bad = InferInput("spectra", [1, 10], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 10), np.float32))
            with pytest.raises(Exception) as err:
                await client.infer(InferRequest("don-rf", infer_inputs=[bad]))
            return ok, err.value
        finally:
            await client.close()

    response, error = asyncio.run(call())
    assert response.model_version == version_of(rf_server)
    preds = response.outputs[0].as_numpy()
    assert preds.shape == (2,) and (preds >= 0).all()
    assert "INVALID_ARGUMENT" in str(error) and "448" in str(error)


def test_the_same_bad_tensor_gets_the_same_message_over_rest_json_binary_and_grpc(rf_server):
    """One decoder: REST JSON, the REST binary extension and gRPC refuse alike, word for word."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    url = rf_server.url("/v2/models/don-rf/infer")
    cases = [("INT32", [1, 448], np.zeros((1, 448), "<i4")),
             ("FP32", [1, 447], np.full((1, 447), 0.5, "<f4")),
             ("FP32", [2, 448], np.where(np.arange(896) == 600, 50.0, 0.5).astype("<f4"))]
    with grpc.insecure_channel(f"127.0.0.1:{rf_server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        for datatype, shape, values in cases:
            tensor = {"name": "spectra", "datatype": datatype, "shape": shape}
            as_json = requests.post(url, json={"inputs": [{**tensor,
                                                           "data": values.ravel().tolist()}]})
            raw = values.tobytes()
            head = json.dumps({"inputs": [{**tensor, "parameters": {
                "binary_data_size": len(raw)}}]}).encode()
            as_binary = requests.post(url, data=head + raw, headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream"})
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(pb.ModelInferRequest(
                    model_name="don-rf", raw_input_contents=[raw],
                    inputs=[pb.ModelInferRequest.InferInputTensor(**tensor)]), timeout=20)
            assert as_json.status_code == as_binary.status_code == 400
            message = as_json.json()["error"]
            assert as_binary.json()["error"] == message
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == message, (err.value.details(), message)
