"""The prediction recorder against real databases (SQLite and a real PostgreSQL) over real HTTP.

Records in as CloudEvents (ours and KServe's payload-logger pairs), lab results in as CSV (bad rows
named), live accuracy out as JSON and Prometheus metrics, checked against a hand computation; a
shadow's answers beside the stable's, paired on the same lots (/v1/pairs); migration 0001 -> 0002.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from don_core.contract import PAIRS_DETAIL_FIELDS
from don_core.records import (KSERVE_REQUEST_EVENT_TYPE, KSERVE_RESPONSE_EVENT_TYPE, RECORDS_EVENT_TYPE,
                              records_body, spectrum_sha256)
from ops.recorder import accuracy, db, pairs
from ops.recorder.server import Settings, make_server
from ops.rollout import live_accuracy
from ops.rollout.spec import LiveAccuracySpec
from tests.conftest import REPO
from tests.net import free_port, wait_for_http

TOKEN = "s3cret-token"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)


def _iso(when: dt.datetime) -> str:
    return when.isoformat() + "Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'recorder.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def recorder(db_url, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(db_url=db_url, port=0, token_file=str(token_file), metrics_cache_seconds=0,
                        retention_interval=3600)
    server, rec = make_server(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rec
    server.shutdown()
    server.server_close()
    rec.engine.dispose()


def _post(url: str, body: bytes, headers: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **headers}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _ce(kind: str, event_id: str | None = None, **extra) -> dict:
    return {"ce-specversion": "1.0", "ce-type": kind, "ce-id": event_id or uuid.uuid4().hex,
            "ce-source": "http://don-rf-predictor/", **extra}


def _record(i: int, sample_id: str | None, ppb: float, when: dt.datetime = NOW, model="don-rf", version=2):
    row = {"time": _iso(when), "model": model, "version": version, "request_id": f"req-{i}", "row": 0,
           "predicted_ppb": ppb, "spectrum_sha256": f"{i:064x}", "caller": "lab-a", "outlier_score": 1.5,
           "out_of_distribution": False}
    return {**row, "sample_id": sample_id} if sample_id else row


def _send_records(rec, records: list[dict], **kw) -> tuple[int, dict]:
    return _post(rec.url + "/", json.dumps({"records": records}).encode(), _ce(RECORDS_EVENT_TYPE), **kw)


def test_migrated_schema_matches_the_tables(recorder):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    with recorder.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
    assert db.current_revision(recorder.engine) == db.HEAD
    db.migrate(recorder.engine)  # idempotent


def test_records_are_stored_once(recorder):
    records = [_record(i, f"lot-{i}", 100.0 * i) for i in range(3)]
    assert _send_records(recorder, records) == (202, {"accepted": 3, "stored": 3, "duplicates": 0})
    # A redelivered event (at-least-once) does not count twice.
    assert _send_records(recorder, records) == (202, {"accepted": 3, "stored": 0, "duplicates": 3})
    with recorder.engine.connect() as conn:
        rows = conn.execute(sa.select(db.predictions).order_by(db.predictions.c.id)).mappings().all()
    assert [r["sample_id"] for r in rows] == ["lot-0", "lot-1", "lot-2"]
    assert rows[2]["predicted_ppb"] == 200.0 and rows[0]["time"] == NOW and rows[0]["caller"] == "lab-a"
    metrics = urllib.request.urlopen(recorder.url + "/metrics").read().decode()
    assert 'don_recorder_records_total{outcome="stored"} 3.0' in metrics
    assert 'don_recorder_records_total{outcome="duplicate"} 3.0' in metrics


@pytest.mark.parametrize("mutate, status, needle", [
    (lambda h, b: (h, b[:-3]), 400, "not valid JSON"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "ce-id"}, b), 400, "ce-id"),
    (lambda h, b: ({**h, "ce-specversion": "0.3"}, b), 400, "ce-specversion"),
    (lambda h, b: ({**h, "ce-type": "com.example.other"}, b), 400, "ce-type"),
    (lambda h, b: (h, b"[1, 2]"), 400, '{"records"'),
    (lambda h, b: (h, b.replace(b'"predicted_ppb": 5.0', b'"predicted_ppb": NaN')), 400, "NaN"),
    (lambda h, b: (h, b.replace(b'"predicted_ppb": 5.0', b'"predicted_ppb": "5"')), 400, "records[0]: predicted_ppb"),
    (lambda h, b: (h, b.replace(b'"version": 2', b'"version": 99999999999999999999')), 400, "records[0]: version"),
    (lambda h, b: (h, b.replace(b'"lot-x"', b'"lot\\u0000x"')), 400, "sample_id contains a NUL"),
    (lambda h, b: (h, b.replace(b'"lot-x"', b'"' + b"x" * 300 + b'"')), 400, "sample_id is longer"),
    (lambda h, b: (h, b.replace(b'"row": 0', b'"row": 0, "colour": 1')), 400, "colour"),
    (lambda h, b: (h, b.replace(b'"time": "', b'"time": "yesterday ')), 400, "records[0]: time"),
    (lambda h, b: (h, b.replace(b'"spectrum_sha256": "', b'"spectrum_sha256": "zz')), 400, "spectrum_sha256"),
])
def test_bad_events_get_a_4xx_naming_the_problem(recorder, mutate, status, needle):
    body = json.dumps({"records": [_record(1, "lot-x", 5.0)]}).encode()
    headers, body = mutate(_ce(RECORDS_EVENT_TYPE), body)
    got, doc = _post(recorder.url + "/", body, headers)
    assert (got, needle in doc["error"]) == (status, True), doc
    assert db.count(recorder.engine, db.predictions) == 0


def _column_form(records: list[dict]) -> dict:
    """The same records (one 1-row request each) in the column form the model server sends."""
    requests = {name: [r.get(name) for r in records] for name in ("time", "request_id", "caller")}
    rows = {name: [r.get(name) for r in records]
            for name in ("predicted_ppb", "spectrum_sha256", "sample_id", "outlier_score", "out_of_distribution")}
    return records_body(records[0]["model"], records[0]["version"], {**requests, "rows": [1] * len(records)}, rows)


def test_the_column_form_is_stored_like_the_row_form(recorder):
    records = [_record(i, f"lot-{i}" if i else None, 100.0 * i) for i in range(3)]
    body = json.dumps(_column_form(records)).encode()
    assert _post(recorder.url + "/", body, _ce(RECORDS_EVENT_TYPE)) == (
        202, {"accepted": 3, "stored": 3, "duplicates": 0})
    # the row form of the same records: the same rows (all duplicates)
    assert _send_records(recorder, records) == (202, {"accepted": 3, "stored": 0, "duplicates": 3})
    with recorder.engine.connect() as conn:
        rows = conn.execute(sa.select(db.predictions).order_by(db.predictions.c.id)).mappings().all()
    assert [r["sample_id"] for r in rows] == [None, "lot-1", "lot-2"]
    assert [r["row"] for r in rows] == [0, 0, 0] and rows[2]["predicted_ppb"] == 200.0
    assert rows[0]["time"] == NOW and rows[1]["caller"] == "lab-a" and rows[1]["outlier_score"] == 1.5


@pytest.mark.parametrize("mutate, status, needle", [
    (lambda d: d["requests"].update(rows=[1, 1]), 400, "add up to 2 rows"),
    (lambda d: d["rows"].update(predicted_ppb=[1.0, "2", 3.0]), 400, "records[1]: predicted_ppb"),
    (lambda d: d["requests"].update(request_id=[None, "b", "c"]), 400, "records[0]: request_id"),
    (lambda d: d.update(model=None), 400, "records[0]: model"),
    (lambda d: d["rows"].update(colour=[1, 2, 3]), 400, "unknown rows column"),
    (lambda d: d["rows"].update(predicted_ppb=[1.0] * 100_001), 413, "at most"),
])
def test_bad_column_forms_get_a_4xx_naming_the_column(recorder, mutate, status, needle):
    doc = _column_form([_record(i, None, 5.0) for i in range(3)])
    mutate(doc)
    got, answer = _post(recorder.url + "/", json.dumps(doc).encode(), _ce(RECORDS_EVENT_TYPE))
    assert (got, needle in answer["error"]) == (status, True), answer
    assert db.count(recorder.engine, db.predictions) == 0


def test_writes_need_the_token(recorder):
    assert _send_records(recorder, [_record(1, None, 5.0)], token=None)[0] == 401
    assert _send_records(recorder, [_record(1, None, 5.0)], token="wrong")[0] == 401
    assert _post(recorder.url + "/v1/labresults", b"sample_id\n", {}, token=None)[0] == 401
    assert db.count(recorder.engine, db.predictions) == 0
    # A chunked body (no Content-Length) is read too.
    body = json.dumps({"records": [_record(1, None, 5.0)]}).encode()
    request = urllib.request.Request(recorder.url + "/", method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", **_ce(RECORDS_EVENT_TYPE), "Transfer-Encoding": "chunked"},
        data=iter([body[:10], body[10:]]))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["stored"] == 1


def test_kserve_logger_pairs_become_records(recorder):
    rng = np.random.default_rng(0)
    spectra = rng.uniform(0.2, 1.1, size=(2, 448))
    # V1: the response arrives first; the request carries the caller's sample ids.
    v1_id = "kserve-v1"
    status, doc = _post(recorder.url + "/", json.dumps({"predictions": [1200.5, 30.0]}).encode(),
                        _ce(KSERVE_RESPONSE_EVENT_TYPE, v1_id, **{"ce-inferenceservicename": "don-rf"}))
    assert status == 202 and doc["stored"] == 0
    request = {"instances": spectra.tolist(), "sample_ids": ["lot-a", None]}
    status, doc = _post(recorder.url + "/", json.dumps(request).encode(),
                        _ce(KSERVE_REQUEST_EVENT_TYPE, v1_id, **{"ce-inferenceservicename": "don-rf"}))
    assert (status, doc["stored"]) == (202, 2)
    # V2: the version comes from the response's model_version.
    v2_request = {"inputs": [{"name": "spectra", "shape": [2, 448], "datatype": "FP32",
                              "data": spectra.reshape(-1).tolist()},
                             {"name": "sample_id", "shape": [2], "datatype": "BYTES", "data": ["lot-v2", "lot-w2"]}]}
    v2_response = {"model_name": "don-rf", "model_version": "3",
                   "outputs": [{"name": "ppb", "shape": [2], "datatype": "FP32", "data": [10.0, 20.0]}]}
    assert _post(recorder.url + "/", json.dumps(v2_request).encode(), _ce(KSERVE_REQUEST_EVENT_TYPE, "kserve-v2"))[0] == 202
    assert _post(recorder.url + "/", json.dumps(v2_response).encode(), _ce(KSERVE_RESPONSE_EVENT_TYPE, "kserve-v2"))[1]["stored"] == 2
    with recorder.engine.connect() as conn:
        rows = conn.execute(sa.select(db.predictions).order_by(db.predictions.c.id)).mappings().all()
    assert [(r["model"], r["version"], r["request_id"], r["row"], r["sample_id"], r["predicted_ppb"]) for r in rows] == [
        ("don-rf", 0, v1_id, 0, "lot-a", 1200.5), ("don-rf", 0, v1_id, 1, None, 30.0),
        ("don-rf", 3, "kserve-v2", 0, "lot-v2", 10.0), ("don-rf", 3, "kserve-v2", 1, "lot-w2", 20.0)]
    # The recorder hashes the spectrum the way the model server does (float32 bytes).
    assert rows[0]["spectrum_sha256"] == spectrum_sha256(spectra[0]) == rows[2]["spectrum_sha256"]
    assert rows[0]["spectrum"] is None
    # A pair whose row counts disagree is the sender's fault.
    _post(recorder.url + "/", json.dumps(request).encode(), _ce(KSERVE_REQUEST_EVENT_TYPE, "odd"))
    status, doc = _post(recorder.url + "/", json.dumps({"predictions": [1.0]}).encode(),
                        _ce(KSERVE_RESPONSE_EVENT_TYPE, "odd", **{"ce-inferenceservicename": "don-rf"}))
    assert status == 422 and "2 rows" in doc["error"]
    status, doc = _post(recorder.url + "/", json.dumps({"instances": [[1.0, 2.0]]}).encode(),
                        _ce(KSERVE_REQUEST_EVENT_TYPE, "short"))
    assert status == 400 and "448 bands" in doc["error"]


def _csv(rows: list[tuple]) -> bytes:
    return ("sample_id,vomitoxin_ppb,method,measured_at\r\n" +
            "".join(",".join(str(c) for c in row) + "\r\n" for row in rows)).encode()


def _import_cli(tmp_path, recorder, data: bytes, *extra) -> subprocess.CompletedProcess:
    path = tmp_path / "results.csv"
    path.write_bytes(data)
    token = tmp_path / "token"
    return subprocess.run([sys.executable, "-m", "ops", "labresults", "import", str(path), "--url", recorder.url,
                           "--token-file", str(token), *extra], cwd=REPO, capture_output=True, text=True, timeout=60)


# Truth and predictions for the hand computation (ppb).
TRUTH = [0.0, 500.0, 2000.0, 8000.0]
PRED = [100.0, 1500.0, 800.0, 9000.0]


def _by_hand(truth, pred) -> dict:
    lt, lp = [math.log1p(t) for t in truth], [math.log1p(p) for p in pred]
    mean = sum(lt) / len(lt)
    ss_res = sum((a - b) ** 2 for a, b in zip(lt, lp))
    ss_tot = sum((a - mean) ** 2 for a in lt)
    return {"mae": sum(abs(a - b) for a, b in zip(lt, lp)) / len(lt), "r2": 1 - ss_res / ss_tot}


def test_lab_results_join_predictions_into_live_accuracy(recorder, tmp_path):
    # Four samples predicted now by version 2; one more predicted 3 days ago (7d/30d windows only);
    # version 3 predicted lot-0 too; a later repeat of lot-1 by version 2 replaces the first.
    records = [_record(i, f"lot-{i}", p) for i, p in enumerate(PRED)]
    records.append(_record(10, "lot-old", 7000.0, when=NOW - dt.timedelta(days=3)))
    records.append(_record(11, "lot-0", 50.0, version=3))
    records.append(_record(12, "lot-unmeasured", 50.0))
    assert _send_records(recorder, records)[0] == 202
    earlier = _record(13, "lot-1", 99999.0, when=NOW - dt.timedelta(hours=1))
    assert _send_records(recorder, [earlier])[0] == 202
    (tmp_path / "token").write_text(TOKEN)

    bad = _csv([("lot-0", 0, "HPLC", "2026-11-30"), ("lot-1", "abc", "ELISA", "2026-11-30"),
                ("", 5, "HPLC", "2026-11-30"), ("lot-3", 8000, "HPLC", "30/11/2026")])
    result = _import_cli(tmp_path, recorder, bad)
    assert result.returncode == 2, result.stderr
    assert "row 2, column vomitoxin_ppb: 'abc'" in result.stderr
    assert "row 3, column sample_id: is empty" in result.stderr
    assert "row 4, column measured_at: '30/11/2026'" in result.stderr
    assert "nothing stored" in result.stderr
    assert db.count(recorder.engine, db.lab_results) == 0
    # --partial keeps the good row; then the full, good file (the repeated row is a duplicate).
    assert _import_cli(tmp_path, recorder, bad, "--partial").returncode == 0
    assert db.count(recorder.engine, db.lab_results) == 1
    good = _csv([(f"lot-{i}", t, "HPLC", "2026-11-30T10:00:00Z" if i else "2026-11-30") for i, t in enumerate(TRUTH)]
                + [("lot-old", 6000, "ELISA", "2026-11-29")])
    result = _import_cli(tmp_path, recorder, good)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 stored, 1 duplicates, 0 rejected"

    with urllib.request.urlopen(recorder.url + "/v1/accuracy?model=don-rf&version=2") as resp:
        report = json.load(resp)
    by_window = {r["window"]: r for r in report["results"]}
    assert set(by_window) == {"1d", "7d", "30d"} and report["thresholdsPpb"] == [1000, 5000]
    day = by_window["1d"]
    hand = _by_hand(TRUTH, PRED)
    assert day["matched"] == 4
    assert day["maeLog1p"] == pytest.approx(hand["mae"]) and day["r2Log1p"] == pytest.approx(hand["r2"])
    # 1000 ppb: contaminated 2000 (pred 800: accepted) and 8000 (pred 9000); clean 0, 500 (pred 1500: rejected).
    assert day["thresholds"]["1000"] == {"contaminated": 2, "clean": 2, "falseAcceptRate": 0.5,
                                         "falseRejectRate": 0.5, "balancedAccuracy": 0.5}
    assert day["thresholds"]["5000"] == {"contaminated": 1, "clean": 3, "falseAcceptRate": 0.0,
                                         "falseRejectRate": 0.0, "balancedAccuracy": 1.0}
    week = by_window["7d"]
    assert week["matched"] == 5
    assert week["maeLog1p"] == pytest.approx(_by_hand(TRUTH + [6000.0], PRED + [7000.0])["mae"])
    v3 = json.load(urllib.request.urlopen(recorder.url + "/v1/accuracy?version=3"))["results"][0]
    assert (v3["matched"], v3["r2Log1p"], v3["thresholds"]["1000"]["balancedAccuracy"]) == (1, None, None)

    # The rollout operator's optional gate reads the same JSON.
    settings = LiveAccuracySpec.parse({"recorderUrl": recorder.url, "window": "1d", "minMatched": 1})
    gate = live_accuracy.check(settings, "don-rf", 2, 3, 10)
    assert gate["result"] == "Pass" and "no matched sample above 1000 ppb" in gate["note"]
    gate = live_accuracy.check(settings, "don-rf", 2, 2, 10)
    assert (gate["result"], gate["value"]) == ("Pass", 0.0)

    metrics = urllib.request.urlopen(recorder.url + "/metrics").read().decode()
    labels = 'model="don-rf",threshold_ppb="1000",version="2",window="1d"'
    assert f"don_live_false_accept_rate{{{labels}}} 0.5" in metrics
    assert 'don_live_matched_samples{model="don-rf",version="2",window="7d"} 5.0' in metrics
    assert f'don_live_mae_log1p{{model="don-rf",version="2",window="1d"}} {hand["mae"]!r}' in metrics
    assert 'don_recorder_lab_results_total{outcome="rejected"} 7.0' in metrics


def test_accuracy_series_per_day_against_a_hand_computation(recorder):
    """GET /v1/accuracy/series: per model, version and UTC day, the live figures of that day's
    predictions (a sample repeated within a day counts once, latest) and its out-of-distribution
    rate (flagged / scored; rows without a drift score are not scored)."""
    def at(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
        return dt.datetime(2026, 11, day, hour, minute, second)

    def rec(i, sample, ppb, when, version=2, ood=False, model="don-rf"):
        return {**_record(i, sample, ppb, when=when, model=model, version=version), "out_of_distribution": ood}

    records = [rec(1, "lot-a", 100.0, at(29, 10)), rec(2, "lot-b", 3000.0, at(29, 10), ood=True),
               rec(3, None, 50.0, at(29, 11), ood=None),
               rec(4, "lot-a", 200.0, at(29, 18)),               # replaces lot-a's 10:00 prediction
               rec(5, "lot-a", 400.0, at(30, 9)), rec(6, "lot-c", 6000.0, at(30, 9)),
               rec(7, "lot-b", 1.0, at(27, 23, 59, 59)),         # the day before the span
               rec(8, "lot-c", 1.0, at(30, 23, 59, 59) + dt.timedelta(seconds=1)),   # the day after
               rec(9, "lot-b", 800.0, at(30, 12), version=3, ood=True),
               rec(10, "lot-c", 9.0, at(28, 1), model="don-tf", version=1)]
    assert _send_records(recorder, records)[1]["stored"] == 10
    lab = _csv([("lot-a", 150, "HPLC", "2026-11-30"), ("lot-a", 250, "ELISA", "2026-11-30"),
                ("lot-b", 2500, "HPLC", "2026-11-30"), ("lot-c", 5500, "HPLC", "2026-12-01")])
    assert _post(recorder.url + "/v1/labresults", lab, {"Content-Type": "text/csv"})[0] == 200

    def get(query: str) -> dict:
        with urllib.request.urlopen(recorder.url + "/v1/accuracy/series?" + query, timeout=30) as resp:
            return json.load(resp)

    doc = get("model=don-rf&days=3&to=2026-11-30")
    assert (doc["from"], doc["to"], doc["days"], doc["thresholdsPpb"]) == ("2026-11-28", "2026-11-30", 3, [1000, 5000])
    assert [(s["model"], s["version"]) for s in doc["series"]] == [("don-rf", 2), ("don-rf", 3)]
    v2, v3 = ({p["day"]: p for p in s["points"]} for s in doc["series"])
    assert list(v2) == ["2026-11-29", "2026-11-30"] and list(v3) == ["2026-11-30"]
    # 29th: lot-a twice (latest 200 vs its lab mean 200), lot-b (3000 vs 2500), one row without an
    # id or a drift score; one of the three scored rows flagged.
    day = v2["2026-11-29"]
    assert (day["predictions"], day["scored"], day["outOfDistribution"]) == (4, 3, 1)
    assert day["oodRate"] == pytest.approx(1 / 3)
    hand = _by_hand([200.0, 2500.0], [200.0, 3000.0])
    assert day["matched"] == 2 and day["maeLog1p"] == pytest.approx(hand["mae"])
    assert day["r2Log1p"] == pytest.approx(hand["r2"])
    assert day["thresholds"]["1000"] == {"contaminated": 1, "clean": 1, "falseAcceptRate": 0.0,
                                         "falseRejectRate": 0.0, "balancedAccuracy": 1.0}
    assert day["thresholds"]["5000"]["falseAcceptRate"] is None        # nothing above 5000 yet
    # 30th: lot-a again (400: a new day, a new pair) and lot-c (6000 vs 5500); nothing flagged.
    day = v2["2026-11-30"]
    assert (day["predictions"], day["scored"], day["outOfDistribution"], day["oodRate"]) == (2, 2, 0, 0.0)
    assert day["matched"] == 2 and day["maeLog1p"] == pytest.approx(_by_hand([200.0, 5500.0], [400.0, 6000.0])["mae"])
    assert day["thresholds"]["5000"]["falseAcceptRate"] == 0.0
    # version 3 accepted lot-b (800 <= 1000) that the lab measured at 2500: a false accept.
    day = v3["2026-11-30"]
    assert (day["predictions"], day["oodRate"], day["matched"]) == (1, 1.0, 1)
    assert day["maeLog1p"] == pytest.approx(abs(math.log1p(2500) - math.log1p(800)))
    assert day["thresholds"]["1000"]["falseAcceptRate"] == 1.0 and day["r2Log1p"] is None
    # filters and span: one version; one day; no model of that name; the default span ends today
    assert [s["version"] for s in get("model=don-rf&version=3&days=3&to=2026-11-30")["series"]] == [3]
    only = get("days=1&to=2026-11-28")["series"]
    assert [(s["model"], [p["day"] for p in s["points"]]) for s in only] == [("don-tf", ["2026-11-28"])]
    assert get("model=don-xx&days=366&to=2026-11-30")["series"] == []
    default = get("")
    assert default["days"] == 30 and default["to"] == dt.datetime.now(dt.UTC).date().isoformat()
    for query, needle in (("days=0", "days '0'"), ("days=367", "from 1 to 366"), ("days=x", "days 'x'"),
                          ("to=30/11/2026", "YYYY-MM-DD"), ("to=0001-01-01", "between"),
                          ("version=99999999999", "whole number"), ("version=-1", "whole number"),
                          ("version=%C2%B2", "whole number"), ("days=%C2%B2", "days"),
                          ("model=a%00b", "no NUL"), ("model=" + "m" * 254, "253")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(recorder.url + "/v1/accuracy/series?" + query, timeout=30)
        assert err.value.code == 400 and needle in json.load(err.value)["error"], query


def test_bad_lab_files_and_queries_are_4xx(recorder):
    cases = [(b"", "empty"), (b"sample_id,ppb\n", "missing"), (b"\xff\xfe\x00", "UTF-8"),
             (b"sample_id,vomitoxin_ppb,method,measured_at\n", "no rows"),
             (_csv([("a", 1, "HPLC", "2026-01-01", "extra")]), "5 cells")]
    for body, needle in cases:
        status, doc = _post(recorder.url + "/v1/labresults", body, {"Content-Type": "text/csv"})
        assert status in (400, 422) and needle in json.dumps(doc), (body, doc)
    # before: "²" dropped the connection (int() refused what isdigit() let by); a NUL was a 503 on PostgreSQL
    for query in ("version=x", "version=%C2%B2", "model=a%00b"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(recorder.url + "/v1/accuracy?" + query)
        assert err.value.code == 400, query


def test_retention_and_size_limits(recorder):
    old = [_record(i, None, 1.0, when=NOW - dt.timedelta(days=100)) for i in range(3)]
    new = [_record(10 + i, None, 1.0) for i in range(5)]
    assert _send_records(recorder, old + new)[1]["stored"] == 8
    db.insert_lab_results(recorder.engine, [
        {"sample_id": "s", "vomitoxin_ppb": 1.0, "method": "HPLC", "measured_at": NOW - dt.timedelta(days=200),
         "imported_at": NOW}])
    assert db.enforce_limits(recorder.engine, db.Limits(retention_days=90, max_rows=3)) == {"retention": 4, "size": 2}
    with recorder.engine.connect() as conn:
        kept = conn.execute(sa.select(db.predictions.c.request_id).order_by(db.predictions.c.id)).scalars().all()
    assert kept == ["req-12", "req-13", "req-14"]  # the newest three
    assert db.count(recorder.engine, db.lab_results) == 0
    # The periodic job runs it and counts what it deleted.
    recorder.retention.interval = 0.05
    recorder.retention.limits = db.Limits(retention_days=90, max_rows=1)
    recorder.retention.start()
    wait = threading.Event()
    for _ in range(100):
        if db.count(recorder.engine, db.predictions) == 1:
            break
        wait.wait(0.05)
    recorder.retention.stop()
    assert db.count(recorder.engine, db.predictions) == 1
    assert 'don_recorder_records_deleted_total{reason="size"} 2.0' in \
        urllib.request.urlopen(recorder.url + "/metrics").read().decode()


def test_cli_serves_sqlite_with_token_and_migrate_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrated = subprocess.run([sys.executable, "-m", "ops", "recorder", "migrate", "--db", url], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0 and f"revision {db.HEAD}" in migrated.stdout, migrated.stderr
    refused = subprocess.run([sys.executable, "-m", "ops", "recorder", "serve", "--db", url], cwd=REPO,
                             capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert refused.returncode == 2 and "token" in refused.stderr
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "ops", "recorder", "serve", "--db", url, "--port", str(port),
                                "--token-file", str(tmp_path / "token")], cwd=REPO, stderr=subprocess.PIPE)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=30, process=process, ok_only=True)

        class Rec:
            url = f"http://127.0.0.1:{port}"
        assert _send_records(Rec, [_record(1, "lot-1", 5.0)])[1]["stored"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_model_servers_records_are_judged_by_the_lab(recorder, serving_store, start_server, tmp_path):
    """The whole loop on loopback: a real model server records its predictions to the recorder
    (bearer token from a file), the lab's results for those samples come in through the CLI, and
    the live accuracy equals a hand computation on the server's own answers."""
    version = serving_store / "don-rf" / "1"
    golden = json.loads((version / "golden.json").read_text())
    # the lab's values for other rows: a version predicts its own golden rows almost exactly
    rows, truth = golden["instances"], golden["targets_ppb"][7:] + golden["targets_ppb"][:7]
    server = start_server("don-rf", version, "--records_url", recorder.url + "/",
                          env={"DON_RECORDS_TOKEN_FILE": str(tmp_path / "token")})
    run = uuid.uuid4().hex[:8]
    ids = [f"loop-{run}-{i}" for i in range(len(rows))]
    answer = json.loads(urllib.request.urlopen(urllib.request.Request(
        server.url("/v1/models/don-rf:predict"), data=json.dumps({"instances": rows, "sample_ids": ids}).encode(),
        headers={"Content-Type": "application/json"}), timeout=60).read())
    pred = answer["predictions"]
    result = _import_cli(tmp_path, recorder, _csv([(s, t, "HPLC", "2026-11-30") for s, t in zip(ids, truth)]))
    assert result.returncode == 0 and result.stdout.strip() == f"{len(ids)} stored, 0 duplicates, 0 rejected", result
    for _ in range(150):  # the server sends within about a second; no result before the first match
        results = json.load(urllib.request.urlopen(recorder.url + "/v1/accuracy?model=don-rf&version=1"))["results"]
        day = results[0] if results else {"matched": 0}
        if day["matched"] == len(ids):
            break
        threading.Event().wait(0.1)
    assert day["window"] == "1d" and day["matched"] == len(ids), day
    hand = _by_hand(truth, pred)
    # the answer's float32 predictions in JSON's shortest form; the records carry their exact value
    assert day["maeLog1p"] == pytest.approx(hand["mae"], rel=1e-6)
    assert day["r2Log1p"] == pytest.approx(hand["r2"], rel=1e-6)
    for limit in (1000, 5000):
        contaminated = [p for t, p in zip(truth, pred) if t > limit]
        clean = [p for t, p in zip(truth, pred) if t <= limit]
        assert contaminated and clean
        got = day["thresholds"][str(limit)]
        assert (got["contaminated"], got["clean"]) == (len(contaminated), len(clean))
        assert got["falseAcceptRate"] == pytest.approx(sum(p <= limit for p in contaminated) / len(contaminated))
        assert got["falseRejectRate"] == pytest.approx(sum(p > limit for p in clean) / len(clean))


# ---- shadow records and paired figures ------------------------------------------------------------
# A stable version serves, a candidate answers mirrored copies in shadow; both are posted as
# CloudEvents (the column form the model server sends), the lab's results come in as CSV, and
# /v1/pairs is checked against a hand computation.

STABLE, CANDIDATE = 1, 2
# lot: (lab ppb, stable's answer, shadow's answer); hand-picked so that both limits see errors.
LOTS = {"lot-a": (0.0, 0.0, 99.0), "lot-b": (2000.0, 3000.0, 800.0), "lot-c": (8000.0, 4000.0, 8000.0),
        "lot-d": (500.0, 1500.0, 450.0), "lot-e": (6000.0, 6100.0, 5900.0)}
assert list(LOTS) == sorted(LOTS)  # the order /v1/pairs lists the lots in


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _columns(version: int, request_ids: list[str], sample_ids: list[list[str]], ppb: list[list[float]],
             shadow: bool) -> bytes:
    """One event in the column form the model server sends: one request per id, its rows in order."""
    body = records_body("don-rf", version,
                        {"time": [_iso(NOW)] * len(request_ids), "request_id": request_ids,
                         "shadow": [shadow] * len(request_ids), "rows": [len(s) for s in sample_ids]},
                        {"predicted_ppb": [p for row in ppb for p in row],
                         "spectrum_sha256": [f"{i:064x}" for i in range(sum(len(s) for s in sample_ids))],
                         "sample_id": [s for row in sample_ids for s in row]})
    return json.dumps(body).encode()


def _send(recorder, body: bytes) -> None:
    status, doc = _post(recorder.url + "/", body, _ce(RECORDS_EVENT_TYPE))
    assert status == 202, doc


def _paired_traffic(recorder, tmp_path) -> None:
    # lot-a..lot-c one request each; lot-d and lot-e two rows of one request (rows must line up).
    requests = [["lot-a"], ["lot-b"], ["lot-c"], ["lot-d", "lot-e"]]
    ids = [f"req-{i}" for i in range(len(requests))]
    _send(recorder, _columns(STABLE, ids, requests, [[LOTS[s][1] for s in r] for r in requests], shadow=False))
    _send(recorder, _columns(CANDIDATE, ids, requests, [[LOTS[s][2] for s in r] for r in requests], shadow=True))
    # An earlier request for lot-a: the latest pair counts, this one not.
    early = {**_record(90, "lot-a", 7777.0, version=STABLE), "time": _iso(NOW - dt.timedelta(hours=2))}
    assert _send_records(recorder, [early, {**early, "version": CANDIDATE, "predicted_ppb": 1.0,
                                            "shadow": True}])[0] == 202
    # Not pairs: a served answer no shadow saw; a shadow record naming another sample; a lot with no
    # lab result; another candidate's shadow answer to the same request.
    alone = _record(91, "lot-f", 10.0, version=STABLE)
    stray = [_record(92, "lot-g", 10.0, version=STABLE), {**_record(92, "lot-h", 10.0, version=CANDIDATE),
                                                          "shadow": True}]
    unmeasured = [_record(93, "lot-x", 10.0, version=STABLE), {**_record(93, "lot-x", 10.0, version=CANDIDATE),
                                                               "shadow": True}]
    other = [{**_record(0, "lot-a", 5.0, version=3), "request_id": "req-0", "shadow": True}]
    assert _send_records(recorder, [alone, *stray, *unmeasured, *other])[0] == 202
    (tmp_path / "token").write_text(TOKEN)
    rows = [(lot, truth, "HPLC", "2026-11-30") for lot, (truth, _, _) in LOTS.items()]
    rows += [("lot-f", 20.0, "HPLC", "2026-11-30"), ("lot-g", 20, "HPLC", "2026-11-30"),
             ("lot-h", 20, "HPLC", "2026-11-30")]
    result = _import_cli(tmp_path, recorder, _csv(rows))
    assert result.returncode == 0, result.stderr


def _pairs_by_hand() -> dict:
    """The paired figures of LOTS computed with the standard library."""
    truth = [t for t, _, _ in LOTS.values()]
    err = {side: [abs(math.log1p(v[i]) - math.log1p(v[0])) for v in LOTS.values()]
           for side, i in (("stable", 1), ("candidate", 2))}
    diffs = [b - a for a, b in zip(err["stable"], err["candidate"])]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = 2.7764 * sd / math.sqrt(len(diffs))  # t(0.975, 4)
    return {"mae": {side: statistics.mean(e) for side, e in err.items()}, "mean": mean, "sd": sd,
            "ci": [mean - half, mean + half], "truth": truth}


def test_paired_figures_match_a_hand_computation(recorder, tmp_path):
    _paired_traffic(recorder, tmp_path)
    status, doc = _get(recorder.url + f"/v1/pairs?model=don-rf&stable={STABLE}&candidate={CANDIDATE}")
    assert status == 200, doc
    hand = _pairs_by_hand()
    assert doc["pairs"] == len(LOTS) and "detail" not in doc
    assert doc["maeLog1p"]["stable"] == pytest.approx(hand["mae"]["stable"])
    assert doc["maeLog1p"]["candidate"] == pytest.approx(hand["mae"]["candidate"])
    assert doc["difference"]["mean"] == pytest.approx(hand["mean"])
    assert doc["difference"]["sd"] == pytest.approx(hand["sd"])
    assert doc["difference"]["ci95"] == pytest.approx(hand["ci"], rel=1e-4)
    assert "Student t" in doc["difference"]["method"]
    # 1000 ppb: contaminated b (2000), c (8000), e (6000); clean a (0), d (500).
    # stable: b 3000 rejected, c 4000 rejected, e rejected -> 0 FA; d 1500 rejected -> 1 FR.
    # candidate: b 800 accepted -> 1 FA; a 99, d 450 accepted -> 0 FR.
    limit = doc["decisions"]["1000"]
    assert (limit["contaminated"], limit["clean"]) == (3, 2)
    assert limit["stable"] == {"falseAccepts": 0, "falseRejects": 1, "falseAcceptRate": 0.0,
                               "falseRejectRate": 0.5}
    assert limit["candidate"] == {"falseAccepts": 1, "falseRejects": 0, "falseAcceptRate": pytest.approx(1 / 3),
                                  "falseRejectRate": 0.0}
    # 5000 ppb: contaminated c (8000), e (6000). stable: c 4000 accepted -> 1 FA; candidate: e 5900 kept, 0 FA.
    limit = doc["decisions"]["5000"]
    assert (limit["contaminated"], limit["clean"]) == (2, 3)
    assert (limit["stable"]["falseAccepts"], limit["candidate"]["falseAccepts"]) == (1, 0)
    assert (limit["stable"]["falseRejects"], limit["candidate"]["falseRejects"]) == (0, 0)

    status, detailed = _get(recorder.url + f"/v1/pairs?model=don-rf&stable={STABLE}&candidate={CANDIDATE}&detail=1")
    assert status == 200 and set(detailed["detail"]) == set(PAIRS_DETAIL_FIELDS)
    assert detailed["detail"] == {"sample_id": list(LOTS), "stable_ppb": [v[1] for v in LOTS.values()],
                                  "candidate_ppb": [v[2] for v in LOTS.values()], "truth_ppb": hand["truth"]}
    # another candidate answered one mirrored copy: one pair, too few for an interval; the other
    # direction: none
    status, other = _get(recorder.url + "/v1/pairs?model=don-rf&stable=1&candidate=3")
    assert status == 200 and other["pairs"] == 1 and other["difference"]["ci95"] is None
    assert _get(recorder.url + "/v1/pairs?model=don-rf&stable=2&candidate=1")[1]["pairs"] == 0


def test_shadow_answers_do_not_count_as_served(recorder, tmp_path):
    _paired_traffic(recorder, tmp_path)
    status, doc = _get(recorder.url + "/v1/accuracy?model=don-rf")
    assert status == 200
    served = {(r["version"], r["window"]): r for r in doc["results"]}
    shadow = {(r["version"], r["window"]): r for r in doc["shadowResults"]}
    # the candidate only ever answered mirrored copies: no served figure, a shadow one
    assert not any(v == CANDIDATE for v, _ in served)
    # stable: the five lots, lot-f (no shadow) and lot-g; candidate in shadow: five lots and lot-h
    assert served[(STABLE, "1d")]["matched"] == len(LOTS) + 2
    assert shadow[(CANDIDATE, "1d")]["matched"] == len(LOTS) + 1
    truth = [t for t, _, _ in LOTS.values()] + [20.0]
    expected = accuracy.figures(truth, [v[2] for v in LOTS.values()] + [10.0])
    assert shadow[(CANDIDATE, "1d")]["maeLog1p"] == pytest.approx(expected["maeLog1p"])
    metrics = urllib.request.urlopen(recorder.url + "/metrics").read().decode()
    assert f'don_live_matched_samples{{model="don-rf",version="{STABLE}",window="1d"}} 7.0' in metrics
    assert f'version="{CANDIDATE}"' not in metrics
    series = _get(recorder.url + "/v1/accuracy/series?model=don-rf")[1]["series"]
    assert [s["version"] for s in series] == [STABLE]


@pytest.mark.parametrize("query, named", [
    ("stable=1&candidate=2", "model is required"),
    ("model=don-rf&candidate=2", "stable is required"),
    ("model=don-rf&stable=1", "candidate is required"),
    ("model=don-rf&stable=one&candidate=2", "stable 'one' must be a whole number"),
    ("model=don-rf&stable=1&candidate=-2", "candidate '-2' must be a whole number"),
    ("model=don-rf&stable=1&candidate=99999999999", "candidate '99999999999'"),
    ("model=don-rf&stable=2&candidate=2", "both version 2"),
    ("model=don-rf&stable=1&candidate=2&detail=maybe", "detail 'maybe'"),
    ("model=don-rf&stable=1&candidate=2&version=3", "unknown query parameter(s): version"),
    ("model=" + "m" * 300 + "&stable=1&candidate=2", "must be a model name"),
])
def test_bad_pair_queries_are_400_naming_the_parameter(recorder, query, named):
    status, doc = _get(recorder.url + "/v1/pairs?" + query)
    assert status == 400 and named in doc["error"], doc


def test_cli_prints_the_pairs_from_the_recorder_and_the_database(recorder, tmp_path):
    _paired_traffic(recorder, tmp_path)
    base = [sys.executable, "-m", "ops", "recorder", "pairs", "--model", "don-rf", "--stable", "1",
            "--candidate", "2"]
    run = lambda *extra: subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True,  # noqa: E731
                                        timeout=60, env={"PATH": "/usr/bin"})
    text = run("--url", recorder.url)
    assert text.returncode == 0, text.stderr
    hand = _pairs_by_hand()
    assert f"{len(LOTS)} lab-matched pair(s)" in text.stdout
    assert f"(candidate - stable): {hand['mean']:.4f}, 95 % CI [{hand['ci'][0]:.4f}, {hand['ci'][1]:.4f}]" \
        in text.stdout
    assert "at 1000 ppb (3 contaminated, 2 clean): false accepts stable 0, candidate 1" in text.stdout
    direct = run("--db", str(recorder.engine.url.render_as_string(hide_password=False)), "--json")
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["detail"]["sample_id"] == list(LOTS)
    same = run("--url", recorder.url, "--candidate", "1")
    assert same.returncode == 2 and same.stderr.strip() == \
        "error: --stable and --candidate are both version 1: a pair needs two versions"
    assert run("--stable", "x").returncode == 2 and "'x' is not a version number" in run("--stable", "x").stderr
    refused = run("--url", recorder.url + "/nowhere")
    assert refused.returncode == 2 and "HTTP 404" in refused.stderr
    for db_arg, needle in (("nonsense", "is not a database URL"),
                           (f"sqlite:///{tmp_path / 'empty.db'}", "is not at schema revision")):
        refused = run("--db", db_arg)
        assert refused.returncode == 2 and needle in refused.stderr and "Traceback" not in refused.stderr


def test_migration_0002_keeps_old_rows_as_served(db_url):
    """A database at 0001 holding rows: `python -m ops recorder migrate` brings it to 0002 and the old
    rows count as served answers."""
    engine = db.create_engine(db_url)
    db.migrate(engine, "0001")
    assert db.current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO predictions (time, model, version, request_id, row, predicted_ppb, spectrum_sha256, "
            "sample_id, received_at) VALUES (:t, 'don-rf', 1, 'old-req', 0, 900.0, :sha, 'lot-old', :t)"),
            {"t": NOW, "sha": "0" * 64})
        conn.execute(sa.text("INSERT INTO lab_results (sample_id, vomitoxin_ppb, method, measured_at, imported_at) "
                             "VALUES ('lot-old', 1500.0, 'HPLC', :t, :t)"), {"t": NOW})
    engine.dispose()
    migrated = subprocess.run([sys.executable, "-m", "ops", "recorder", "migrate", "--db", db_url], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0 and f"revision {db.HEAD}" in migrated.stdout, migrated.stderr
    engine = db.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(db.predictions.c.shadow)).scalars().all() == [False]
        served = accuracy.report(engine, "don-rf")["results"][0]
        assert served["matched"] == 1 and served["thresholds"]["1000"]["falseAcceptRate"] == 1.0
        assert pairs.report(engine, "don-rf", 1, 2)["pairs"] == 0
    finally:
        engine.dispose()


def test_head_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == db.HEAD
