"""Mirroring through real model servers on loopback: a stable (version 1) mirrors answered
requests to a shadow (version 2) or to a capturing HTTP server standing in for a bad one; both
servers send their prediction records to one real HTTP sink. The caller's answers never change,
the copies carry the request id, the shadow mark and the server's own token, the records pair up
by request id, a bad shadow is counted and never felt, and the setting is re-read at run time."""
from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import requests

from don_core.contract import MIRROR_REQUESTS_METRIC, REQUEST_ID_HEADER, SHADOW_ENV, SHADOW_HEADER
from don_core.records import PredictionRecord
from scripts.records_sink import RecordsSink, serve_on_loopback
from tests.net import free_port

pytestmark = pytest.mark.slow
TOKEN = "mirror-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIRRORED = MIRROR_REQUESTS_METRIC + "_total"


class Capture:
    """A stand-in shadow: a real HTTP server keeping every request; answers `status` after
    `delay` seconds (both changeable while it runs)."""

    def __init__(self):
        self.status, self.delay = 200, 0.0
        self.requests: list[tuple[str, dict, bytes]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                capture.requests.append((self.path, {k.lower(): v for k, v in
                                                     self.headers.items()}, body))
                time.sleep(capture.delay)
                self.send_response(capture.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = serve_on_loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sink():
    sink = RecordsSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def capture():
    capture = Capture()
    yield capture
    capture.close()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mirror-token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tmp_path_factory.mktemp("mirror-config") / "mirror.json"


@pytest.fixture(scope="module")
def shadow(serving_store, start_server, sink, token_file):
    """Started as the operator's shadow pods are (DON_SHADOW=1)."""
    return start_server("don-rf", serving_store / "don-rf" / "2", "--records_url", sink.url,
                        "--records_flush_seconds", "0.2",
                        env={"DON_API_TOKEN_FILE": str(token_file), SHADOW_ENV: "1"})


@pytest.fixture(scope="module")
def stable(serving_store, start_server, sink, token_file, config):
    return start_server("don-rf", serving_store / "don-rf" / "1", "--records_url", sink.url,
                        "--records_flush_seconds", "0.2", "--mirror_config", str(config),
                        "--mirror_queue", "4", env={"DON_API_TOKEN_FILE": str(token_file)})


def metric(server, name: str, **labels) -> float:
    text = requests.get(server.url("/metrics"), timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                      for k, v in labels.items()))


def set_mirror(stable, config, url: str, percent: float) -> None:
    """Write the config file as the operator's ConfigMap would and wait until the running server
    says it uses it (it looks at the file every 2 s)."""
    config.write_text(json.dumps({"url": url, "percent": percent}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = requests.get(stable.url("/status"), headers=AUTH, timeout=5).json()["mirror"]
        if status["url"] == url and status["percent"] == percent:
            return
        time.sleep(0.2)
    raise AssertionError(f"mirror setting not picked up: {status}")


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def calls(rows: np.ndarray, tag: str = "") -> list[tuple[str, dict, bytes]]:
    """V1 JSON, V2 JSON with an id and V2 binary with an X-Request-Id header, 2 rows each."""
    v1 = json.dumps({"instances": rows.tolist(), "sample_ids": ["lot-a", "lot-b"]}).encode()
    v2 = json.dumps({"id": f"req-v2{tag}", "inputs": [
        {"name": "spectra", "shape": [2, 448], "datatype": "FP32", "data": rows.tolist()},
        {"name": "sample_id", "shape": [2], "datatype": "BYTES", "data": ["s-1", "s-2"]}]}).encode()
    raw = rows.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "spectra", "shape": [2, 448], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return [("/v1/models/don-rf:predict", {}, v1), ("/v2/models/don-rf/infer", {}, v2),
            ("/v2/models/don-rf/infer",
             {"Inference-Header-Content-Length": str(len(head)),
              "Content-Type": "application/octet-stream", REQUEST_ID_HEADER: f"hdr-7{tag}"}, head + raw)]


def answers(stable, rows, tag: str = "") -> list[tuple]:
    """(status, body, content type, version, seconds) of each of `calls`."""
    out = []
    for path, headers, body in calls(rows, tag):
        started = time.monotonic()
        r = requests.post(stable.url(path), data=body, headers={**AUTH, **headers}, timeout=10)
        out.append((r.status_code, r.content, r.headers["content-type"],
                    r.headers["x-model-version"], time.monotonic() - started))
    return out


def same_answers(a, b) -> bool:
    return [x[:4] for x in a] == [x[:4] for x in b]


def test_copies_reach_the_shadow_and_both_records_pair_up(stable, shadow, sink, config,
                                                         golden_rows):
    rows = np.asarray(golden_rows[:2])
    sent = metric(stable, MIRRORED, outcome="sent")
    served = metric(shadow, "don_requests_total", outcome="success")
    set_mirror(stable, config, shadow.base, 100)
    assert all(a[0] == 200 for a in answers(stable, rows, "-pair"))
    assert wait_for(lambda: metric(stable, MIRRORED, outcome="sent") == sent + 3)
    # the shadow wants the token too: the copies went with the server's own
    assert metric(shadow, "don_requests_total", outcome="success") == served + 3

    def paired():
        records = [PredictionRecord.from_dict(r) for r in sink.records()]
        mine = {r.request_id for r in records if r.version == 1}
        return [r for r in records if r.request_id in mine] \
            if sum(r.version == 2 for r in records) >= 6 else None

    records = wait_for(paired)
    assert records, "the shadow's records did not arrive"
    shadow_rows = [r for r in records if r.version == 2]
    stable_rows = [r for r in records if r.version == 1 and r.request_id in
                   {s.request_id for s in shadow_rows}]
    assert len(shadow_rows) == 6 and len(stable_rows) == 6
    assert all(r.shadow is True for r in shadow_rows)
    assert all(r.shadow is None for r in records if r.version == 1)
    key = lambda r: (r.request_id, r.row)  # noqa: E731
    assert sorted(map(key, stable_rows)) == sorted(map(key, shadow_rows))
    ids = {r.request_id for r in shadow_rows}
    assert {"req-v2-pair", "hdr-7-pair"} <= ids and len(ids) == 3  # V1 sent none: one generated for both
    by_key = {key(r): r for r in stable_rows}
    for r in shadow_rows:
        assert r.sample_id == by_key[key(r)].sample_id
        assert r.spectrum_sha256 == by_key[key(r)].spectrum_sha256
    assert {r.sample_id for r in shadow_rows} == {"lot-a", "lot-b", "s-1", "s-2", None}


def test_the_copy_carries_our_token_the_request_id_and_the_mark(stable, capture, config,
                                                               golden_rows):
    rows = np.asarray(golden_rows[:2])
    capture.status, capture.delay, capture.requests[:] = 200, 0.0, []
    set_mirror(stable, config, capture.url, 100)
    sent = calls(rows)
    answers(stable, rows)
    assert wait_for(lambda: len(capture.requests) == 3)
    mirrored = {(path, h["x-request-id"]): (h, body) for path, h, body in capture.requests}
    for (path, headers, body), rid in zip(sent, ("?", "req-v2", "hdr-7")):
        matches = [v for (p, i), v in mirrored.items() if p == path and (rid == "?" or i == rid)]
        assert matches, (path, rid, list(mirrored))
        h, copy = matches[0]
        assert copy == body  # the body as the caller sent it
        assert h[SHADOW_HEADER.lower()] == "1" and h["authorization"] == f"Bearer {TOKEN}"
        if "Inference-Header-Content-Length" in headers:
            assert h["inference-header-content-length"] == headers["Inference-Header-Content-Length"]
            assert h["content-type"] == "application/octet-stream"
    v1_ids = [i for (p, i) in mirrored if p.startswith("/v1/")]
    assert len(v1_ids) == 1 and v1_ids[0]  # generated when the caller named none


@pytest.mark.parametrize("fault", ["down", "error", "slow"])
def test_a_bad_shadow_never_changes_the_answer(stable, capture, config, golden_rows, fault):
    rows = np.asarray(golden_rows[:2])
    set_mirror(stable, config, capture.url, 0)
    reference = answers(stable, rows)
    before = {o: metric(stable, MIRRORED, outcome=o) for o in ("sent", "failed", "dropped")}
    capture.status, capture.delay = (500, 0.0) if fault == "error" else (200, 1.5)
    url = f"http://127.0.0.1:{free_port()}" if fault == "down" else capture.url
    set_mirror(stable, config, url, 100)
    got = [answers(stable, rows) for _ in range(4)]  # 12 requests
    for answer in got:
        assert same_answers(answer, reference)
        assert max(a[4] for a in answer) < 1.0  # never waits for the shadow (1.5 s a copy)

    def counted():
        now = {o: metric(stable, MIRRORED, outcome=o) - before[o] for o in before}
        return now if sum(now.values()) == 12 else None

    outcomes = wait_for(counted, 20)
    assert outcomes, {o: metric(stable, MIRRORED, outcome=o) - before[o] for o in before}
    if fault == "slow":  # 4 batches in flight (pipelined), 4 queued, any more dropped
        assert outcomes["sent"] >= 4 and outcomes["failed"] == 0
    else:
        assert outcomes == {"sent": 0, "failed": 12, "dropped": 0}
    capture.status, capture.delay = 200, 0.0


def test_the_setting_changes_at_run_time_without_a_restart(stable, shadow, config, golden_rows):
    rows = np.asarray(golden_rows[:2])
    pid = requests.get(stable.url("/status"), headers=AUTH, timeout=5).json()["pid"]
    counts, got = [], []
    for percent in (0, 100, 0):
        set_mirror(stable, config, shadow.base, percent)
        before = metric(shadow, "don_requests_total", outcome="success")
        got.append(answers(stable, rows))
        time.sleep(1.0)  # copies are sent within milliseconds
        counts.append(metric(shadow, "don_requests_total", outcome="success") - before)
    assert counts == [0, 3, 0]
    assert same_answers(got[0], got[1]) and same_answers(got[1], got[2])  # the caller: no change
    config.write_text("{not json")  # a bad file: the last good setting stays, one line says why
    status = wait_for(lambda: (s := requests.get(stable.url("/status"), headers=AUTH,
                                                 timeout=5).json()["mirror"])["problem"] and s)
    assert "not JSON" in status["problem"] and status["percent"] == 0
    assert f"mirror config {config}: not JSON" in stable.log()
    config.unlink()  # no file, no flags: off
    assert wait_for(lambda: requests.get(stable.url("/status"), headers=AUTH,
                                         timeout=5).json()["mirror"]["url"] is None)
    assert requests.get(stable.url("/status"), headers=AUTH, timeout=5).json()["pid"] == pid


def test_a_copy_without_the_mark_is_still_the_shadows(shadow, sink, golden_rows):
    """A Gateway API RequestMirror copy carries no X-Don-Shadow: a shadow server records it as the
    shadow's all the same, so it pairs with the stable's answer."""
    rows = np.asarray(golden_rows[:2])
    answered = requests.post(shadow.url("/v1/models/don-rf:predict"), timeout=10,
                             headers=dict(AUTH, **{REQUEST_ID_HEADER: "gateway-copy-1"}),
                             json={"instances": rows.tolist(), "sample_ids": ["g-1", "g-2"]})
    assert answered.status_code == 200 and SHADOW_HEADER not in answered.request.headers

    def mine():
        records = [PredictionRecord.from_dict(r) for r in sink.records()]
        return [r for r in records if r.request_id == "gateway-copy-1"] or None

    records = wait_for(mine)
    assert records and len(records) == 2 and all(r.shadow is True for r in records)
