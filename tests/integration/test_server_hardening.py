"""Doors a careless or hostile caller tried (issue 13), against real servers: gRPC behind the same
token and per-caller limits as HTTP, refusals counted, an unusable token file, bad inputs that
once gave 5xx, gzip and form-typed bodies, swapped model files, and draining on SIGTERM."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from tests.fixtures_server import ServerProcess, copy_version

ROW = [0.5] * 448
PREDICT = "/v1/models/don-rf:predict"


def grpc_infer(server, token: str | None = None, method: str = "ModelInfer",
               caller: str | None = None, value: float = 0.5):
    """One real gRPC call (grpcio and KServe's own protobuf stubs): (status code name, details)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    if caller:
        metadata += (("x-forwarded-for", caller),)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        if method == "ModelInfer":
            request = pb.ModelInferRequest(
                model_name="don-rf", inputs=[pb.ModelInferRequest.InferInputTensor(
                    name="spectra", datatype="FP32", shape=[1, 448])],
                raw_input_contents=[np.full((1, 448), value, "<f4").tobytes()])
        elif method == "RepositoryModelUnload":
            request = pb.RepositoryModelUnloadRequest(model_name="don-rf")
        elif method == "ServerReady":
            request = pb.ServerReadyRequest()
        else:
            request = getattr(pb, f"{method}Request")(name="don-rf")
        try:
            getattr(stub, method)(request, metadata=metadata, timeout=20)
        except grpc.RpcError as err:
            return err.code().name, err.details()
    return "OK", ""


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url("/metrics")).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    line = next((l for l in text.splitlines() if l.startswith(f"{name}{{{want}}}")), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


@pytest.fixture(scope="module")
def guarded(serving_store, start_server, tmp_path_factory):
    """Token from a file, a rate limit, a failure limit, and the caller from X-Forwarded-For (each
    test below calls as its own callers, so that their buckets stay apart)."""
    secret = tmp_path_factory.mktemp("secret") / "token"
    secret.write_text("the-token\n")
    return start_server("don-rf", serving_store / "don-rf" / "1", env={
        "DON_API_TOKEN_FILE": str(secret), "DON_RATE_LIMIT_RPS": "0.1",
        "DON_RATE_LIMIT_BURST": "6", "DON_AUTH_FAILURE_RPS": "0.1", "DON_AUTH_FAILURE_BURST": "3",
        "DON_CLIENT_ID_HEADER": "X-Forwarded-For"})


def refused(server, outcome: str, protocol: str) -> float:
    return metric(server, "don_requests_refused_total", outcome=outcome, protocol=protocol)


def test_grpc_needs_the_same_bearer_token_as_http(guarded):
    before = {p: refused(guarded, "unauthenticated", p) for p in ("grpc", "http")}
    assert grpc_infer(guarded, None, caller="10.0.1.1")[0] == "UNAUTHENTICATED"
    assert grpc_infer(guarded, "wrong", caller="10.0.1.2")[0] == "UNAUTHENTICATED"
    assert grpc_infer(guarded, "the-token", caller="10.0.1.1") == ("OK", "")
    assert grpc_infer(guarded, "the-token", "ModelMetadata", caller="10.0.1.1") == ("OK", "")
    assert grpc_infer(guarded, None, "ModelMetadata", caller="10.0.1.3")[0] == "UNAUTHENTICATED"
    # health checks stay open, as on HTTP; the repository API stays shut even with the token
    assert grpc_infer(guarded, None, "ServerReady") == ("OK", "")
    assert grpc_infer(guarded, "the-token", "RepositoryModelUnload",
                      caller="10.0.1.1")[0] == "PERMISSION_DENIED"
    assert grpc_infer(guarded, "the-token", caller="10.0.1.1") == ("OK", "")  # still serving
    # and its tensors pass the same validation as REST
    code, details = grpc_infer(guarded, "the-token", caller="10.0.1.5", value=3e38)
    assert code == "INVALID_ARGUMENT" and "plausible range" in details
    r = requests.post(guarded.url(PREDICT), json={"instances": [ROW]},
                      headers={"X-Forwarded-For": "10.0.1.4"})
    assert r.status_code == 401
    assert refused(guarded, "unauthenticated", "grpc") - before["grpc"] == 3
    assert refused(guarded, "unauthenticated", "http") - before["http"] == 1


def test_rate_limit_is_per_caller_on_both_ports_and_counted(guarded):
    before = {p: refused(guarded, "rate_limited", p) for p in ("grpc", "http")}
    auth = {"Authorization": "Bearer the-token"}

    def http(caller):
        return requests.post(guarded.url(PREDICT), json={"instances": [ROW]},
                             headers={**auth, "X-Forwarded-For": f"{caller}, 10.9.9.9"})

    limited = [http("10.0.2.1") for _ in range(7)]
    assert [r.status_code for r in limited] == [200] * 6 + [429]
    assert int(limited[-1].headers["Retry-After"]) >= 1
    assert http("10.0.2.2").status_code == 200  # the same shared token, another caller
    # gRPC counts against the same caller's bucket, and has a bucket per caller too
    assert grpc_infer(guarded, "the-token", caller="10.0.2.1")[0] == "RESOURCE_EXHAUSTED"
    answers = [grpc_infer(guarded, "the-token", caller="10.0.2.3")[0] for _ in range(7)]
    assert answers == ["OK"] * 6 + ["RESOURCE_EXHAUSTED"], answers
    assert refused(guarded, "rate_limited", "grpc") - before["grpc"] == 2
    assert refused(guarded, "rate_limited", "http") - before["http"] == 1
    assert requests.get(guarded.url("/v2/health/ready")).status_code == 200  # probes not limited


def test_wrong_token_flood_is_slowed_and_counted(guarded):
    before = {o: refused(guarded, o, "http") for o in ("unauthenticated", "auth_throttled")}
    with requests.Session() as session:
        codes = [session.post(guarded.url(PREDICT), json={"instances": [ROW]},
                              headers={"Authorization": f"Bearer guess-{i}",
                                       "X-Forwarded-For": "10.0.3.1"}).status_code
                 for i in range(5)]
    assert codes == [401] * 3 + [429] * 2
    assert refused(guarded, "unauthenticated", "http") - before["unauthenticated"] == 3
    assert refused(guarded, "auth_throttled", "http") - before["auth_throttled"] == 2
    # guesses are no longer checked for this caller, on either port; other callers are unaffected
    assert grpc_infer(guarded, "the-token", caller="10.0.3.1")[0] == "RESOURCE_EXHAUSTED"
    assert grpc_infer(guarded, "the-token", caller="10.0.3.2") == ("OK", "")


def test_unusable_token_file_fails_clearly_at_start(serving_store, start_server, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("\n")  # an empty Secret (a missing file: the unit tests)
    server = start_server("don-rf", serving_store / "don-rf" / "1", ready=False,
                          env={"DON_API_TOKEN_FILE": str(secret)})
    for path in ("/v2/health/live", "/metrics"):
        assert requests.get(server.url(path)).status_code == 200, path
    for path in ("/v2/health/ready", "/v1/models/don-rf", "/v2/models/don-rf/ready"):
        assert requests.get(server.url(path)).status_code == 503, path
    for r in (requests.get(server.url("/status")),
              requests.post(server.url(PREDICT), json={"instances": [ROW]},
                            headers={"Authorization": "Bearer x"})):
        assert r.status_code == 503 and "DON_API_TOKEN_FILE" in r.json()["error"], r.text
        assert "empty" in r.json()["error"]
    code, details = grpc_infer(server, "x")
    assert code == "UNAVAILABLE" and "DON_API_TOKEN_FILE" in details
    lines = [json.loads(l) for l in server.log().splitlines() if l.startswith("{")]
    assert any(l["level"] == "ERROR" and "DON_API_TOKEN_FILE" in l["message"] for l in lines)
    assert server.proc.poll() is None


@pytest.fixture(scope="module")
def open_server(serving_store, start_server):
    return start_server("don-rf", serving_store / "don-rf" / "1", "--max_batch_rows", "50",
                        "--reflectance_range=-1,5", env={"DON_MAX_BODY_BYTES": "200000"})


@pytest.mark.parametrize("family", ["rf", "tf"])
def test_values_beyond_float32_and_the_plausible_range_are_400(request, family):
    server = request.getfixturevalue(f"{family}_server")
    name = server.model_name
    before = metric(server, "don_prediction_ppb_sum", model=name,
                    version=json.loads((server.model_dir / "metadata.json").read_text())["version"])
    for value in (1e308, 3.5e38, 1e6, -5.0):
        r = requests.post(server.url(f"/v1/models/{name}:predict"),
                          json={"instances": [ROW[:-1] + [value]]})
        assert r.status_code == 400 and "plausible range" in r.json()["error"], (value, r.text)
        v2 = {"inputs": [{"name": "spectra", "shape": [1, 448], "datatype": "FP64",
                          "data": ROW[:-1] + [value]}]}
        r = requests.post(server.url(f"/v2/models/{name}/infer"), json=v2)
        assert r.status_code == 400 and "plausible range" in r.json()["error"], (value, r.text)
    assert requests.post(server.url(f"/v1/models/{name}:predict"),
                         json={"instances": [ROW]}).status_code == 200
    text = requests.get(server.url("/metrics")).text
    assert "NaN" not in text and metric(server, "don_prediction_ppb_sum", model=name, version=json.loads(
        (server.model_dir / "metadata.json").read_text())["version"]) >= before


def test_odd_json_types_and_booleans_are_400_never_5xx(open_server):
    infer = open_server.url("/v2/models/don-rf/infer")
    for datatype in ({}, [], None, 1, True, ["FP32"]):
        doc = {"inputs": [{"name": "spectra", "shape": [1, 448], "datatype": datatype,
                           "data": ROW}]}
        r = requests.post(infer, json=doc)
        assert r.status_code == 400 and "FP32 or FP64" in r.json()["error"], (datatype, r.text)
    r = requests.post(open_server.url(PREDICT), json={"instances": [ROW[:-1] + [True]]})
    assert r.status_code == 400 and "boolean" in r.json()["error"]
    assert metric(open_server, "don_requests_total", model="don-rf", outcome="server_error",
                  protocol="v2", version="1") == 0


def test_reflectance_range_flag(open_server):
    r = requests.post(open_server.url(PREDICT), json={"instances": [[5.5] * 448]})
    assert r.status_code == 400 and "[-1, 5]" in r.json()["error"]


def test_gzip_bodies_are_inflated_within_the_limit(open_server):
    body = json.dumps({"instances": [ROW, ROW]}).encode()
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    r = requests.post(open_server.url(PREDICT), data=gzip.compress(body), headers=gz)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    plain = requests.post(open_server.url(PREDICT), data=body).json()["predictions"]
    assert r.json()["predictions"] == plain
    bomb = gzip.compress(b" " * 5_000_000)  # ~5 kB that inflates past the 200 kB body limit
    r = requests.post(open_server.url(PREDICT), data=bomb, headers=gz)
    assert r.status_code == 413 and "inflates" in r.json()["error"]
    r = requests.post(open_server.url(PREDICT), data=b"not gzip", headers=gz)
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = requests.post(open_server.url(PREDICT), data=body, headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "'br'" in r.json()["error"]


def test_curl_default_form_content_type_is_read_as_json(open_server):
    # curl -d '{...}' sends application/x-www-form-urlencoded
    r = requests.post(open_server.url(PREDICT), data=json.dumps({"instances": [ROW]}),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    r = requests.post(open_server.url(PREDICT), data="a,b\n1,2",
                      headers={"Content-Type": "text/csv"})
    assert r.status_code == 415 and "text/csv" in r.json()["error"]


def test_swapped_model_files_with_recomputed_hashes_are_refused(serving_store, start_server,
                                                                tmp_path):
    other = serving_store / "don-rf" / "2"

    def swap(d):
        for name in ("model.joblib", "model.onnx"):
            (d / name).write_bytes((other / name).read_bytes())

    bad = copy_version(serving_store / "don-rf" / "1", tmp_path / "v1", swap, rehash=True)
    server = start_server("don-rf", bad, ready=False)
    assert requests.get(server.url("/v2/health/ready")).status_code == 503
    status = requests.get(server.url("/status")).json()
    assert status["state"] == "refused"
    assert "differ from those recorded at training time" in status["reason"]
    assert "differ from those recorded at training time" in server.log()


def test_prestop_drain_then_sigterm_finishes_in_flight_requests(serving_store, tmp_path):
    # every prediction takes 2 s, so that SIGTERM lands while one is in flight
    server = ServerProcess("don-rf", serving_store / "don-rf" / "1", tmp_path / "server.log",
                           fault="slow:2")
    try:
        server.wait()
        with requests.Session() as session:
            first = session.post(server.url(PREDICT), json={"instances": [ROW]})
            assert first.status_code == 200 and first.headers.get("connection") != "close"
            # the chart's preStop hook, pointed at this server instead of PID 1
            hook = subprocess.run([sys.executable, "-m", "model_server.drain", "0"], timeout=30,
                                  env={**os.environ, "DON_SERVER_PID": str(server.proc.pid)})
            assert hook.returncode == 0
            assert requests.get(server.url("/v2/health/ready")).status_code == 503
            assert requests.get(server.url("/v2/models/don-rf/ready")).status_code == 503
            during = session.post(server.url(PREDICT), json={"instances": [ROW]})
            assert during.status_code == 200 and during.headers["connection"] == "close"
        answers = []
        caller = threading.Thread(target=lambda: answers.append(requests.post(
            server.url(PREDICT), json={"instances": [ROW, ROW]}, timeout=30)))
        caller.start()
        time.sleep(0.7)
        os.kill(server.proc.pid, signal.SIGTERM)
        caller.join(30)
        assert answers and answers[0].status_code == 200, answers
        assert len(answers[0].json()["predictions"]) == 2
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
