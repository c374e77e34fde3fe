"""Shadow first, lab results decide, on the local cluster: a candidate answers mirrored copies of
live requests only, until the lab's results for those lots judge it (the paired lab gate).

The chart's rollout defaults: the README's install (the lifecycle module's values: lower requests,
the deployment engine, quick training, a 10 s interval) with the recorder on, whose release the
chart rolls out shadow first by default (operator.rollout.steps empty: [shadow, 10, 25, 50, 100],
the lab gate pointed at the recorder), its records sent to the recorder's ClusterIP (no cluster
DNS here), one model (don-rf) on the real corn data. A steady client sends lots with sample ids
through the model's Service; while a candidate shadows, the lab's results for the lots sent so far
are uploaded every few seconds, as a lab system would: `python -m ops labresults import` through
the recorder's API (from the node).

- a good retrain (a new seed): shadow -> lab gate Pass -> 10, 25, 50, 100 % -> Promoted;
- a retrain on a lab export with 30 % of its targets shuffled (declared a deliberate relabel): it
  is served correctly and passes the reference set in shadow, the lab gate fails it, and it is
  rolled back in shadow: the client never got an answer from it, and nothing of the shadow is left;
  `kubectl describe mro` and the console's Rollouts page (console/app.py under Streamlit's AppTest,
  on the node, against the API server and the recorder) show the paired figures and the verdict;
- 0 non-2xx answers through all of it.
Its own namespace, claim and volume (the lifecycle module's are still being deleted when it runs);
it runs right after the lifecycle module (tests/conftest.py), before test_e2e_cluster.py installs a
release of the same name for good.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from don_core.contract import ROLLOUT_DEFAULTS, SHADOW_STEP
from don_core.schema import TARGET_COLUMN
from tests.e2e import test_lifecycle as lifecycle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200, func_only=True)]

NS = "don-shadow"
RELEASE = lifecycle.RELEASE
CHART = lifecycle.CHART
RF = f"{RELEASE}-rf"
CLAIM = lifecycle.CLAIM
PV = "don-shadow-model-store"
TOKEN = "e2e-shadow-token"


@pytest.fixture(scope="module")
def life(e2e_cluster, real_data_path, tmp_path_factory):
    """What the lifecycle helpers need (`kube`, `store`), in this module's own namespace."""
    if e2e_cluster.engine != "deployment" or e2e_cluster.volumes is None:
        pytest.skip("the shadow module runs the chart's deployment engine on the local cluster")
    kube, store = lifecycle.real_data_claim(e2e_cluster, real_data_path, NS, PV, "shadow-store")
    lab = tmp_path_factory.mktemp("lab")
    (lab / "token").write_text(TOKEN)
    state = {"kube": kube, "store": store, "lab": lab, "uploaded": 0, "lab_uploads": 0,
             "kubeconfig": e2e_cluster.kubeconfig}
    yield state
    kube.kubectl("delete", "pod", "client-don-rf", "--ignore-not-found", "--wait=false", check=False)
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "2m", check=False)
    kube.kubectl("delete", "pvc", CLAIM, "--ignore-not-found", "--wait=false", check=False)
    kube.kubectl("delete", "pv", PV, "--ignore-not-found", "--wait=false", namespaced=False, check=False)
    kube.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", namespaced=False, check=False)


def _status(life) -> dict:
    return life["kube"].get("modelrollout", RF).get("status") or {}


def _upload_lab_results(life) -> None:
    """The lab's results for every lot the client has sent since the last upload (lot-<n> is
    row n % len of version 1's golden set, whose lab values are its targets_ppb), imported with
    the CLI through the recorder's API (from the host: the node, which reaches the pods)."""
    sent = len(lifecycle._responses(life["kube"], "don-rf"))
    if sent <= life["uploaded"]:
        return
    truth = json.loads((life["store"] / "don-rf" / "1" / "golden.json").read_text())["targets_ppb"]
    measured = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = life["lab"] / f"results-{life['lab_uploads']}.csv"
    results.write_text("sample_id,vomitoxin_ppb,method,measured_at\n" + "".join(
        f"lot-{n},{truth[n % len(truth)]!r},HPLC,{measured}\n" for n in range(life["uploaded"], sent)))
    out = subprocess.run([sys.executable, "-m", "ops", "labresults", "import", str(results),
                          "--url", _recorder_from_the_node(life), "--token-file", str(life["lab"] / "token")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"{sent - life['uploaded']} stored" in out.stdout, out.stdout + out.stderr
    life["uploaded"], life["lab_uploads"] = sent, life["lab_uploads"] + 1


def _recorder_from_the_node(life) -> str:
    """The recorder's URL by its pod's IP: the host is the pod bridge's gateway."""
    [pod] = life["kube"].get("pods", selector="app.kubernetes.io/component=recorder")["items"]
    return f"http://{pod['status']['podIP']}:8080/"


def _shadow_until(life, what: str, done, seconds: float = 600) -> dict:
    """While the candidate shadows, the lab keeps sending its results; until `done(status)`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = _status(life)
        if done(status):
            return status
        if status.get("stepLabel") == "shadow" and status.get("phase") == "Progressing":
            _upload_lab_results(life)
        time.sleep(10)
    raise AssertionError(f"timed out waiting for {what}\n{life['kube'].describe('modelrollout', RF)}")


def _train(life, run_id: str, seed: int, *extra: str) -> None:
    kube = life["kube"]
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set-string", f"training.job.runId={run_id}",
              "--set", f"training.seed={seed}", *extra)
    published = life["store"] / "don-rf" / run_id / "metadata.json"
    lifecycle._wait(life, f"version {run_id} published", published.exists, 600)


def test_install_with_the_recorder_rolls_out_shadow_first_by_default(life):
    kube = life["kube"]
    kube.helm("install", RELEASE, str(CHART), *lifecycle._values(), "--skip-crds",
              "--set", "training.models={rf}", "--set", "recorder.enabled=true",
              "--set", f"recorder.token.value={TOKEN}", "--set", "recorder.resources.requests.cpu=50m")
    spec = kube.get("modelrollout", RF)["spec"]
    assert spec["steps"] == [SHADOW_STEP, *ROLLOUT_DEFAULTS["steps"]], spec["steps"]  # the chart's default
    recorder = kube.get("service", f"{RELEASE}-recorder")["spec"]
    life["recorder_url"] = f"http://{recorder['clusterIP']}:{recorder['ports'][0]['port']}/"
    # no cluster DNS here: the model servers and the operator reach the recorder by its ClusterIP
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", f"recorder.recordsUrl={life['recorder_url']}")
    assert kube.get("modelrollout", RF)["spec"]["labGate"]["recorderUrl"] == life["recorder_url"].rstrip("/")
    lifecycle._client(life, "don-rf")
    lifecycle._wait(life, "version 1 delivered", lifecycle._reached(life, RF, "Delivered", liveVersion=1), 900, RF)
    life["start"] = time.time()


def test_a_good_retrain_is_shadowed_judged_by_lab_results_and_promoted(life):
    _train(life, "2", 2)
    life["kube"].helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "models.rf.version=2")
    lifecycle._wait(life, "the shadow of version 2", lambda: _status(life).get("stepLabel") == "shadow", 120, RF)
    status = _shadow_until(life, "version 2 promoted", lambda s: s.get("phase") in ("Promoted", "RolledBack", "Failed")
                           and s.get("candidateVersion") == 2 and s.get("trafficApplied"), 900)
    assert status["phase"] == "Promoted" and status["liveVersion"] == 2, status.get("message")
    gate = status["labGate"]
    assert gate["verdict"] == "Pass" and gate["pairs"] >= 30, gate
    history = status["history"][max(i for i, h in enumerate(status["history"]) if h["event"] == "Started"):]
    assert history[0]["step"] == 0 and history[0]["weight"] == 0, history[0]  # started in shadow
    advanced = [h["step"] for h in history if h["event"] == "Advanced"]
    # out of the shadow onto the first canary step, then through every default canary step
    assert advanced == list(range(1, len(ROLLOUT_DEFAULTS["steps"]) + 1)), history
    life["good"] = gate


def _partly_shuffled(life, fraction: float) -> str:
    """The real data with `fraction` of its targets shuffled among themselves: a partly corrupted
    lab export (it trains and serves fine, and predicts those lots wrongly)."""
    frame = pd.read_csv(life["store"] / "data" / "corn_hsi_don.csv")
    rng = np.random.default_rng(3)
    rows = rng.choice(len(frame), size=int(fraction * len(frame)), replace=False)
    frame.loc[rows, TARGET_COLUMN] = rng.permutation(frame.loc[rows, TARGET_COLUMN].to_numpy())
    path = life["store"] / "data" / "shuffled-30.csv"
    frame.to_csv(path, index=False)
    os.chown(path, 1000, 1000)
    return "/mnt/store/data/shuffled-30.csv"


def test_a_partly_shuffled_retrain_is_rolled_back_in_shadow_by_the_lab_gate(life):
    kube = life["kube"]
    _train(life, "3", 3, "--set", f"training.data={_partly_shuffled(life, 0.3)}", "--set", "training.acceptRelabel=true")
    kube.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "models.rf.version=3")
    lifecycle._wait(life, "the shadow of version 3", lambda: _status(life).get("candidateVersion") == 3, 120, RF)
    status = _shadow_until(life, "version 3 judged", lambda s: s.get("candidateVersion") == 3
                           and s.get("phase") in ("Promoted", "RolledBack", "Failed") and s.get("trafficApplied"), 900)
    assert status["phase"] == "RolledBack" and status["liveVersion"] == 2, status.get("message")
    gate = status["labGate"]
    assert gate["verdict"] == "Fail" and "lab gate Fail" in status["message"], (gate, status["message"])
    started = max(i for i, h in enumerate(status["history"]) if h.get("event") == "Started")
    assert all(h.get("weight") in (0, None) for h in status["history"][started:]), status["history"][started:]
    described = kube.kubectl("describe", "modelrollout", RF).stdout
    assert "lab gate Fail" in described, described
    lab = described[described.rindex("Lab Gate:"):]  # status.labGate (after spec.labGate): the paired figures and the verdict
    for figure, value in (("Verdict", "Fail"), ("Pairs", gate["pairs"]), ("Mean Score", gate["meanScore"]),
                          ("Candidate False Accepts", gate["candidateFalseAccepts"]),
                          ("Stable False Accepts", gate["stableFalseAccepts"])):
        assert re.search(rf"^\s+{figure}:\s+{re.escape(str(value))}$", lab, re.M), (figure, value, lab)
    for kind in ("deployment", "service", "configmap"):
        name = f"{RF}-mirror" if kind == "configmap" else f"{RF}-shadow"
        assert kube.kubectl("get", kind, name, check=False).returncode != 0, f"{kind} {name} left behind"
    life["bad"] = gate
    from tests.fixtures_cluster import E2E_REPORT
    good = life["good"]
    E2E_REPORT.setdefault("notes", []).append(
        f"shadow: good retrain Pass on {good['pairs']} pairs (mean {good['meanScore']:+.4f}); 30 % shuffled "
        f"retrain Fail on {gate['pairs']} pairs (mean {gate['meanScore']:+.4f}, false accepts "
        f"{gate['candidateFalseAccepts']} vs {gate['stableFalseAccepts']}); {life['lab_uploads']} lab uploads")


def test_the_console_shows_the_paired_figures_and_the_verdict(life, monkeypatch):
    """The console's Rollouts page (console/app.py under Streamlit's AppTest, in this process on the
    node) on the rolled-back rollout, from the real API server and the recorder by its pod's IP:
    the phase and the lab gate's verdict, and the recorder's paired figures of v2 against v3."""
    import requests

    from don_core.contract import PAIRS_PATH
    from tests.integration.test_console import app, errors
    recorder = _recorder_from_the_node(life)
    doc = requests.get(recorder.rstrip("/") + PAIRS_PATH, params={"model": "don-rf", "stable": 2, "candidate": 3},
                       timeout=30).json()
    gate = life["bad"]
    assert doc["pairs"] >= gate["pairs"] and doc["maeLog1p"]["candidate"] > doc["maeLog1p"]["stable"], doc
    at = app(monkeypatch, kubeconfig=str(life["kubeconfig"]), namespace=NS, recorder=recorder)
    at.radio(key="page").set_value("Rollouts").run()
    at.selectbox(key="rollout").set_value(RF).run()
    assert errors(at) == [] and not at.exception, (errors(at), at.exception)
    texts = [m.value for m in at.markdown]
    assert any(m.startswith(f"**{RF}**: phase RolledBack") and "lab gate Fail" in m for m in texts), texts
    assert any(m.startswith(f"Lab gate (the operator's last look): **Fail** on {gate['pairs']} pair(s)")
               for m in texts), texts
    assert any(m.startswith(f"{doc['pairs']} lab-matched pair(s): the candidate's |log1p error| minus the "
                            f"stable's, mean {doc['difference']['mean']:+.4f}") for m in texts), texts
    table = at.dataframe[-1].value.set_index("version")
    assert list(table.index) == ["v2 (stable)", "v3 (candidate)"], table
    for side, version in (("stable", 2), ("candidate", 3)):
        row = table.loc[f"v{version} ({side})"]
        assert row["pairs"] == doc["pairs"] and row["MAE log1p"] == doc["maeLog1p"][side], (row, doc)
        assert row["false accepts @1000"] == doc["decisions"]["1000"][side]["falseAccepts"], (row, doc)


def test_no_caller_got_an_answer_from_the_shadow_nor_an_error(life):
    responses = lifecycle._served(lifecycle._responses(life["kube"], "don-rf"))
    versions = {}
    for _, code, version in responses:
        versions[(code, version)] = versions.get((code, version), 0) + 1
    assert responses and set(versions) <= {(200, "1"), (200, "2")}, versions
    assert (200, "2") in versions, versions  # the good retrain answered once promoted
