"""Pure logic of the rollout operator: spec defaults, metrics windows, verdicts, decisions, patches."""
from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ops.rollout import analysis, metrics, state, traffic
from ops.rollout.spec import AutoscalingSpec, SpecError, parse_interval, parse_spec
from ops.rollout.status import RolloutStatus
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts" / "don-predictor" / "crds" / "modelrollouts.yaml"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def crd_spec_schema(part: str = "spec") -> dict:
    doc = yaml.safe_load(CRD.read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]


# The CRD's defaults against the operator's: tests/unit/test_contract.py (both CRD copies).


def test_crd_uses_no_cel_so_kubernetes_1_20_accepts_it():
    assert "x-kubernetes-validations" not in CRD.read_text()
    assert 'default: ""' not in CRD.read_text()  # 1.20 rejects empty-string defaults
    doc = yaml.safe_load(CRD.read_text())
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["spec"]["names"]["shortNames"] == ["mro"]
    columns = {c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Phase", "Weight", "Step", "Age"} <= columns


def test_spec_defaults_and_errors():
    spec = parse_spec({"target": "don", "candidate": {"version": 2}})
    assert spec.steps == (10, 25, 50, 100) and spec.interval_s == 60 and spec.mode == "Standard"
    assert spec.analysis.failure_limit == 1 and spec.model_name == "don"
    assert parse_spec({"target": "don", "candidate": {"version": 2},
                       "analysis": {"failureLimit": 3}}).analysis.min_success_rate == 0.99
    assert spec.analysis.live_accuracy is None and spec.deployment.stable_service == "don-stable"
    live = parse_spec({"target": "don", "candidate": {"version": 2},
                       "analysis": {"liveAccuracy": {"recorderUrl": "http://r"}}}).analysis.live_accuracy
    assert (live.recorder_url, live.min_matched, live.window) == ("http://r", 30, "7d")
    # a value of the wrong type is refused naming its field
    for body, field in ((dict(analysis={"minSuccessRate": "high"}), "spec.analysis.minSuccessRate"),
                        (dict(endpoints={"timeoutSeconds": True}), "spec.endpoints.timeoutSeconds"),
                        (dict(analysis={"liveAccuracy": {"window": "7d"}}),
                         "spec.analysis.liveAccuracy.recorderUrl"),
                        (dict(deployment={"autoscaling": {"minReplicas": 1}}),
                         "spec.deployment.autoscaling.maxReplicas"),
                        (dict(interval="often"), "spec.interval")):
        with pytest.raises(SpecError, match=field):
            parse_spec({"target": "don", "candidate": {"version": 2}, **body})
    with pytest.raises(SpecError, match="candidate"):
        parse_spec({"target": "don", "candidate": {}})
    with pytest.raises(SpecError, match="increasing"):
        parse_spec({"target": "don", "candidate": {"version": 2}, "steps": [50, 10]})
    with pytest.raises(SpecError, match="prometheusUrl"):
        parse_spec({"target": "don", "candidate": {"version": 2}, "metrics": {"source": "Prometheus"}})
    assert parse_interval("2m") == 120
    with pytest.raises(SpecError):
        parse_interval("2 minutes")


def exposition(successes: int, errors: int, client_errors: int, latencies: list[float],
               model: str = "don", version: str = "2") -> str:
    """Metrics text produced by prometheus_client with the model server's names and labels."""
    registry = CollectorRegistry()
    requests = Counter("don_requests", "", ["model", "version", "protocol", "outcome"], registry=registry)
    latency = Histogram("don_request_duration_seconds", "", ["model", "version", "protocol"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=registry)
    requests.labels(model, version, "v1", "success").inc(successes)
    requests.labels(model, version, "v1", "server_error").inc(errors)
    requests.labels(model, version, "v2", "client_error").inc(client_errors)
    requests.labels("other", version, "v1", "server_error").inc(1000)
    for seconds in latencies:
        latency.labels(model, version, "v1").observe(seconds)
    return generate_latest(registry).decode()


def test_metrics_window_between_two_scrapes():
    first = metrics.parse_counters(exposition(10, 0, 3, [0.004] * 10), "don",
                                   "don_requests_total", "don_request_duration_seconds")
    later = metrics.parse_counters(exposition(100, 10, 50, [0.004] * 10 + [0.2] * 100), "don",
                                   "don_requests_total", "don_request_duration_seconds")
    figures = metrics.summarise(metrics.window({"a": later}, {"a": first}))
    # 90 successes and 10 server errors in the window; client errors and other models are ignored
    assert figures["requests"] == 100
    assert figures["successRate"] == pytest.approx(0.9)
    assert 100 < figures["p99LatencyMs"] <= 250
    # a counter that went down is a restarted server: its window starts at zero
    restarted = metrics.window({"a": first}, {"a": later})
    assert metrics.summarise(restarted)["requests"] == 10


def test_quantile_interpolates_like_promql():
    buckets = {"0.1": 50.0, "0.2": 100.0, "+Inf": 100.0}
    assert metrics.quantile(0.5, buckets) == pytest.approx(0.1)
    assert metrics.quantile(0.99, buckets) == pytest.approx(0.198)
    assert metrics.quantile(0.99, {"0.1": 0.0, "+Inf": 0.0}) is None


THRESHOLDS = parse_spec({"target": "don", "candidate": {"version": 2}}).analysis


def found(stable: int, candidate: int) -> dict:
    """What a router reads at the start of a rollout of `candidate` over `stable` (KServe)."""
    return {"stable_storage_uri": f"s3://m/don/{stable}", "candidate_storage_uri": f"s3://m/don/{candidate}",
            "stable_version": stable, "candidate_version": candidate}


def good(**over):
    return dict({"requests": 50, "successRate": 1.0, "p99LatencyMs": 20.0}, **over)


def golden(agreement=1.0, version="2"):
    """ops.rollout.golden.served_correctly's figures for the canary (the stable is not asked)."""
    return {"canary": {"agreement": agreement, "rows": 330, "maxAbsDiffPpb": 0.01, "version": version}}


@pytest.mark.parametrize("canary,gold,verdict,failing", [
    (good(), golden(), analysis.PASS, None),
    (good(successRate=0.9), golden(), analysis.FAIL, "successRate"),
    (good(p99LatencyMs=900.0), golden(), analysis.FAIL, "p99LatencyMs"),
    # one row in 100 may flip a split (the contract's ONNX rule); more is not this version's model
    (good(), golden(agreement=0.99), analysis.PASS, None),
    (good(), golden(agreement=0.985), analysis.FAIL, "servedCorrectly"),
    (good(requests=3), golden(), analysis.INCONCLUSIVE, ["successRate", "p99LatencyMs"]),
    (good(), golden(version="1"), analysis.INCONCLUSIVE, "canaryVersion"),
    ({"error": "cannot scrape"}, golden(), analysis.INCONCLUSIVE, "metrics"),
    (good(), {"canary": {"error": "503"}}, analysis.FAIL, "servedCorrectly"),
    (good(), {"canary": {"version": None, "unrecorded": "golden.json records no predictions"}},
     analysis.INCONCLUSIVE, "servedCorrectly"),
    (good(), {"canary": {"version": None, "error": "golden set unreadable"}, "unavailable": True},
     analysis.INCONCLUSIVE, "servedCorrectly"),
])
def test_judge(canary, gold, verdict, failing):
    result = analysis.judge(THRESHOLDS, canary, good(), gold, expected_version=2)
    assert result["verdict"] == verdict
    bad = [c["name"] for c in result["checks"] if c["result"] != analysis.PASS]
    failing = [failing] if isinstance(failing, str) else (failing or [])
    assert bad == failing
    for name in failing:
        assert name in result["summary"]


def run_to_end(verdicts, failure_limit=1, steps=(10, 25, 50, 100)):
    spec = parse_spec({"target": "don", "candidate": {"version": 2}, "steps": list(steps),
                       "interval": "5s", "analysis": {"failureLimit": failure_limit}})
    status = state.start(spec, T0, found(1, 2))
    trail = [(status.step, status.weight)]
    moment = T0
    for verdict in verdicts:
        moment += dt.timedelta(seconds=5)
        assert state.due(status, moment)
        assert not state.due(status, moment - dt.timedelta(seconds=1))
        decision, status = state.decide(status, spec, {"verdict": verdict, "summary": "x", "checks": []}, moment)
        trail.append((decision, status.phase, status.step, status.weight))
        if status.phase in state.TERMINAL:
            break
    return trail, status.to_wire()


def test_decide_promotes_through_every_step():
    trail, status = run_to_end([analysis.PASS] * 4)
    assert trail == [(1, 10), ("Advance", "Progressing", 2, 25), ("Advance", "Progressing", 3, 50),
                     ("Advance", "Progressing", 4, 100), ("Promote", "Promoted", 4, 100)]
    assert [h["event"] for h in status["history"]] == ["Started", "Advanced", "Advanced", "Advanced", "Promoted"]
    assert status["trafficApplied"] is False  # the promotion patch is still to be applied


def test_each_analysis_keeps_its_figures_in_the_history():
    """lastAnalysis holds only the latest; the history entry of every analysis keeps its numbers
    (the console's rollout timeline)."""
    spec = parse_spec({"target": "don", "candidate": {"version": 2}, "steps": [10, 100], "interval": "5s"})
    status = state.start(spec, T0, found(1, 2))
    checks = [{"name": "successRate", "value": 0.99, "threshold": 0.95, "result": analysis.PASS},
              {"name": "p99LatencyMs", "value": 40, "threshold": 500, "result": analysis.PASS},
              {"name": "metrics", "value": None, "threshold": None, "result": analysis.PASS}]
    _, after = state.decide(status, spec, {"verdict": analysis.PASS, "summary": "ok", "checks": checks},
                            T0 + dt.timedelta(seconds=5))
    entry = after.history[-1]
    assert entry["event"] == "Advanced" and entry["verdict"] == analysis.PASS
    assert entry["figures"] == {"successRate": 0.99, "p99LatencyMs": 40}


def test_decide_tolerates_failure_limit_then_rolls_back():
    trail, status = run_to_end([analysis.PASS, analysis.FAIL, analysis.PASS, analysis.FAIL, analysis.FAIL])
    assert [t[0] for t in trail[1:]] == ["Advance", "Hold", "Advance", "Hold", "RollBack"]
    assert status["phase"] == "RolledBack" and status["weight"] == 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Progressing": "False", "Succeeded": "False"}


def test_decide_holds_when_inconclusive():
    trail, status = run_to_end([analysis.INCONCLUSIVE] * 5 + [analysis.PASS])
    assert [t[0] for t in trail[1:]] == ["Hold"] * 5 + ["Advance"]
    assert status["failedChecks"] == 0 and status["step"] == 2


STABLE, CANDIDATE = traffic.Served("s3://models/don-rf/1", 1), traffic.Served("s3://models/don-rf/2", 2)
ISVC = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "don"},
        "spec": {"predictor": {"minReplicas": 1, "model": {
            "name": "kserve-container", "modelFormat": {"name": "don-onnx"}, "runtime": "don-predictor",
            "storageUri": "s3://models/don-rf/1"}}}}


def merge(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def test_knative_patches_follow_kserve_canary_semantics():
    progressing = merge(ISVC, traffic.isvc_patch("Knative", ISVC, "Progressing", 25,
                                                 STABLE, CANDIDATE))
    assert progressing["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert progressing["spec"]["predictor"]["model"]["storageUri"] == "s3://models/don-rf/2"
    assert traffic.isvc_weight("Knative", progressing) == 25
    promoted = merge(progressing, traffic.isvc_patch("Knative", progressing, "Promoted", 100,
                                                     STABLE, CANDIDATE))
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert promoted["spec"]["predictor"]["model"]["storageUri"] == "s3://models/don-rf/2"
    rolled = merge(progressing, traffic.isvc_patch("Knative", progressing, "RolledBack", 0,
                                                   STABLE, CANDIDATE))
    assert rolled["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert rolled["spec"]["predictor"]["model"]["storageUri"] == "s3://models/don-rf/1"


def test_standard_patches_use_spec_canary():
    progressing = merge(ISVC, traffic.isvc_patch("Standard", ISVC, "Progressing", 10,
                                                 STABLE, CANDIDATE))
    (canary,) = progressing["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["model"]["storageUri"] == "s3://models/don-rf/2"
    assert canary["predictor"]["minReplicas"] == 1  # the rest of the stable predictor is kept
    assert progressing["spec"]["predictor"] == ISVC["spec"]["predictor"]
    promoted = merge(progressing, traffic.isvc_patch("Standard", progressing, "Promoted", 100,
                                                     STABLE, CANDIDATE))
    assert "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"]["model"]["storageUri"] == "s3://models/don-rf/2"
    rolled = merge(progressing, traffic.isvc_patch("Standard", progressing, "RolledBack", 0,
                                                   STABLE, CANDIDATE))
    assert rolled == ISVC


def test_standard_patch_is_valid_against_the_real_kserve_schema(kserve_crd_dir):
    try:
        import jsonschema
    except ImportError as exc:  # a dev dependency (pyproject.toml)
        unavailable(f"the jsonschema package is missing: {exc}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 2 MB of YAML: the C parser is 10x faster
    doc = yaml.load((kserve_crd_dir / "serving.kserve.io_inferenceservices.yaml").read_text(), Loader=loader)
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)  # skips the slow meta-schema check of 2 MB
    for mode in ("Standard", "Knative"):
        patched = merge(ISVC, traffic.isvc_patch(mode, ISVC, "Progressing", 10,
                                                 STABLE, CANDIDATE))
        validator.validate(patched)


def test_deployment_engine_helpers():
    # whole pods: the stable keeps its replicas up to 50 %, the canary gets the nearest count
    assert traffic.replica_split(4, 10) == (4, 1)
    assert traffic.replica_split(4, 25) == (4, 1)
    assert traffic.replica_split(4, 50) == (4, 4)
    assert traffic.replica_split(4, 75) == (1, 4)
    assert traffic.replica_split(4, 100) == (0, 4)
    assert traffic.replica_split(4, 0) == (4, 0)
    assert traffic.replica_split(2, 10) == (2, 1) and traffic.replica_share(2, 1) == 33
    assert traffic.replica_split(1, 10) == (1, 1) and traffic.replica_share(1, 1) == 50
    # the stable never loses capacity up to 50 %; the canary count is the nearest to the share
    for total in (1, 2, 3, 4, 8):
        for weight in range(1, 100):
            stable, canary = traffic.replica_split(total, weight)
            assert stable >= 1 and canary >= 1 and max(stable, canary) == total
            if weight <= 50:
                assert stable == total and abs(canary - total * weight / (100 - weight)) <= max(0.5, 1 - total * weight / (100 - weight))
    route = {"metadata": {"name": "don"}, "spec": {"rules": [{"backendRefs": [
        {"name": "don", "port": 80, "weight": 100}, {"name": "don-canary", "port": 80, "weight": 0}]}]}}
    rules = traffic.route_rules(route, "don", "don-canary", 25)
    assert [r["weight"] for r in rules[0]["backendRefs"]] == [75, 25]
    with pytest.raises(traffic.TrafficError, match="backendRefs"):
        traffic.route_rules(route, "don", "missing", 25)
    canary = {"metadata": {"name": "don-canary"}, "spec": {"template": {
        "metadata": {"labels": {"track": "canary", "don-predictor.io/model-version": "2"}},
        "spec": {"containers": [{"name": "server", "args": ["--model_dir=/mnt/models/2"],
                                 "env": [{"name": "DON_MODEL_VERSION", "value": "2"}]}]}}}}
    assert traffic.deployment_version(canary, "DON_MODEL_VERSION") == "2"
    # the stable gets the canary's pod spec (whole) and version label, but keeps its own track label
    assert traffic.promotion_patch(canary) == [
        {"op": "replace", "path": "/spec/template/spec", "value": canary["spec"]["template"]["spec"]},
        {"op": "add", "path": "/spec/template/metadata/labels/don-predictor.io~1model-version", "value": "2"}]


def test_golden_store_root_resolution(monkeypatch):
    from ops.rollout.locate import store_root
    from ops.rollout.golden import GoldenError
    monkeypatch.delenv("DON_STORE", raising=False)
    assert store_root("/mnt/other", "s3://models") == "/mnt/other"
    assert store_root(None, "s3://models/prefix") == "s3://models/prefix"
    with pytest.raises(GoldenError, match="DON_STORE"):
        store_root(None, "pvc://model-store")
    monkeypatch.setenv("DON_STORE", "/mnt/store")
    assert store_root(None, "pvc://model-store") == "/mnt/store"


def test_desired_delivery_spec():
    spec = parse_spec({"target": "don", "delivery": "Desired", "candidate": {"version": 3}})
    assert spec.desired and spec.progress_deadline_s == 600
    assert not parse_spec({"target": "don", "candidate": {"version": 3}}).desired
    with pytest.raises(SpecError, match="Desired needs spec.candidate.version"):
        parse_spec({"target": "don", "delivery": "Desired", "candidate": {"storageUri": "s3://m/don/3"}})
    with pytest.raises(SpecError, match="delivery"):
        parse_spec({"target": "don", "delivery": "Sometimes", "candidate": {"version": 3}})
    with pytest.raises(SpecError, match="30s, 5m or 1h"):
        parse_spec({"target": "don", "candidate": {"version": 3}, "progressDeadline": "soon"})


def test_inconclusive_past_the_progress_deadline_rolls_back():
    spec = parse_spec({"target": "don", "candidate": {"version": 2}, "interval": "30s",
                       "progressDeadline": "2m"})
    status = state.start(spec, T0, found(1, 2))
    inconclusive = {"verdict": analysis.INCONCLUSIVE, "summary": "canaryReady: no traffic reached the canary",
                    "checks": []}
    decisions = []
    for minutes in (0.5, 1, 1.5, 2):
        decision, status = state.decide(status, spec, inconclusive, T0 + dt.timedelta(minutes=minutes))
        decisions.append(decision)
    assert decisions == ["Hold", "Hold", "Hold", "RollBack"]
    assert status.to_wire()["phase"] == "RolledBack" and status.to_wire()["deadlineExceeded"]
    assert status.message.startswith("progress deadline 2m exceeded (inconclusive for 120s): canaryReady")
    # a decisive analysis restarts the clock
    status = state.start(spec, T0, found(1, 2))
    fail = {"verdict": analysis.FAIL, "summary": "x", "checks": []}
    _, status = state.decide(status, spec, fail, T0 + dt.timedelta(minutes=1.5))
    decision, _ = state.decide(status, spec, inconclusive, T0 + dt.timedelta(minutes=2.5))
    assert decision == "Hold"


def test_a_new_desired_rollout_keeps_the_history_and_clears_the_last_analysis():
    spec = parse_spec({"target": "don", "delivery": "Desired", "candidate": {"version": 3}})
    previous = state.rollback(state.start(spec, T0, found(1, 2)), T0, "bad").but(
        last_analysis={"verdict": "Fail"})
    fresh = state.start(spec, T0, found(2, 3), previous)
    assert [h["event"] for h in fresh.history] == ["Started", "RolledBack", "Started"]
    assert fresh.last_analysis is None and fresh.candidate_version == 3
    delivered = state.delivered(fresh, T0, 2, "version 2 serves all traffic")
    assert delivered.phase == "Delivered" and "Delivered" in state.TERMINAL
    assert {c["type"]: c["status"] for c in delivered.conditions}["Succeeded"] == "True"


def test_retargeting_a_predictor_keeps_its_version_env_and_label_true():
    isvc = copy.deepcopy(ISVC)
    predictor = isvc["spec"]["predictor"]
    predictor["labels"] = {"app": "don", "don-predictor.io/model-version": "1"}
    predictor["model"]["env"] = [{"name": "DON_MODEL_VERSION", "value": "1"}, {"name": "OTHER", "value": "x"}]
    for mode in ("Knative", "Standard"):
        progressing = merge(isvc, traffic.isvc_patch(mode, isvc, "Progressing", 10,
                                                     STABLE, CANDIDATE))
        canary = progressing["spec"]["canary"][0]["predictor"] if mode == "Standard" \
            else progressing["spec"]["predictor"]
        assert canary["model"]["env"] == [{"name": "DON_MODEL_VERSION", "value": "2"},
                                          {"name": "OTHER", "value": "x"}]
        assert canary["labels"] == {"app": "don", "don-predictor.io/model-version": "2"}
        rolled = merge(progressing, traffic.isvc_patch(mode, progressing, "RolledBack", 0,
                                                       STABLE, CANDIDATE))
        assert rolled["spec"]["predictor"]["model"]["env"][0] == {"name": "DON_MODEL_VERSION", "value": "1"}
        assert rolled["spec"]["predictor"]["labels"]["don-predictor.io/model-version"] == "1"


def test_stable_deployment_is_created_from_the_canary():
    canary = {"metadata": {"name": "don-rf-canary", "labels": {"app": "x", traffic.TRACK_LABEL: "canary"}},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x", traffic.TRACK_LABEL: "canary"}},
                       "template": {"metadata": {"labels": {"app": "x", traffic.TRACK_LABEL: "canary"}},
                                    "spec": {"containers": [{"name": "s"}]}}}}
    owner = {"apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout", "name": "don-rf",
             "uid": "u", "controller": True}
    stable = traffic.stable_from_canary(canary, "don-rf", 2, owner)
    assert stable["metadata"] == {"name": "don-rf", "labels": {"app": "x", traffic.TRACK_LABEL: "stable"},
                                  "ownerReferences": [owner]}
    assert stable["spec"]["replicas"] == 2
    assert stable["spec"]["selector"]["matchLabels"][traffic.TRACK_LABEL] == "stable"
    assert stable["spec"]["template"]["metadata"]["labels"][traffic.TRACK_LABEL] == "stable"
    assert canary["spec"]["selector"]["matchLabels"][traffic.TRACK_LABEL] == "canary"  # not modified
    ready = {"metadata": {"generation": 3}, "status": {"observedGeneration": 3, "replicas": 2,
                                                       "updatedReplicas": 2, "readyReplicas": 2}}
    assert traffic.deployment_ready(ready, 2)
    assert not traffic.deployment_ready(dict(ready, status=dict(ready["status"], readyReplicas=1)), 2)
    assert not traffic.deployment_ready(dict(ready, metadata={"generation": 4}), 2)  # template not rolled yet
    assert not traffic.deployment_ready(dict(ready, status=dict(ready["status"], replicas=3)), 2)  # old pod left


def test_the_stables_reference_error_is_remembered_for_the_step_without_stable_pods():
    from ops.rollout.controller import _stable_reference
    measured = {"stable": {"mae": 0.5, "rows": 30, "version": "1"}, "canary": {"mae": 0.52, "version": "2"},
                "relativeIncrease": 0.04}
    reference, remembered = _stable_reference(measured, None)
    assert reference is measured and remembered == {"mae": 0.5, "rows": 30, "version": "1"}
    gone = {"stable": {"error": "no pod"}, "canary": {"mae": 0.75, "version": "2"}}
    reference, again = _stable_reference(gone, remembered)
    assert reference["relativeIncrease"] == pytest.approx(0.5) and reference["stable"]["mae"] == 0.5
    assert again == remembered
    assert _stable_reference(gone, None)[0] is gone  # never measured: the check stays Inconclusive


def test_autoscaled_split_leaves_the_stable_to_its_hpa():
    assert traffic.autoscaled_split(3, 10, most=5) == (3, 1)
    assert traffic.autoscaled_split(3, 50, most=5) == (3, 3)
    assert traffic.autoscaled_split(2, 75, most=4) == (2, 4)   # capped by the HPA's maximum
    assert traffic.autoscaled_split(3, 100, most=5) == (0, 3)  # the last step: the canary alone
    assert traffic.autoscaled_split(3, 0, most=5) == (3, 0)
    assert traffic.hpa_spec("don", AutoscalingSpec(1, 4, 70))["scaleTargetRef"]["name"] == "don"


def test_status_reports_the_share_given_and_the_step_asked():
    from ops.rollout.spec import parse_spec

    spec = parse_spec({"target": "don", "candidate": {"version": 2}, "steps": [10, 50, 100]})
    moment = state.now_utc()
    started = state.start(spec, moment, found(1, 2), share=lambda w: 33 if w < 50 else w)
    assert (started.weight, started.step_weight) == (33, 10)
    assert "sending 33% of traffic" in started.message and "step 10%" in started.message
    result = {"verdict": "Pass", "summary": "ok", "checks": [], "canary": {}, "stable": {},
              "canaryShare": 31.5}
    decision, after = state.decide(started.but(step=1), spec, result, moment,
                                   share=lambda w: 33 if w < 50 else w)
    assert decision == "Advance" and (after.weight, after.step_weight) == (50, 50)
    assert after.history[-1]["figures"]["canaryShare"] == 31.5
    assert after.history[-1]["analysedWeight"] == 33  # the window's step, not the next one
    waiting = state.waiting(RolloutStatus(), moment, "version 2 of don is not in the store s yet")
    assert waiting.phase == "Waiting" and waiting.phase not in state.TERMINAL + state.ACTIVE
    assert {c["type"]: c["status"] for c in waiting.conditions}["Succeeded"] == "Unknown"


def test_the_status_keeps_its_wire_names():
    """The typed status reads and writes exactly the CRD's field names (kubectl columns, the
    console and the CLI read them); a field left unset is sent as null, which removes it."""
    spec = parse_spec({"target": "don", "candidate": {"version": 2}})
    wire = state.start(spec, T0, found(1, 2)).to_wire()
    declared = set(crd_spec_schema(part="status")["properties"])
    kept_unknown = {"deadlineExceeded", "referenceStable"}  # under x-kubernetes-preserve-unknown-fields
    assert set(wire) <= declared | kept_unknown and declared <= set(wire)
    assert (wire["stableVersion"], wire["candidateVersion"], wire["stepWeight"]) == (1, 2, 10)
    assert wire["desiredVersion"] is None and wire["trafficApplied"] is False
    assert RolloutStatus.from_wire(dict(wire, unknownField=1)).to_wire() == wire
    assert RolloutStatus.from_wire({}).applied  # a status written before trafficApplied existed
