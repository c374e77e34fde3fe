"""Operational behaviour of real servers: auth, rate limit, refusing a corrupt version, tracing
with W3C trace context, JSON logs with trace ids, and several worker processes."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.fixtures_server import copy_version
from tests.net import free_port

ROW = [0.5] * 448
PREDICT = "/v1/models/don-rf:predict"


def test_bearer_token_from_file_and_open_probes(serving_store, start_server, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("first-token\n")
    server = start_server("don-rf", serving_store / "don-rf" / "1",
                          env={"DON_API_TOKEN_FILE": str(secret)})
    body = {"instances": [ROW]}
    assert requests.post(server.url(PREDICT), json=body).status_code == 401
    wrong = requests.post(server.url(PREDICT), json=body,
                          headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
    assert "Bearer" in wrong.headers["WWW-Authenticate"]
    ok = requests.post(server.url(PREDICT), json=body,
                       headers={"Authorization": "Bearer first-token"})
    assert ok.status_code == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/v1/models/don-rf", "/metrics"):
        assert requests.get(server.url(path)).status_code == 200, path
    assert requests.get(server.url("/status")).status_code == 401
    secret.write_text("rotated-token\n")  # a Secret update, without a restart
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = requests.post(server.url(PREDICT), json=body,
                          headers={"Authorization": "Bearer rotated-token"})
        if r.status_code == 200:
            break
        time.sleep(0.3)
    assert r.status_code == 200
    assert requests.post(server.url(PREDICT), json=body, headers={
        "Authorization": "Bearer first-token"}).status_code == 401


def test_rate_limit_answers_429_with_retry_after(serving_store, start_server):
    server = start_server("don-rf", serving_store / "don-rf" / "1",
                          env={"DON_RATE_LIMIT_RPS": "2", "DON_RATE_LIMIT_BURST": "3"})
    with requests.Session() as session:
        codes = [session.post(server.url(PREDICT), json={"instances": [ROW]})
                 for _ in range(8)]
    statuses = [r.status_code for r in codes]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    limited = next(r for r in codes if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert requests.get(server.url("/v2/health/ready")).status_code == 200  # probes not limited
    time.sleep(float(limited.headers["Retry-After"]))
    assert requests.post(server.url(PREDICT), json={"instances": [ROW]}).status_code == 200


def test_corrupt_version_is_refused_live_but_not_ready(serving_store, start_server, tmp_path):
    def corrupt(d):
        path = d / "model.joblib"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    bad = copy_version(serving_store / "don-rf" / "1", tmp_path / "v1", corrupt)
    server = start_server("don-rf", bad, ready=False)
    assert requests.get(server.url("/v2/health/live")).status_code == 200
    assert requests.get(server.url("/v2/health/ready")).status_code == 503
    assert requests.get(server.url("/v1/models/don-rf")).status_code == 503
    r = requests.post(server.url(PREDICT), json={"instances": [ROW]})
    assert r.status_code == 503 and "model.joblib fails its sha256 check" in r.json()["error"]
    status = requests.get(server.url("/status")).json()
    assert status["state"] == "refused" and "sha256" in status["reason"]
    lines = [json.loads(l) for l in server.log().splitlines() if l.startswith("{")]
    refusal = [l for l in lines if l["message"].startswith("refusing to serve")]
    assert refusal and refusal[0]["level"] == "ERROR"
    assert server.proc.poll() is None  # stays up: a restart cannot fix an immutable version


class _Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP trace receiver on loopback."""
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                _Collector.received.extend(scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_tracing_spans_follow_the_callers_trace_and_logs_carry_it(serving_store, start_server,
                                                                  collector):
    server = start_server("don-rf", serving_store / "don-rf" / "1", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "don-test"})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    ok = requests.post(server.url(PREDICT), json={"instances": [ROW]},
                       headers={"traceparent": parent})
    assert ok.status_code == 200
    bad_trace = "0af7651916cd43dd8448eb211c80319c"
    requests.post(server.url(PREDICT), json={"instances": [[1.0]]},
                  headers={"traceparent": f"00-{bad_trace}-b7ad6b7169203331-01"})
    deadline = time.monotonic() + 15
    names = {}
    while time.monotonic() < deadline:
        names = {s.name: s for s in _Collector.received if s.trace_id.hex() == trace_id}
        if {"decode", "validate", "predict"} <= set(names):
            break
        time.sleep(0.2)
    assert {"decode", "validate", "predict"} <= set(names), list(names)
    root = names["POST v1 infer"]
    assert root.parent_span_id.hex() == "00f067aa0ba902b7"
    assert names["predict"].parent_span_id == root.span_id
    refusal = [json.loads(l) for l in server.log().splitlines()
               if l.startswith("{") and "request refused" in l]
    assert refusal and refusal[-1]["trace_id"] == bad_trace and refusal[-1]["status"] == 400


def test_two_worker_processes_serve_a_trained_version(serving_store, start_server):
    server = start_server("don-rf", serving_store / "don-rf" / "2", "--workers", "2",
                          "--enable_grpc", "false")
    deadline = time.monotonic() + 120
    # Each worker loads its own copy; a new connection per request reaches both, so wait for both.
    while time.monotonic() < deadline:
        answers = [requests.post(server.url(PREDICT), json={"instances": [ROW, ROW]})
                   for _ in range(6)]
        if all(r.status_code == 200 for r in answers):
            break
        time.sleep(0.5)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert {r.headers["X-Model-Version"] for r in answers} == {"2"}
    assert all(len(r.json()["predictions"]) == 2 for r in answers)


def _scrape(server) -> dict[tuple, float]:
    """/metrics as {(sample name, sorted labels): value} (one new connection: any worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(server.url("/metrics"), timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


def test_metrics_with_two_workers_count_every_request(serving_store, start_server):
    """--workers 2: the two HTTP workers and the main process (gRPC) each count their own
    requests; every scrape, whichever worker answers it, shows all of them."""
    import grpc
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    # The parent process answers gRPC, the workers REST: a scrape (served by one worker) that
    # counts the gRPC calls reads every process. Which worker takes each REST connection is the
    # kernel's choice (on a busy machine one may take them all): the totals must hold either way.
    server = start_server("don-rf", serving_store / "don-rf" / "1", "--workers", "2")
    n_rest, n_grpc, n_bad = 40, 5, 3
    for _ in range(n_rest):
        assert requests.post(server.url(PREDICT), json={"instances": [ROW, ROW]},
                             timeout=30).status_code == 200
    for _ in range(n_bad):
        assert requests.post(server.url(PREDICT), json={"instances": [[0.5]]},
                             timeout=30).status_code == 400
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = GRPCInferenceServiceStub(channel)
        for _ in range(n_grpc):
            stub.ModelInfer(pb.ModelInferRequest(
                model_name="don-rf", raw_input_contents=[np.full((1, 448), 0.5, "<f4").tobytes()],
                inputs=[pb.ModelInferRequest.InferInputTensor(name="spectra", datatype="FP32",
                                                              shape=[1, 448])]), timeout=30)
    for _ in range(4):  # several scrapes: they reach different workers
        samples = _scrape(server)
        assert _total(samples, "don_requests_total", protocol="v1", outcome="success") == n_rest
        assert _total(samples, "don_requests_total", protocol="v1",
                      outcome="client_error") == n_bad
        assert _total(samples, "don_requests_total", protocol="grpc", outcome="success") == n_grpc
        assert _total(samples, "don_request_duration_seconds_count") == n_rest + n_bad + n_grpc
        assert _total(samples, "don_prediction_ppb_count") == 2 * n_rest + n_grpc
        assert _total(samples, "don_model_ready", model="don-rf", version="1") == 1
        assert _total(samples, "don_model_info", model="don-rf", version="1") == 1
