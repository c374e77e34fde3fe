"""Independent clients against real servers of both families: tritonclient.http (V2, JSON and
binary tensors) and KServe's own InferenceRESTClient (V1 and V2)."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest


@pytest.fixture(scope="module", params=["rf", "tf"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def version_of(server) -> str:
    return str(json.loads((server.model_dir / "metadata.json").read_text())["version"])


def reference(server, rows) -> np.ndarray:
    import requests

    r = requests.post(server.url(f"/v1/models/{server.model_name}:predict"),
                      json={"instances": rows.tolist()})
    return np.asarray(r.json()["predictions"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http(server, golden_rows, binary):
    import tritonclient.http as httpclient

    rows = np.asarray(golden_rows[:8], dtype=np.float32)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(server.model_name)
        meta = client.get_model_metadata(server.model_name)
        assert meta["versions"] == [version_of(server)]
        tensor = httpclient.InferInput("spectra", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        wanted = httpclient.InferRequestedOutput("ppb", binary_data=binary)
        result = client.infer(server.model_name, [tensor], outputs=[wanted], request_id="t-1")
        response = result.get_response()
        assert response["model_version"] == version_of(server) and response["id"] == "t-1"
        if binary:
            assert "binary_data_size" in response["outputs"][0]["parameters"]
        ppb = result.as_numpy("ppb")
        assert ppb.shape == (8,) and (ppb >= 0).all()
        np.testing.assert_allclose(ppb, reference(server, rows), rtol=1e-5)
        bad = httpclient.InferInput("spectra", [1, 447], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 447), np.float32), binary_data=binary)
        with pytest.raises(Exception, match="448"):
            client.infer(server.model_name, [bad])
    finally:
        client.close()


def test_kserve_rest_client_v1_and_v2(server, golden_rows):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    rows = np.asarray(golden_rows[:4], dtype=np.float32)
    base = f"http://127.0.0.1:{server.http_port}"

    async def call():
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            assert await v2.is_server_ready(base)
            assert await v2.is_model_ready(base, server.model_name)
            headers = {}
            out1 = await v1.infer(base, {"instances": rows.tolist()},
                                  model_name=server.model_name, response_headers=headers)
            results = []
            for binary in (False, True):
                tensor = InferInput("spectra", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows, binary_data=binary)
                v2_headers = {}
                response = await v2.infer(base, InferRequest(
                    server.model_name, infer_inputs=[tensor], request_id="k-1"),
                    model_name=server.model_name, response_headers=v2_headers)
                results.append((response, v2_headers))
            return out1, headers, results
        finally:
            await v1.close()
            await v2.close()

    out1, headers, v2_results = asyncio.run(call())
    assert headers["x-model-version"] == version_of(server)
    expected = np.asarray(out1["predictions"])
    assert expected.shape == (4,) and (expected >= 0).all()
    for result, v2_headers in v2_results:
        # KServe's client drops the body's model_version when parsing; the header carries it
        assert v2_headers["x-model-version"] == version_of(server) and result.id == "k-1"
        np.testing.assert_allclose(result.outputs[0].as_numpy(), expected, rtol=1e-5)
