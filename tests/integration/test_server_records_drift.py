"""Outlier scores and prediction records through real model servers on loopback: drift outputs
only when asked (V1, V2 JSON/binary with tritonclient), their metrics, records delivered as
CloudEvents to a real HTTP sink, and a recorder that is down costing no prediction."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests

from don_core.drift import read_reference
from don_core.records import RECORDS_EVENT_TYPE, PredictionRecord, spectrum_sha256
from scripts.records_sink import RecordsSink
from tests.net import free_port

TOKEN = "recorder-secret"


@pytest.fixture(scope="module")
def sink():
    sink = RecordsSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def recording_server(serving_store, start_server, sink, tmp_path_factory):
    token = tmp_path_factory.mktemp("recorder") / "token"
    token.write_text(TOKEN + "\n")
    return start_server("don-rf", serving_store / "don-rf" / "1", "--records_url", sink.url,
                        env={"DON_RECORDS_TOKEN_FILE": str(token)})


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url("/metrics"), timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def far_rows(rows: np.ndarray) -> np.ndarray:
    """Spectra no training row resembles: the band axis reversed."""
    return rows[:, ::-1].copy()


def test_default_responses_are_unchanged_and_drift_is_scored(rf_server, golden_rows):
    rows = np.asarray(golden_rows[:4])
    v1 = requests.post(rf_server.url("/v1/models/don-rf:predict"),
                       json={"instances": rows.tolist()}).json()
    assert list(v1) == ["predictions"]
    v2 = requests.post(rf_server.url("/v2/models/don-rf/infer"), json={"inputs": [
        {"name": "spectra", "shape": [4, 448], "datatype": "FP64",
         "data": rows.tolist()}]}).json()
    assert [o["name"] for o in v2["outputs"]] == ["ppb"]
    assert metric(rf_server, "don_drift_scored_rows_total", model="don-rf") >= 4
    assert metric(rf_server, "don_outlier_score_count", model="don-rf") >= 4


def test_v1_outlier_outputs_on_request(rf_server, golden_rows):
    rows = np.vstack([np.asarray(golden_rows[:3]), far_rows(np.asarray(golden_rows[:2]))])
    flagged_before = metric(rf_server, "don_out_of_distribution_rows_total", model="don-rf")
    doc = requests.post(rf_server.url("/v1/models/don-rf:predict"), json={
        "instances": rows.tolist(),
        "parameters": {"outputs": ["outlier_score", "out_of_distribution"]}}).json()
    reference = read_reference(rf_server.model_dir / "drift.json")
    np.testing.assert_allclose(doc["outlier_score"], reference.score(rows)[0], rtol=1e-6)
    assert doc["out_of_distribution"] == [s > 1 for s in doc["outlier_score"]]
    assert doc["out_of_distribution"][3:] == [True, True]
    assert len(doc["predictions"]) == 5
    assert metric(rf_server, "don_out_of_distribution_rows_total",
                  model="don-rf") >= flagged_before + 2
    bad = requests.post(rf_server.url("/v1/models/don-rf:predict"),
                        json={"instances": rows.tolist(), "parameters": {"outputs": ["logits"]}})
    assert bad.status_code == 400 and "unknown output 'logits'" in bad.json()["error"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_outlier_outputs_with_tritonclient(rf_server, golden_rows, binary):
    import tritonclient.http as httpclient

    rows = np.vstack([np.asarray(golden_rows[:2]), far_rows(np.asarray(golden_rows[:1]))])
    rows = rows.astype(np.float32)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{rf_server.http_port}")
    try:
        spectra = httpclient.InferInput("spectra", list(rows.shape), "FP32")
        spectra.set_data_from_numpy(rows, binary_data=binary)
        ids = httpclient.InferInput("sample_id", [3], "BYTES")
        ids.set_data_from_numpy(np.array([b"lot-1", b"lot-2", b"lot-3"], dtype=object),
                                binary_data=binary)
        wanted = [httpclient.InferRequestedOutput(name, binary_data=binary)
                  for name in ("ppb", "outlier_score", "out_of_distribution")]
        result = client.infer("don-rf", [spectra, ids], outputs=wanted)
        assert [o["name"] for o in result.get_response()["outputs"]] == [
            "ppb", "outlier_score", "out_of_distribution"]
        assert result.as_numpy("ppb").shape == (3,)
        scores = result.as_numpy("outlier_score")
        np.testing.assert_allclose(scores, read_reference(
            rf_server.model_dir / "drift.json").score(rows)[0], rtol=1e-5)
        flags = result.as_numpy("out_of_distribution")
        assert flags.dtype == np.bool_ and flags.tolist() == (scores > 1).tolist() and flags[2]
    finally:
        client.close()


def test_drift_outputs_and_decisions_in_one_request(rf_server, golden_rows):
    """The drift outputs are entries of the one output list the decisions use (V1 and V2)."""
    import tritonclient.http as httpclient

    from don_core.artifact import DECISION_FILE, decision_score
    from don_core.calibration import Calibration

    rows = np.vstack([np.asarray(golden_rows[:2]), far_rows(np.asarray(golden_rows[:1]))])
    calibration = Calibration.from_metadata(
        json.loads((rf_server.model_dir / "metadata.json").read_text()))
    scores = read_reference(rf_server.model_dir / "drift.json").score(rows)[0]
    v1 = requests.post(rf_server.url("/v1/models/don-rf:predict"), json={
        "instances": rows.tolist(),
        "parameters": {"outputs": ["out_of_distribution", "decision_1000", "ppb_upper"]}}).json()
    assert list(v1) == ["predictions", "out_of_distribution", "decision_1000", "ppb_upper"]
    assert v1["out_of_distribution"] == (scores > 1).tolist()
    import onnxruntime as ort   # the decision head's score, from the version's own file
    head = dict(zip(calibration.limits, ort.InferenceSession(
        str(rf_server.model_dir / DECISION_FILE)).run(
        [decision_score(limit) for limit in calibration.limits],
        {"spectra": rows.astype(np.float32)})))
    assert v1["decision_1000"] == calibration.decisions(
        np.asarray(v1["predictions"]), head)[1000].tolist()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{rf_server.http_port}")
    try:
        spectra = httpclient.InferInput("spectra", list(rows.shape), "FP32")
        spectra.set_data_from_numpy(rows.astype(np.float32), binary_data=True)
        wanted = [httpclient.InferRequestedOutput(name, binary_data=True)
                  for name in ("decision_5000", "out_of_distribution", "outlier_score")]
        result = client.infer("don-rf", [spectra], outputs=wanted)
        assert [o["name"] for o in result.get_response()["outputs"]] == [
            "ppb", "decision_5000", "out_of_distribution", "outlier_score"]
        assert set(result.as_numpy("decision_5000").tolist()) <= {b"accept", b"reject", b"lab"}
        assert result.as_numpy("out_of_distribution").tolist() == (scores > 1).tolist()
        np.testing.assert_allclose(result.as_numpy("outlier_score"), scores, rtol=1e-5)
    finally:
        client.close()


def test_records_reach_the_recorder_as_cloudevents(recording_server, sink, golden_rows):
    rows = np.asarray(golden_rows[:3])
    v1 = requests.post(recording_server.url("/v1/models/don-rf:predict"), json={
        "instances": rows.tolist(), "sample_ids": ["lot-a", None, "lot-c"]},
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert v1.status_code == 200
    v2 = requests.post(recording_server.url("/v2/models/don-rf/infer"), json={
        "id": "req-42", "inputs": [
            {"name": "spectra", "shape": [2, 448], "datatype": "FP32",
             "data": rows[:2].tolist()},
            {"name": "sample_id", "shape": [2], "datatype": "BYTES", "data": ["s1", "s2"]}]})
    assert v2.status_code == 200
    records = sink.wait_for(5)
    assert len(records) == 5, records
    headers, _ = sink.events[0]
    assert headers["ce-type"] == RECORDS_EVENT_TYPE and headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] and headers["ce-source"].endswith("/don-rf/1")
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    parsed = [PredictionRecord.from_dict(r) for r in records]  # the contract the recorder reads
    first = [r for r in parsed if r.trace_id == "0af7651916cd43dd8448eb211c80319c"]
    assert [r.sample_id for r in first] == ["lot-a", None, "lot-c"]
    assert [r.row for r in first] == [0, 1, 2] and len({r.request_id for r in first}) == 1
    np.testing.assert_allclose([r.predicted_ppb for r in first], v1.json()["predictions"],
                               rtol=1e-6)
    assert [r.spectrum_sha256 for r in first] == [spectrum_sha256(row) for row in rows]
    assert all(r.outlier_score is not None and r.out_of_distribution is not None for r in first)
    assert all(r.spectrum is None and r.model == "don-rf" and r.version == 1 for r in parsed)
    second = [r for r in parsed if r.request_id == "req-42"]
    assert [r.sample_id for r in second] == ["s1", "s2"]
    # same spectrum over V1 JSON (float64) and V2 FP32: same hash
    assert second[0].spectrum_sha256 == first[0].spectrum_sha256
    assert metric(recording_server, "don_records_sent_total", model="don-rf") == 5
    assert metric(recording_server, "don_records_sender_cpu_seconds_total", model="don-rf") > 0


def test_recorder_down_fails_no_prediction(serving_store, start_server, golden_rows):
    dead = f"http://127.0.0.1:{free_port()}/records"  # nothing listens there
    server = start_server("don-rf", serving_store / "don-rf" / "1", "--records_url", dead,
                          "--records_queue_rows", "50")
    rows = np.asarray(golden_rows[:5]).tolist()
    for _ in range(40):
        r = requests.post(server.url("/v1/models/don-rf:predict"), json={"instances": rows})
        assert r.status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        failed = metric(server, "don_records_dropped_total", reason="send_failed")
        full = metric(server, "don_records_dropped_total", reason="queue_full")
        if failed > 0 and failed + full >= 200:
            break
        time.sleep(0.2)
    assert failed > 0 and full > 0 and failed + full == 200, (failed, full)
    assert metric(server, "don_records_sent_total", model="don-rf") == 0
    assert metric(server, "don_requests_total", outcome="success", protocol="v1") >= 40


@pytest.mark.parametrize("workers", [1, 2])
def test_records_queued_at_shutdown_reach_the_recorder(serving_store, start_server, golden_rows,
                                                       workers):
    """SIGTERM sends the records still waiting for their batch: with a flush interval longer than
    the test none has gone out before it, and every one arrives before the process exits (one
    process, and worker processes, which stop through their own app's shutdown)."""
    sink = RecordsSink()
    try:
        server = start_server("don-rf", serving_store / "don-rf" / "1", "--records_url", sink.url,
                              "--records_flush_seconds", "600", "--workers", str(workers))
        rows = np.asarray(golden_rows[:3]).tolist()
        sent = []
        for i in range(20):
            ids = [f"stop-{workers}-{i}-{j}" for j in range(len(rows))]
            r = requests.post(server.url("/v1/models/don-rf:predict"),
                              json={"instances": rows, "sample_ids": ids},
                              headers={"Connection": "close"})  # spread over the workers
            assert r.status_code == 200
            sent += ids
        assert sink.received == 0  # all still queued
        server.terminate()
        server.proc.wait(30)
        assert sorted(r["sample_id"] for r in sink.records()) == sorted(sent), server.log()[-3000:]
    finally:
        sink.close()


def test_shutdown_waits_a_bounded_time_for_a_recorder_that_never_answers(caplog):
    """A recorder that takes the connection and never answers: close() gives up after its
    timeout and says how many records were not sent."""
    import socket

    from model_server.metrics import ServingMetrics
    from model_server.records import RecordOptions, RecordSender

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        options = RecordOptions(url=f"http://127.0.0.1:{silent.getsockname()[1]}/",
                                flush_seconds=600, timeout_seconds=30)
        sender = RecordSender(options, "don-silent", "1", ServingMetrics("don-silent", "1", "rf", "test"))
        rows = np.zeros((3, 448))
        sender.submit(rows, np.ones(3), None, "r1", None, None, None)
        started = time.monotonic()
        sender.close(timeout=1.0)
        assert time.monotonic() - started < 3
        sender.close(timeout=1.0)  # again (KServe's unload after the app's shutdown): at once
        assert time.monotonic() - started < 3
    assert "stopping with 3 records unsent" in caplog.text


def test_version_without_drift_reference_still_serves(serving_store, start_server, golden_rows,
                                                      tmp_path):
    from tests.fixtures_server import copy_version

    def drop_drift(d):
        (d / "drift.json").unlink()
        meta = json.loads((d / "metadata.json").read_text())
        del meta["artifacts"]["drift"]
        (d / "metadata.json").write_text(json.dumps(meta))

    old = copy_version(serving_store / "don-rf" / "1", tmp_path / "1", drop_drift, rehash=True)
    server = start_server("don-rf", old)
    rows = np.asarray(golden_rows[:2]).tolist()
    ok = requests.post(server.url("/v1/models/don-rf:predict"), json={"instances": rows})
    assert ok.status_code == 200 and list(ok.json()) == ["predictions"]
    asked = requests.post(server.url("/v1/models/don-rf:predict"),
                          json={"instances": rows, "parameters": {"outputs": ["outlier_score"]}})
    assert asked.status_code == 400 and "no drift reference" in asked.json()["error"]
    assert requests.get(server.url("/status")).json()["drift"] is None


def test_grpc_outputs_and_sample_ids_are_recorded(recording_server, sink, golden_rows):
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    rows = np.asarray(golden_rows[:2], dtype=np.float32)

    async def call():
        client = InferenceGRPCClient(f"127.0.0.1:{recording_server.grpc_port}", timeout=30)
        try:
            spectra = InferInput("spectra", [2, 448], "FP32")
            spectra.set_data_from_numpy(rows)
            ids = InferInput("sample_id", [2], "BYTES")
            ids.set_data_from_numpy(np.array([b"g-1", b"g-2"], dtype=np.object_))
            return await client.infer(InferRequest(
                "don-rf", infer_inputs=[spectra, ids], request_id="grpc-7",
                request_outputs=[RequestedOutput("outlier_score"), RequestedOutput("ppb")]))
        finally:
            await client.close()

    response = asyncio.run(call())
    assert [o.name for o in response.outputs] == ["outlier_score", "ppb"]
    np.testing.assert_allclose(response.outputs[0].as_numpy(), read_reference(
        recording_server.model_dir / "drift.json").score(rows)[0], rtol=1e-5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
            r["request_id"] == "grpc-7" for r in sink.records()):
        time.sleep(0.1)
    grpc = [r for r in sink.records() if r["request_id"] == "grpc-7"]
    assert [r["sample_id"] for r in grpc] == ["g-1", "g-2"]


def test_window_statistic_in_status_and_metrics(rf_server, golden_rows):
    """The last rows' mean ln(Q / Q_limit) against the training data's: in /status and as the
    don_drift_window_score gauge, equal to don_core's DriftWindow on the same rows."""
    from don_core.drift import DriftWindow

    reference = read_reference(rf_server.model_dir / "drift.json")
    size = reference.window.rows
    rows = far_rows(np.resize(np.asarray(golden_rows), (size + 20, 448)))
    for batch in (rows[:30], rows[30:]):  # the window spans two requests
        r = requests.post(rf_server.url("/v1/models/don-rf:predict"),
                          json={"instances": batch.tolist()})
        assert r.status_code == 200
    expected = DriftWindow(reference.window, reference.q_limit)
    expected.add(reference.score(rows)[2])
    window = requests.get(rf_server.url("/status")).json()["drift"]["window"]
    assert window["rows"] == window["filled"] == size and window["rows_seen"] >= size + 20
    assert window["score"] == pytest.approx(expected.score(), rel=1e-4)
    assert window["drifted"] is True and window["score"] > 1
    assert metric(rf_server, "don_drift_window_score", model="don-rf") == pytest.approx(
        window["score"], rel=1e-6)


def test_format_1_drift_reference_still_scores_rows(serving_store, start_server, golden_rows,
                                                    tmp_path):
    """A version published before the window statistic (drift.json format 1) serves per-row
    scores as before; its window is off."""
    from tests.fixtures_server import copy_version

    def to_format_1(d):
        doc = json.loads((d / "drift.json").read_text())
        del doc["window"]
        (d / "drift.json").write_text(json.dumps({**doc, "format": 1}))

    old = copy_version(serving_store / "don-rf" / "1", tmp_path / "1", to_format_1, rehash=True)
    server = start_server("don-rf", old)
    rows = np.asarray(golden_rows[:3])
    doc = requests.post(server.url("/v1/models/don-rf:predict"), json={
        "instances": rows.tolist(), "parameters": {"outputs": ["outlier_score"]}}).json()
    np.testing.assert_allclose(doc["outlier_score"], read_reference(
        old / "drift.json").score(rows)[0], rtol=1e-6)
    drift = requests.get(server.url("/status")).json()["drift"]
    assert drift["window"] is None and drift["q_limit"] > 0
