"""The web console's pages (console/app.py) driven by Streamlit's AppTest, against real model
servers, the trained store, a real prediction recorder and a real kube-apiserver."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import requests

from don_core.schema import BAND_COLUMNS
from tests.fixtures_server import post_records
from tests.net import free_port

APP = str(Path(__file__).resolve().parents[2] / "console" / "app.py")
HEADER = ["hsi_id", *BAND_COLUMNS, "vomitoxin_ppb"]


def lab_csv(rows: np.ndarray, ids=None, targets=None, header=HEADER) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i, row in enumerate(rows):
        writer.writerow([ids[i] if ids else f"s{i}", *(repr(float(v)) for v in row),
                         targets[i] if targets else "0"])
    return out.getvalue()


def app(monkeypatch, **env):
    from streamlit.testing.v1 import AppTest
    for key in ("DON_CONSOLE_SERVERS", "DON_CONSOLE_STORE", "DON_CONSOLE_RECORDER",
                "DON_CONSOLE_KUBECONFIG", "DON_CONSOLE_NAMESPACE", "DON_CONSOLE_CONTROL",
                "DON_CONSOLE_RECORDER_TOKEN_FILE", "DON_API_TOKEN_FILE", "DON_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(f"DON_CONSOLE_{key.upper()}", value)
    return AppTest.from_file(APP, default_timeout=60).run()


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_predict_names_bad_rows_with_the_training_jobs_messages(monkeypatch, golden_rows):
    from don_core.labcsv import DataError, parse_csv
    rows = np.asarray(golden_rows[:3])
    text = lab_csv(rows).splitlines()
    cells = text[2].split(",")
    cells[5] = "abc"                       # row 3 (header = row 1), band '4'
    text[2] = ",".join(cells)
    bad = "\n".join(text) + "\n"
    with pytest.raises(DataError) as expected:
        parse_csv(bad.encode(), name="pasted text", require_target=False)
    # no server is called for a refused file: the URL answers nothing
    at = app(monkeypatch, servers=f"don-rf=http://127.0.0.1:{free_port()}")
    at.text_area(key="pasted").set_value(bad).run()
    at.button(key="predict").click().run()
    assert errors(at) == [str(expected.value)]
    assert "row 3, column '4': 'abc' is not a number" in errors(at)[0]
    # the wrong separator gets the training job's hint; a missing band is named
    at.text_area(key="pasted").set_value(bad.replace(",", ";")).run()
    at.button(key="predict").click().run()
    assert "separated by semicolons" in errors(at)[0]
    at.text_area(key="pasted").set_value("hsi_id,0,1\nx,0.1,0.2\n").run()
    at.button(key="predict").click().run()
    assert errors(at) == ["pasted text: row 1: missing band columns '2', '3', '4', '5', '6', ... "
                          "(441 more) (446 of 448)"]


def test_predict_shows_predictions_decisions_and_the_plot(monkeypatch, rf_server, serving_store, golden_rows):
    rows = np.asarray(golden_rows[:7])
    at = app(monkeypatch, servers=f"don-rf={rf_server.base}", store=str(serving_store))
    at.text_area(key="pasted").set_value(lab_csv(rows, targets=[10] * 7)).run()
    at.button(key="predict").click().run()
    assert errors(at) == []
    assert at.subheader[0].value == "7 predictions from don-rf version 1"
    shown = at.dataframe[0].value
    direct = requests.post(rf_server.url("/v1/models/don-rf:predict"), timeout=30, json={
        "instances": rows.tolist(), "parameters": {"outputs": ["decision_1000", "decision_5000",
                                                               "out_of_distribution"]}}).json()
    assert shown["predicted_ppb"].tolist() == pytest.approx(direct["predictions"], rel=1e-6)
    assert shown["decision_1000"].tolist() == direct["decision_1000"]
    assert shown["out_of_distribution"].tolist() == direct["out_of_distribution"]
    assert shown["measured_ppb"].tolist() == [10.0] * 7
    assert any("training data's band-wise range" in c.value for c in at.caption)
    # one spectrum pasted as bare numbers
    at.text_area(key="pasted").set_value(" ".join(repr(float(v)) for v in rows[0])).run()
    at.button(key="predict").click().run()
    assert at.subheader[0].value == "1 predictions from don-rf version 1"
    assert at.dataframe[0].value["predicted_ppb"][0] == pytest.approx(direct["predictions"][0], rel=1e-6)
    # a value the server refuses: its 400 message, readable
    bad = rows[:1].copy()
    bad[0, 7] = 50.0
    at.text_area(key="pasted").set_value(lab_csv(bad)).run()
    at.button(key="predict").click().run()
    assert len(errors(at)) == 1 and "refused the request: 400" in errors(at)[0] and "Traceback" not in errors(at)[0]


def test_predict_offers_the_served_versions_stable_first_and_calls_the_chosen_one(
        monkeypatch, rf_server, serving_store, start_server, golden_rows):
    """Two real servers of one model on loopback, v1 as the stable track and v2 as the canary; a
    third track that answers nothing is left out with a note, never an error."""
    v2 = start_server("don-rf", serving_store / "don-rf" / "2")
    down = f"http://127.0.0.1:{free_port()}"
    golden = np.asarray(golden_rows[:6])
    rows = (golden[:5] + golden[1:]) / 2       # between training rows, where two forests differ
    at = app(monkeypatch, servers=f"don-rf@canary={v2.base},don-rf@shadow={down},don-rf@stable={rf_server.base}",
             store=str(serving_store))
    assert errors(at) == []
    chooser = at.selectbox(key="model")
    assert chooser.options == ["don-rf v1 (stable)", "don-rf v2 (canary)"]
    assert chooser.value == "don-rf v1 (stable)"
    assert any(c.value.startswith(f"don-rf shadow: not offered ({down}: cannot connect") for c in at.caption)
    at.text_area(key="pasted").set_value(lab_csv(rows)).run()
    at.button(key="predict").click().run()
    assert errors(at) == []
    assert at.subheader[0].value == "5 predictions from don-rf version 1 (stable)"
    stable = at.dataframe[0].value["predicted_ppb"].tolist()
    at.selectbox(key="model").set_value("don-rf v2 (canary)").run()
    at.button(key="predict").click().run()
    assert errors(at) == []
    assert at.subheader[0].value == "5 predictions from don-rf version 2 (canary)"
    canary = at.dataframe[0].value["predicted_ppb"].tolist()
    direct = {base: requests.post(f"{base}/v1/models/don-rf:predict", json={"instances": rows.tolist()},
                                  timeout=30).json()["predictions"] for base in (rf_server.base, v2.base)}
    assert stable == pytest.approx(direct[rf_server.base], rel=1e-6)
    assert canary == pytest.approx(direct[v2.base], rel=1e-6)
    assert stable != pytest.approx(canary, rel=1e-6)      # two versions, two answers


def test_models_page_lists_versions_metrics_and_compares(monkeypatch, serving_store):
    at = app(monkeypatch, store=str(serving_store))
    at.radio(key="page").set_value("Models").run()
    assert errors(at) == []
    table = at.dataframe[0].value
    assert sorted(zip(table["model"], table["version"])) == [("don-rf", 1), ("don-rf", 2), ("don-tf", 1)]
    assert set(table["family"]) == {"sklearn", "tensorflow"} and table["data sha256"].str.len().eq(12).all()
    metrics = at.dataframe[1].value
    assert {"r2_log1p", "rmse_ppb"} <= set(metrics["metric"])
    at.selectbox(key="compare_a").set_value("don-rf v1").run()
    at.selectbox(key="compare_b").set_value("don-rf v2").run()
    compared = at.dataframe[2].value
    assert list(compared.columns) == ["metric", "don-rf v1", "don-rf v2", "difference"]
    row = compared[compared["metric"] == "r2_log1p"].iloc[0]
    assert row["difference"] == pytest.approx(row["don-rf v2"] - row["don-rf v1"], abs=1e-3)
    # the out-of-fold plots: the selected version and both compared ones
    assert len(at.get("vega_lite_chart")) == 3


def test_evaluation_file_holds_the_out_of_fold_predictions(serving_store):
    from don_core.artifact import parse_evaluation
    from don_core.store import open_store
    store = open_store(str(serving_store))
    meta = store.read_metadata("don-rf", 1)
    doc = parse_evaluation(store.read_file("don-rf", 1, "evaluation.json"))
    oof = doc["out_of_fold"]
    # one point per fitted row: every training row but the model's reference set
    held_out = set(store.read_reference("don-rf")["keys"])
    assert len(oof["ids"]) + len(held_out) == meta["training_data"]["rows"] and not held_out & set(oof["ids"])
    assert np.isfinite(oof["predicted_ppb"]).all() and oof["repeats"] == 1   # --quick: 3 x 1
    assert all(lo <= hi for lo, hi in zip(doc["bands"]["min"], doc["bands"]["max"]))


def test_monitoring_page_plots_live_accuracy_per_version_and_day(monkeypatch, rf_server, golden_rows,
                                                                 recorder_url):
    import datetime as dt
    import math

    requests.post(rf_server.url("/v1/models/don-rf:predict"), json={"instances": golden_rows[:2]}, timeout=30)
    # recorded predictions (as a server sends them) with lab sample ids: version 1 today (lot-0,
    # lot-1) and yesterday (lot-0, flagged out of distribution), version 2 today (lot-1); then
    # the lab results of both samples
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    sent = [(1, "lot-0", 100.0, now, False), (1, "lot-1", 3000.0, now, False),
            (1, "lot-0", 900.0, today - dt.timedelta(hours=1), True), (2, "lot-1", 500.0, now, False)]
    records = [{"time": when.isoformat() + "Z", "model": "don-rf", "version": version, "request_id": f"req-{i}",
                "row": 0, "predicted_ppb": ppb, "spectrum_sha256": f"{i:064x}", "sample_id": sample,
                "outlier_score": 0.5, "out_of_distribution": ood}
               for i, (version, sample, ppb, when, ood) in enumerate(sent)]
    post_records(recorder_url, records)
    lab = "sample_id,vomitoxin_ppb,method,measured_at\nlot-0,150,HPLC,2026-11-30\nlot-1,2500,HPLC,2026-11-30\n"
    stored = requests.post(recorder_url + "/v1/labresults", data=lab, headers={"Content-Type": "text/csv"}, timeout=30)
    assert stored.status_code < 300, stored.text
    at = app(monkeypatch, servers=f"don-rf={rf_server.base}", recorder=recorder_url)
    at.radio(key="page").set_value("Monitoring").run()
    assert errors(at) == []
    assert at.selectbox(key="span").value == 30
    per_day, windows, drift = (d.value for d in at.dataframe)
    # the figures the charts plot, one row per version and day, against a hand computation
    got = {(r["model version"], r["day"]): r for r in per_day.to_dict("records")}
    day, yesterday = today.date().isoformat(), (today - dt.timedelta(days=1)).date().isoformat()
    assert sorted(got) == [("don-rf v1", yesterday), ("don-rf v1", day), ("don-rf v2", day)]
    v1 = got[("don-rf v1", day)]
    assert (v1["predictions"], v1["matched"], v1["OOD rate"]) == (2, 2, 0.0)
    mae = (abs(math.log1p(150) - math.log1p(100)) + abs(math.log1p(2500) - math.log1p(3000))) / 2
    assert v1["MAE log1p"] == pytest.approx(mae) and v1["false accept @1000"] == 0.0
    assert got[("don-rf v1", yesterday)]["OOD rate"] == 1.0
    assert got[("don-rf v2", day)]["false accept @1000"] == 1.0          # 2500 ppb predicted 500
    assert len(at.get("vega_lite_chart")) == 4                          # error, false accepts, matched, drift
    assert set(windows["window"]) == {"1d", "7d", "30d"}
    assert drift["model"].tolist() == ["don-rf"] and drift["scored rows"][0] >= 2
    assert "window score" in drift.columns  # empty until the server's window is full
    # a shorter span asks the recorder again
    at.selectbox(key="span").set_value(7).run()
    assert errors(at) == [] and any("Live accuracy per version and day" in h.value and
                                    (today.date() - dt.timedelta(days=6)).isoformat() in h.value
                                    for h in at.subheader)


def test_monitoring_page_reads_as_messages_without_a_recorder_or_lab_results(monkeypatch, rf_server, recorder_url):
    # a recorder that does not answer: its error in a sentence, and the servers' drift still shown
    at = app(monkeypatch, servers=f"don-rf={rf_server.base}", recorder=f"http://127.0.0.1:{free_port()}")
    at.radio(key="page").set_value("Monitoring").run()
    assert len(errors(at)) == 1 and "cannot connect" in errors(at)[0] and "Traceback" not in errors(at)[0]
    assert at.dataframe[0].value["model"].tolist() == ["don-rf"]
    at = app(monkeypatch, servers=f"don-rf={rf_server.base}")
    at.radio(key="page").set_value("Monitoring").run()
    assert errors(at) == [] and "no prediction recorder configured" in at.info[0].value
    # predictions recorded but no lab result yet: volume and drift plotted, accuracy said to wait
    import datetime as dt
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    post_records(recorder_url, [{"time": now, "model": "don-rf", "version": 1, "request_id": "r", "row": 0,
                                 "predicted_ppb": 10.0, "spectrum_sha256": "0" * 64, "sample_id": "lot-0",
                                 "out_of_distribution": True}])
    at = app(monkeypatch, recorder=recorder_url)
    at.radio(key="page").set_value("Monitoring").run()
    assert errors(at) == [] and len(at.get("vega_lite_chart")) == 2      # matched (0) and drift (100 %)
    assert any("MAE of log1p(ppb): nothing in this span" == c.value for c in at.caption)
    assert any("no lab results matched to these predictions yet" in c.value for c in at.caption)
    assert at.dataframe[0].value["OOD rate"].tolist() == [1.0]


def make_rollout(kube_apiserver, ns: str, name: str, spec: dict, status: dict) -> str:
    """A ModelRollout with this status on the real kube-apiserver; returns the collection's path."""
    from tests.fixtures_cluster import install_crds
    crd = Path(APP).parents[1] / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml"
    install_crds(kube_apiserver, [crd])
    base = f"/apis/rollouts.don-predictor.io/v1alpha1/namespaces/{ns}/modelrollouts"
    code, body = kube_apiserver.request("POST", base, {
        "apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name},
        "spec": spec})
    assert code == 201, body
    code, body = kube_apiserver.request("PATCH", f"{base}/{name}/status", {"status": status},
                                        content_type="application/merge-patch+json")
    assert code == 200, body
    return base


@pytest.mark.apiserver
def test_rollouts_page_shows_the_timeline_and_its_buttons_steer(monkeypatch, kube_apiserver):
    """On a real kube-apiserver: the table and timeline of a ModelRollout; read-only by default;
    with --control each button sends exactly what `python -m ops rollout VERB` sends."""
    from ops.rollout.client import ACTIONS
    ns, name = "default", f"console-{free_port()}"
    history = [{"time": "2026-12-01T10:00:00Z", "event": "Started", "phase": "Progressing", "step": 1,
                "weight": 10, "message": "started"},
               {"time": "2026-12-01T10:01:00Z", "event": "Advanced", "phase": "Progressing", "step": 2,
                "weight": 50, "message": "analysis passed", "verdict": "Pass",
                "figures": {"successRate": 1.0, "p99LatencyMs": 42.0, "referenceErrorIncrease": 0.01}}]
    base = make_rollout(kube_apiserver, ns, name, {"target": "don-rf", "mode": "Standard", "candidate": {"version": 2}},
                        {"phase": "Progressing", "weight": 50, "step": 2, "stepLabel": "2/3", "history": history})

    at = app(monkeypatch, kubeconfig=str(kube_apiserver.kubeconfig), namespace=ns)
    at.radio(key="page").set_value("Rollouts").run()
    assert errors(at) == []
    at.selectbox(key="rollout").set_value(name).run()
    table = at.dataframe[0].value
    row = table[table["name"] == name].iloc[0]
    assert (row["phase"], row["weight"], row["step"]) == ("Progressing", "50%", "2/3")
    assert len(at.get("vega_lite_chart")) == 1                     # the timeline
    assert all(at.button(key=f"action-{a}").disabled for a in ACTIONS)   # read-only by default

    at = app(monkeypatch, kubeconfig=str(kube_apiserver.kubeconfig), namespace=ns, control="true")
    at.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rollout").set_value(name).run()
    for action, expected in (("pause", {"paused": True}), ("resume", {"paused": False}),
                             ("promote", {"action": "Promote"}), ("abort", {"action": "Abort"})):
        at.button(key=f"action-{action}").click().run()
        assert errors(at) == [] and at.success[0].value == f"modelrollout {name}: {action} requested"
        _, current = kube_apiserver.request("GET", f"{base}/{name}")
        assert {k: current["spec"].get(k) for k in expected} == expected == ACTIONS[action]["spec"]
    # a refusal reads as the API server's message
    from console.services import rollouts
    from console.services.common import ConsoleError, Settings
    settings = Settings.from_env()
    client = rollouts.rollout_client(settings)
    kube_apiserver.request("DELETE", f"{base}/{name}")
    with pytest.raises(ConsoleError, match=f"pause {name}: 404 .*not found"):
        rollouts.steer(settings, client, name, "pause")


@pytest.mark.apiserver
def test_predict_labels_each_track_with_its_share_of_traffic_from_the_rollout(
        monkeypatch, kube_apiserver, rf_server, serving_store, start_server):
    """With a Kubernetes API, the ModelRollout in progress for the model gives each track's traffic
    share; a finished one gives none."""
    v2 = start_server("don-rf", serving_store / "don-rf" / "2")
    ns, name = "default", f"predict-{free_port()}"
    spec = {"target": "don-don-predictor-rf", "mode": "Deployment", "candidate": {"version": 2},
            "endpoints": {"modelName": "don-rf"}}
    base = make_rollout(kube_apiserver, ns, name, spec, {"phase": "Progressing", "weight": 10, "step": 1})
    servers = f"don-rf@stable={rf_server.base},don-rf@canary={v2.base}"
    at = app(monkeypatch, servers=servers, kubeconfig=str(kube_apiserver.kubeconfig), namespace=ns)
    assert errors(at) == []
    assert at.selectbox(key="model").options == ["don-rf v1 (stable, 90 %)", "don-rf v2 (canary, 10 %)"]
    kube_apiserver.request("PATCH", f"{base}/{name}/status", {"status": {"phase": "Promoted", "weight": 100}},
                           content_type="application/merge-patch+json")
    from console.services.common import Settings
    from console.services.predict import served_choices
    choices, _ = served_choices(Settings.from_env())
    assert [c.label for c in choices] == ["don-rf v1 (stable)", "don-rf v2 (canary)"]
    kube_apiserver.request("DELETE", f"{base}/{name}")


@pytest.fixture
def recorder_with_token(tmp_path):
    """A real recorder whose writes need a bearer token: (URL, token file)."""
    import subprocess
    import sys

    from tests.net import running
    token = tmp_path / "recorder-token"
    token.write_text("lab-token\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, "-m", "ops", "recorder", "serve", "--db", f"sqlite:///{tmp_path / 'lab.db'}",
                  "--port", str(port), "--token-file", str(token)], url + "/readyz", timeout=60,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        yield url, token


def test_monitoring_page_imports_lab_results_whole_or_not_at_all(monkeypatch, recorder_with_token, tmp_path):
    url, token = recorder_with_token
    at = app(monkeypatch, recorder=url, recorder_token_file=str(token))
    at.radio(key="page").set_value("Monitoring").run()
    assert errors(at) == [] and at.button(key="lab_import").disabled   # nothing chosen yet
    bad = b"sample_id,vomitoxin_ppb,measured_at\nlot-1,150,2026-11-30\nlot-2,abc,2026-11-30\nlot-3,9,30/11/2026\n"
    at.file_uploader(key="lab_upload").set_value(("bad.csv", bad, "text/csv")).run()
    at.button(key="lab_import").click().run()
    assert len(errors(at)) == 1
    message = errors(at)[0]
    assert message.startswith("bad.csv: 2 bad row(s); nothing stored")
    assert "row 2, column vomitoxin_ppb: 'abc' is not a non-negative number" in message
    assert "row 3, column measured_at: '30/11/2026'" in message
    # nothing of the bad file was kept: all three rows of the good one are new, method optional
    good = b"sample_id,vomitoxin_ppb,measured_at\nlot-1,150,2026-11-30\nlot-2,2500,2026-11-30\nlot-3,9,2026-11-30\n"
    at.file_uploader(key="lab_upload").set_value(("good.csv", good, "text/csv")).run()
    at.button(key="lab_import").click().run()
    assert errors(at) == []
    assert at.success[0].value == "good.csv: 3 result(s) stored, 0 already there, 0 refused"
    at.button(key="lab_import").click().run()
    assert at.success[0].value == "good.csv: 0 result(s) stored, 3 already there, 0 refused"
    # a header the recorder cannot read, and the wrong token: one line each
    at.file_uploader(key="lab_upload").set_value(("odd.csv", b"lot,ppb\nx,1\n", "text/csv")).run()
    at.button(key="lab_import").click().run()
    assert errors(at)[0].startswith("odd.csv: the recorder refused it: 400: header must be "
                                    "sample_id,vomitoxin_ppb[,method][,measured_at]")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("guess")
    at = app(monkeypatch, recorder=url, recorder_token_file=str(wrong))
    at.radio(key="page").set_value("Monitoring").run()
    at.file_uploader(key="lab_upload").set_value(("good.csv", good, "text/csv")).run()
    at.button(key="lab_import").click().run()
    assert errors(at)[0].startswith("good.csv: the recorder refused it: 401: missing or wrong bearer token")


@pytest.mark.apiserver
def test_rollouts_page_shows_the_paired_figures_of_stable_and_shadow(monkeypatch, kube_apiserver, recorder_url):
    """The versions come from the ModelRollout's status, the figures from the recorder's /v1/pairs."""
    import datetime as dt
    import math
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    # lot: (lab, stable v1 served, candidate v2 in shadow)
    lots = {"lot-0": (2000.0, 3000.0, 800.0), "lot-1": (100.0, 120.0, 100.0), "lot-2": (8000.0, 7000.0, 9000.0)}
    records = [{"time": now, "model": "don-rf", "version": version, "request_id": f"req-{i}", "row": 0,
                "predicted_ppb": values[side], "spectrum_sha256": f"{i:064x}", "sample_id": sample,
                **({"shadow": True} if version == 2 else {})}
               for i, (sample, values) in enumerate(lots.items()) for version, side in ((1, 1), (2, 2))]
    post_records(recorder_url, records)
    lab = "sample_id,vomitoxin_ppb\n" + "".join(f"{s},{v[0]}\n" for s, v in lots.items())
    assert requests.post(recorder_url + "/v1/labresults", data=lab, timeout=30).status_code == 200
    ns, name = "default", f"paired-{free_port()}"
    base = make_rollout(kube_apiserver, ns, name, {"target": "don-rf", "mode": "Standard", "candidate": {"version": 2}},
                        {"phase": "Progressing", "weight": 0, "step": 0, "stableVersion": 1, "candidateVersion": 2,
                         "labGate": {"verdict": "Hold", "pairs": 3, "margin": 0.02,
                                     "reason": "3 pairs, 30 needed before a verdict"}})
    at = app(monkeypatch, kubeconfig=str(kube_apiserver.kubeconfig), namespace=ns, recorder=recorder_url)
    at.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rollout").set_value(name).run()
    assert errors(at) == []
    diffs = [abs(math.log1p(c) - math.log1p(t)) - abs(math.log1p(s) - math.log1p(t)) for t, s, c in lots.values()]
    mean = sum(diffs) / len(diffs)
    summary = [m.value for m in at.markdown if "lab-matched pair(s)" in m.value]
    assert summary and summary[0].startswith(f"3 lab-matched pair(s): the candidate's |log1p error| minus "
                                             f"the stable's, mean {mean:+.4f}, 95 % CI [")
    table = at.dataframe[-1].value.set_index("version")
    assert table.loc["v1 (stable)", "false accepts @1000"] == 0 and table.loc["v2 (candidate)", "false accepts @1000"] == 1
    assert table.loc["v1 (stable)", "pairs"] == 3
    # the operator's verdict beside the figures it judged
    assert "Lab gate (the operator's last look): **Hold** on 3 pair(s), margin 0.02: 3 pairs, 30 needed " \
        "before a verdict" in [m.value for m in at.markdown]
    # before the operator has found both versions, and without a recorder: a sentence each
    kube_apiserver.request("PATCH", f"{base}/{name}/status", {"status": {"candidateVersion": None}},
                           content_type="application/merge-patch+json")
    at.run()
    assert errors(at) == [] and any("names no stable and candidate version yet" in c.value for c in at.caption)
    at = app(monkeypatch, kubeconfig=str(kube_apiserver.kubeconfig), namespace=ns)
    at.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rollout").set_value(name).run()
    assert errors(at) == [] and any("no prediction recorder configured" in c.value for c in at.caption)
    kube_apiserver.request("DELETE", f"{base}/{name}")
