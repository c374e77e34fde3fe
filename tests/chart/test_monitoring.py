"""Alerts, dashboard and recorder in the chart: rendered by real helm, the prometheus-operator
objects validated against their CRD schemas (the validators npm's @kubernetes-models/prometheus-operator
compiles from those CRDs, run with node), every alert checked and unit-tested with promtool."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.cluster import binaries
from tests.chart.test_render import assert_restricted_container, selects
from tests.conftest import unavailable
from tests.fixtures_chart import Case, render_case, run_helm

pytestmark = pytest.mark.chart
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "don-predictor"
RUNBOOK = REPO / "docs" / "runbook.md"
NS, FULL = "don", "don-don-predictor"
MODELS_PACKAGE = "@kubernetes-models/prometheus-operator@6.0.0"
ON = ("--set", "recorder.enabled=true", "--set", "recorder.token.value=tok-sentinel",
      "--set", "operator.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true",
      "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.grafanaDashboard.enabled=true")


@pytest.fixture(scope="module")
def render():
    return render_case(Case("monitoring", ON))


@pytest.fixture(scope="module")
def rules(render) -> dict:
    return {"groups": render.named("PrometheusRule", FULL)["spec"]["groups"]}


def _alerts(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="session")
def promtool() -> str:
    if not shutil.which("promtool"):
        try:
            binaries.apt_install(["prometheus"])
        except Exception as exc:  # noqa: BLE001 (any install failure means no promtool here)
            unavailable(f"no promtool (Debian package `prometheus`): {exc}")
    return shutil.which("promtool") or unavailable("promtool missing after installing `prometheus`")


@pytest.fixture(scope="session")
def crd_validator() -> Path:
    """node + the npm package whose validators are generated from the prometheus-operator CRDs."""
    if not shutil.which("node") or not shutil.which("npm"):
        try:
            binaries.apt_install(["nodejs", "npm"])
        except Exception as exc:  # noqa: BLE001
            unavailable(f"no node/npm: {exc}")
    root = binaries.cache_root() / "npm-prometheus-operator-6.0.0"
    with binaries.file_lock(binaries.cache_root() / "npm-prometheus-operator.lock", print, "npm"):
        if not (root / ".complete").exists():
            root.mkdir(parents=True, exist_ok=True)
            out = subprocess.run(["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", MODELS_PACKAGE],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                unavailable(f"npm install {MODELS_PACKAGE} failed: {out.stderr[-500:]}")
            (root / ".complete").touch()
    script = root / "validate.mjs"
    script.write_text("""
import { readFileSync } from "node:fs";
const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
for (const doc of docs) {
  const mod = await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${doc.kind}`);
  try { new mod[doc.kind](doc).validate(); } catch (e) { errors.push(`${doc.kind} ${doc.metadata.name}: ${e.message}`); }
}
console.log(JSON.stringify(errors));
""")
    return script


def _crd_errors(script: Path, docs: list[dict]) -> list[str]:
    out = subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True,
                         timeout=60, cwd=script.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_off_by_default():
    docs = [d for d in yaml.safe_load_all(run_helm("template", "don", str(CHART), "-n", NS).stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
    assert not [d for d in docs if "recorder" in d["metadata"]["name"] or "dashboard" in d["metadata"]["name"]]


def test_monitoring_objects_validate_against_their_crd_schemas(render, crd_validator):
    docs = render.of_kind("PrometheusRule") + render.of_kind("ServiceMonitor") + render.of_kind("PodMonitor")
    assert len(docs) == 3
    assert _crd_errors(crd_validator, docs) == []
    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert "must match pattern" in _crd_errors(crd_validator, [broken])[0]


def test_recorder_and_dashboard_objects_are_valid_and_restricted(render):
    for doc in render.docs:
        if doc["kind"] in ("PrometheusRule", "ServiceMonitor", "PodMonitor"):
            continue
        try:
            kubernetes_validate.validate(doc, "1.30", strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            continue  # CRD kinds of the rest of the chart, checked by test_render
    deployment = render.named("Deployment", f"{FULL}-recorder")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert_restricted_container("recorder", container)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DON_RECORDER_DB_URL"].startswith("sqlite:////var/lib/don-recorder/")
    assert env["DON_RECORDER_TOKEN_FILE"] == "/var/run/secrets/don-recorder/token/token"
    assert "tok-sentinel" not in render.text.replace("dG9rLXNlbnRpbmVs", "")  # only base64 in the Secret
    # Network: the recorder is covered by a policy; predictors may send to it.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in render.of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]
    assert {p["metadata"]["name"] for p in policies} >= {f"{FULL}-default-deny", f"{FULL}-recorder"}
    dashboard = render.named("ConfigMap", f"{FULL}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["don-predictor.json"])["panels"]
    assert len(panels) >= 10 and all(p["targets"] for p in panels)


def test_recorder_takes_postgres_url_and_token_from_existing_secrets():
    render = render_case(Case("recorder-pg", ("--set", "recorder.enabled=true", "--set",
                                              "recorder.token.existingSecret=lab-token", "--set",
                                              "recorder.database.existingSecret=don-db", "--set", "recorder.replicas=2")))
    deployment = render.named("Deployment", f"{FULL}-recorder")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["DON_RECORDER_DB_URL_FILE"] == "/var/run/secrets/don-recorder/db/url" and "DON_RECORDER_DB_URL" not in env
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    assert (volumes["token"], volumes["database"]) == ("lab-token", "don-db")
    assert deployment["spec"]["replicas"] == 2 and not render.of_kind("Secret")
    egress = render.named("NetworkPolicy", f"{FULL}-recorder")["spec"]["egress"]
    assert any(p.get("port") == 5432 for rule in egress for p in rule.get("ports", []))
    failed = run_helm("template", "don", str(CHART), "--set", "recorder.enabled=true", check=False)
    assert failed.returncode != 0 and "recorder.token.existingSecret" in failed.stderr


def _predictor_pods(render) -> list[tuple[str, dict, dict, dict]]:
    """(where, pod spec, model-server container, pod labels) of every predictor the render defines:
    Deployments and InferenceService predictors, also the ones inside a ModelRollout."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("model"), dict) and "runtime" in node["model"]:  # an isvc predictor
                found.append((where, node, node["model"], node.get("labels", {})))
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for doc in render.docs:
        name = f"{doc['kind']} {doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] == "Deployment" and labels.get("app.kubernetes.io/component") == "predictor":
            template = doc["spec"]["template"]
            found.append((name, template["spec"], template["spec"]["containers"][0], template["metadata"]["labels"]))
        elif doc["kind"] in ("InferenceService", "ModelRollout"):
            walk(doc["spec"], name)
    return found


def _allows(rules: list[dict], peer_key: str, labels: dict, port: int) -> bool:
    return any(any(selects(peer.get("podSelector", {}), labels) and "namespaceSelector" not in peer
                   for peer in rule.get(peer_key, []))
               and any(p["port"] == port for p in rule.get("ports", [])) for rule in rules)


@pytest.mark.parametrize("engine", ["kserve-operator", "deployment"])
def test_predictors_send_records_to_the_recorder(render, engine):
    """Recorder on: every model server gets the recorder's URL and the token Secret mounted as a file
    (never a value in the pod spec), and the network policies let exactly that traffic through."""
    if engine == "deployment":  # existing token Secret, another port and a sample
        render = render_case(Case("recorder-deployment", (
            "--set", "serving.engine=deployment", "--set", "recorder.enabled=true",
            "--set", "recorder.token.existingSecret=lab-token", "--set", "recorder.port=9000",
            "--set-json", "recorder.sampleRate=0.25", "--set", "recorder.recordsUrl=http://10.96.0.9:9000/",
            "--set", "apiToken.enabled=true", "--set", "apiToken.value=api")))
    service = render.named("Service", f"{FULL}-recorder")
    port = service["spec"]["ports"][0]["port"]
    secret = "lab-token" if engine == "deployment" else f"{FULL}-recorder-token"
    recorder_labels = render.named("Deployment", f"{FULL}-recorder")["spec"]["template"]["metadata"]["labels"]
    assert render.named("Deployment", f"{FULL}-recorder")["spec"]["template"]["spec"]["volumes"][1]["secret"] == \
        {"secretName": secret}
    pods = _predictor_pods(render)
    assert len(pods) == 2, [w for w, *_ in pods]  # rf and tf
    policies = render.of_kind("NetworkPolicy")
    ingress = render.named("NetworkPolicy", f"{FULL}-recorder")["spec"]["ingress"]
    for where, pod, container, labels in pods:
        env = {e["name"]: e for e in container["env"]}
        # The recorder Service by its DNS name, unless recorder.recordsUrl says otherwise (no cluster DNS).
        url = "http://10.96.0.9:9000/" if engine == "deployment" else f"http://{FULL}-recorder.{NS}.svc.cluster.local:{port}/"
        assert env["DON_RECORDS_URL"]["value"] == url, where
        assert env["DON_RECORDS_SAMPLE_RATE"]["value"] == ("0.25" if engine == "deployment" else "1"), where
        token_file = Path(env["DON_RECORDS_TOKEN_FILE"]["value"])
        mount = [m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent)]
        assert len(mount) == 1 and mount[0]["readOnly"] is True, where
        volume = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]][0]
        assert volume["secret"]["secretName"] == secret, where
        assert {"key": "token", "path": token_file.name} in volume["secret"]["items"], where
        # The caller API token keeps its own mount (the two Secrets never share a directory).
        if engine == "deployment":
            assert env["DON_API_TOKEN_FILE"]["value"] != str(token_file), where
        egress = [r for p in policies if selects(p["spec"]["podSelector"], labels) for r in p["spec"].get("egress", [])]
        assert _allows(egress, "to", recorder_labels, port), f"{where}: no egress to the recorder on {port}"
        assert _allows(ingress, "from", labels, port), f"{where}: the recorder does not admit it on {port}"


def test_predictors_record_nothing_without_the_recorder():
    render = render_case(Case("no-recorder", ("--set", "serving.engine=deployment")))
    assert "DON_RECORDS_" not in render.text and "records-token" not in render.text
    assert _predictor_pods(render)
    failed = run_helm("template", "don", str(CHART), "--set", "recorder.enabled=true", "--set",
                      "recorder.token.value=t", "--set", "recorder.sampleRate=0", check=False)
    assert failed.returncode != 0 and "sampleRate" in failed.stderr


def test_every_alert_has_a_runbook_section(rules):
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)}
    alerts = _alerts(rules)
    assert {a["alert"] for a in alerts} == {
        "DonModelServerDown", "DonModelServerNotReady", "DonHighErrorRate", "DonHighP99Latency", "DonInputDriftHigh",
        "DonInputDriftWindow", "DonLiveFalseAcceptRateHigh", "DonRecorderDroppingRecords", "DonTrainingJobFailed", "DonRolloutRolledBack"}
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("docs/runbook.md#") and url.split("#")[1] in anchors, url


def test_alert_and_dashboard_metrics_exist_in_the_code(render, rules):
    """Each metric the alerts and dashboard query is exported by our code (or kube-state-metrics /
    Prometheus itself), so a renamed counter cannot silently break an alert."""
    code = "".join(p.read_text() for d in ("don_core", "model_server", "ops") for p in (REPO / d).rglob("*.py"))
    exprs = [a["expr"] for a in _alerts(rules)]
    dashboard = json.loads(render.named("ConfigMap", f"{FULL}-dashboard")["data"]["don-predictor.json"])
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(don_[a-z0-9_]+)", e)}
    external = {"up", "kube_job_status_failed"}
    assert used and external
    missing = set()
    for name in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if f'"{base}"' not in code and f'"{name}"' not in code and f'+ "{base[len("don_live_"):]}"' not in code:
            missing.add(name)
    assert not missing, f"queried but defined nowhere in the code: {sorted(missing)}"


def _series(name: str, values: str, **labels) -> dict:
    labels = {"namespace": NS, **labels}
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


PROMTOOL_TESTS = [
    # (alert, eval_time, input series, expected firing label sets)
    ("DonModelServerDown", "10m",
     [_series("up", "0x20", job=f"{NS}/{FULL}-predictors", pod="p1", instance="10.0.0.1:8080"),
      _series("up", "1x20", job=f"{NS}/{FULL}-predictors", pod="p2", instance="10.0.0.2:8080")],
     [{"severity": "critical", "namespace": NS, "job": f"{NS}/{FULL}-predictors", "pod": "p1", "instance": "10.0.0.1:8080"}]),
    ("DonModelServerNotReady", "15m",
     [_series("don_model_ready", "0x20", pod="p1", model="don-rf", version="2"),
      _series("don_model_ready", "1x20", pod="p2", model="don-rf", version="1")],
     [{"severity": "warning", "namespace": NS, "pod": "p1", "model": "don-rf", "version": "2"}]),
    ("DonHighErrorRate", "15m",
     [_series("don_requests_total", "0+10x30", model="don-rf", version="2", protocol="v1", outcome="server_error"),
      _series("don_requests_total", "0+90x30", model="don-rf", version="2", protocol="v1", outcome="success"),
      _series("don_requests_total", "0+100x30", model="don-rf", version="1", protocol="v1", outcome="success")],
     [{"severity": "critical", "namespace": NS, "model": "don-rf", "version": "2"}]),
    ("DonHighP99Latency", "20m",
     [_series("don_request_duration_seconds_bucket", "0+0x30", model="don-tf", version="1", protocol="v1", le="0.5"),
      _series("don_request_duration_seconds_bucket", "0+10x30", model="don-tf", version="1", protocol="v1", le="1.0"),
      _series("don_request_duration_seconds_bucket", "0+10x30", model="don-tf", version="1", protocol="v1", le="+Inf")],
     [{"severity": "warning", "namespace": NS, "model": "don-tf", "version": "1"}]),
    ("DonInputDriftHigh", "35m",
     [_series("don_out_of_distribution_rows_total", "0+30x40", model="don-rf", version="2"),
      _series("don_batch_rows_sum", "0+100x40", model="don-rf", version="2"),
      _series("don_out_of_distribution_rows_total", "0+1x40", model="don-rf", version="1"),
      _series("don_batch_rows_sum", "0+100x40", model="don-rf", version="1")],
     [{"severity": "warning", "namespace": NS, "model": "don-rf", "version": "2"}]),
    ("DonInputDriftWindow", "25m",
     # two workers of version 2, one of them seeing the shifted instrument; version 1 stays inside
     [_series("don_drift_window_score", "0.4x5 3.2x30", pod="p1", model="don-rf", version="2"),
      _series("don_drift_window_score", "0.3x40", pod="p2", model="don-rf", version="2"),
      _series("don_drift_window_score", "0.9x40", pod="p3", model="don-rf", version="1")],
     [{"severity": "warning", "namespace": NS, "model": "don-rf", "version": "2"}]),
    ("DonLiveFalseAcceptRateHigh", "45m",
     [_series("don_live_false_accept_rate", "0.3x60", model="don-rf", version="3", window="7d", threshold_ppb="1000"),
      _series("don_live_matched_samples", "40x60", model="don-rf", version="3", window="7d"),
      # Too few matched samples: no alert yet.
      _series("don_live_false_accept_rate", "0.5x60", model="don-rf", version="4", window="7d", threshold_ppb="1000"),
      _series("don_live_matched_samples", "5x60", model="don-rf", version="4", window="7d")],
     [{"severity": "critical", "namespace": NS, "model": "don-rf", "version": "3", "window": "7d", "threshold_ppb": "1000"}]),
    ("DonRecorderDroppingRecords", "20m",
     [_series("don_records_dropped_total", "0+5x30", pod="p1", model="don-rf", version="2")],
     [{"severity": "warning", "namespace": NS}]),
    ("DonTrainingJobFailed", "5m",
     [_series("kube_job_status_failed", "0 1x10", job_name=f"{FULL}-train-rf-1"),
      _series("kube_job_status_failed", "1x10", job_name="someone-elses-job")],
     [{"severity": "warning", "namespace": NS, "job_name": f"{FULL}-train-rf-1"}]),
    ("DonRolloutRolledBack", "5m",
     [_series("don_rollout_events_total", "0 0 1x20", rollout="don-rf-v3", reason="RolledBack"),
      _series("don_rollout_events_total", "0+1x20", rollout="don-rf-v2", reason="Advanced")],
     [{"severity": "warning", "namespace": NS, "rollout": "don-rf-v3", "reason": "RolledBack"}]),
]


# What each alert says when it fires in the test above (templates resolved by Prometheus).
ANNOTATIONS = {
    "DonModelServerDown": ('Model server p1 is down',
                           'Prometheus cannot scrape p1 (10.0.0.1:8080) for 5 minutes.'),
    "DonModelServerNotReady": ('don-rf version 2 is not ready in p1',
                               'The model has not been loaded, verified and warmed up for 10 minutes.'),
    "DonHighErrorRate": ('don-rf version 2 answers 10% of requests with 5xx',
                         'More than 0.01 of requests failed on the server side over 5 minutes.'),
    "DonHighP99Latency": ('don-tf version 1 p99 latency is 995ms',
                          'Server-side p99 latency above 0.5 s for 10 minutes.'),
    "DonInputDriftHigh": ('30% of spectra sent to don-rf are out of distribution',
                          'More than 0.1 of rows lie outside the training data (Hotelling T2 / Q residual above the 99th percentile) over 15 minutes.'),
    "DonInputDriftWindow": ('The spectra recently sent to don-rf version 2 have moved away from the training data (window score 3.2)',
                            'The mean Q residual of a server\'s last rows (100 by default) has been outside its training range (score above 1) for 15 minutes: a gain or wavelength shift too small to flag row by row.'),
    "DonLiveFalseAcceptRateHigh": ('don-rf version 3 accepted 30% of contaminated lots',
                                   'Live false-accept rate at 1000 ppb over 7d (lab results joined to predictions) is above 0.1.'),
    "DonRecorderDroppingRecords": ('Prediction records are being dropped in don',
                                   'Model servers could not deliver records to the recorder, or the recorder dropped unpaired KServe events, for 10 minutes.'),
    "DonTrainingJobFailed": ('Training Job don-don-predictor-train-rf-1 failed',
                             'A training Job of don-don-predictor has failed pods; no new model version was published by it.'),
    "DonRolloutRolledBack": ('ModelRollout don-rf-v3 was rolled back',
                             'The operator rolled the canary back; `python -m ops rollout status don-rf-v3` shows why.'),
}


def test_promtool_checks_and_unit_tests_every_alert(rules, promtool, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert {t[0] for t in PROMTOOL_TESTS} == {a["alert"] for a in _alerts(rules)}, "an alert without a promtool test"
    tests = [{"interval": "1m", "input_series": series,
              "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                   "exp_alerts": [{"exp_labels": labels, "exp_annotations": {
                                       "summary": ANNOTATIONS[alert][0], "description": ANNOTATIONS[alert][1],
                                       "runbook_url": f"docs/runbook.md#{alert.lower()}"}} for labels in expected]},
                                  # and not before its `for` has passed on the first sample
                                  {"eval_time": "0m", "alertname": alert, "exp_alerts": []}]}
             for alert, at, series, expected in PROMTOOL_TESTS]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                         "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The tests can fail: an alert that fires with other labels is caught.
    tests[0]["alert_rule_test"][0]["exp_alerts"][0]["exp_labels"]["pod"] = "p2"
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests[:1]}))
    assert subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path).returncode != 0


def test_the_operator_reaches_the_recorder_at_the_records_url():
    """The lab gate (and live accuracy) read the recorder: the ModelRollouts carry the URL the
    model servers send to (recorder.recordsUrl: clusters without cluster DNS), and the policies let
    the operator through to the recorder's port, both ways."""
    render = render_case(Case("recorder-operator-deployment", (
        "--set", "serving.engine=deployment", "--set", "operator.enabled=true", "--set", "recorder.enabled=true",
        "--set", "recorder.token.value=t", "--set", "recorder.port=9000",
        "--set", "recorder.recordsUrl=http://10.96.0.9:9000/")))
    for rollout in render.of_kind("ModelRollout"):
        assert rollout["spec"]["labGate"]["recorderUrl"] == "http://10.96.0.9:9000"
    operator_labels = render.named("Deployment", f"{FULL}-operator")["spec"]["template"]["metadata"]["labels"]
    recorder_labels = render.named("Deployment", f"{FULL}-recorder")["spec"]["template"]["metadata"]["labels"]
    assert _allows(render.named("NetworkPolicy", f"{FULL}-operator")["spec"]["egress"], "to", recorder_labels, 9000)
    assert _allows(render.named("NetworkPolicy", f"{FULL}-recorder")["spec"]["ingress"], "from", operator_labels, 9000)
