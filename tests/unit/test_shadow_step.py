"""The shadow step: its spec, its state machine (ops/rollout/shadow_step.py), the objects it builds
(ops/rollout/shadow.py) and the lab gate's reading of the recorder's pairs (ops/rollout/lab.py)."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from don_core import lab_gate
from don_core.contract import MODEL_LABEL_KEY, TRACK_LABEL
from model_server.mirror import read_target
from ops.rollout import analysis, lab, shadow, shadow_step, state
from ops.rollout.spec import LabGateSpec, SpecError, parse_spec

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RECORDER = "http://recorder:8080"


def shadow_spec(**over):
    body = {"target": "don", "candidate": {"version": 2}, "mode": "Deployment",
            "steps": ["shadow", 10, 100], "interval": "5s", "labGate": {"recorderUrl": RECORDER},
            "shadow": {"deadline": "1h"}}
    for key, value in over.items():
        body[key] = dict(body.get(key) or {}, **value) if isinstance(value, dict) else value
    return parse_spec(body)


def test_the_shadow_step_comes_first_and_says_what_it_needs():
    spec = shadow_spec()
    assert spec.shadow and spec.steps == (10, 100) and spec.shadow.deadline_s == 3600
    assert spec.lab_gate == LabGateSpec(30, 0.02, 0.05, RECORDER)
    assert spec.lab_gate.margin == lab_gate.DEFAULT_MARGIN  # one definition
    assert spec.shadow.on_no_labels == "RollBack"  # no lab evidence is no evidence
    assert spec.shadow.percent == 100
    assert parse_spec({"target": "don", "candidate": {"version": 2}}).shadow is None
    assert all(shadow_spec(mode=mode).shadow for mode in ("Standard", "Knative"))  # shadow_isvc.py
    for body, match in (({"steps": [10, "shadow", 100]}, "only be the first"),
                        ({"mode": "Knative", "shadow": {"watch": "1h"}}, "watch needs mode Deployment"),
                        ({"labGate": {"recorderUrl": ""}}, "recorderUrl"),
                        ({"shadow": {"onNoLabels": "Maybe"}}, "onNoLabels"),
                        ({"steps": ["shadow"]}, "between 1 and 100")):
        with pytest.raises(SpecError, match=match):
            shadow_spec(**body)


def figures(verdict, pairs=40):
    return {"verdict": verdict, "pairs": pairs, "margin": 0.02, "minPairs": 30, "meanScore": 0.01,
            "lower": -0.01, "upper": 0.03, "reason": "r", "stableFalseAccepts": 1,
            "candidateFalseAccepts": 2, "stableFalseRejects": 0, "candidateFalseRejects": 1}


def look(status, spec, verdict, pairs=40, other=analysis.PASS, after=5):
    """One analysis in the shadow: the lab gate's verdict, one other check's result."""
    seen = figures(verdict, pairs)
    checks = [{"name": "servedCorrectly", "value": 1.0, "threshold": 0.99, "result": other},
              lab.check(seen)]
    result = analysis.add_checks({"checks": [], "canary": {}, "stable": {}}, checks)
    return shadow_step.decide(status, spec, result, seen, T0 + dt.timedelta(seconds=after),
                              share=lambda w: w)


def started(spec):
    return state.start(spec, T0, {"stable_version": 1, "candidate_version": 2},
                       first_step=shadow_step.first_step(spec, T0))


def test_a_rollout_with_a_shadow_starts_in_it_at_weight_zero():
    status = started(shadow_spec())
    assert (status.step, status.step_label, status.weight, status.step_weight) == (0, "shadow", 0, 0)
    assert shadow_step.active(status) and status.phase == "Progressing"
    assert status.shadow_deadline_at == state.stamp(T0 + dt.timedelta(hours=1))
    assert "shadowing 100% of requests" in status.message
    assert status.to_wire()["stepLabel"] == "shadow"  # what `kubectl get mro` shows


def test_lab_pass_leaves_the_shadow_for_the_first_canary_step():
    spec = shadow_spec()
    decision, status = look(started(spec), spec, lab.HOLD, pairs=12)
    assert decision == "Hold" and shadow_step.active(status) and status.lab_gate["pairs"] == 12
    decision, status = look(status, spec, lab.PASS)
    assert decision == "Advance" and not shadow_step.active(status)
    assert (status.step, status.weight, status.step_label) == (1, 10, "1/2")
    entry = status.history[-1]
    assert entry["event"] == "Advanced" and entry["lab"]["verdict"] == "Pass"
    assert "lab gate Pass on 40 pairs" in status.message  # the Event names the figures


def test_lab_fail_rolls_back_at_once_naming_the_figures():
    spec = shadow_spec(analysis={"failureLimit": 3})
    decision, status = look(started(spec), spec, lab.FAIL)
    assert decision == "RollBack" and status.phase == "RolledBack" and status.weight == 0
    assert "rolled back in shadow: lab gate Fail on 40 pairs" in status.message
    assert "false accepts at 1000 ppb stable 1, candidate 2" in status.message


def test_another_check_failing_in_the_shadow_counts_against_the_failure_limit():
    spec = shadow_spec()
    decision, status = look(started(spec), spec, lab.HOLD, other=analysis.FAIL)
    assert decision == "Hold" and status.failed_checks == 1
    decision, status = look(status, spec, lab.HOLD, other=analysis.FAIL, after=10)
    assert decision == "RollBack"


@pytest.mark.parametrize("on_no_labels,pairs,other,decision,phrase", [
    ("RollBack", 5, analysis.PASS, "RollBack", "too few lab pairs (onNoLabels: RollBack)"),
    ("Proceed", 5, analysis.PASS, "Advance", "proceeding without a lab verdict"),
    ("Proceed", 5, analysis.INCONCLUSIVE, "RollBack", "too few lab pairs"),
    ("Proceed", 40, analysis.PASS, "RollBack", "the lab gate is still undecided"),
])
def test_the_shadow_deadline(on_no_labels, pairs, other, decision, phrase):
    spec = shadow_spec(shadow={"onNoLabels": on_no_labels})
    status = started(spec)
    assert look(status, spec, lab.HOLD, pairs, other, after=3599)[0] == "Hold"  # the deadline holds off
    got, status = look(status, spec, lab.HOLD, pairs, other, after=3600)
    assert got == decision and phrase in status.message, status.message
    assert status.shadow_deadline_exceeded is (True if decision == "RollBack" else None)
    if decision == "Advance":
        assert status.step == 1 and status.weight == 10


def test_the_shadow_deployment_is_off_the_models_service_and_never_mirrors():
    canary = {"metadata": {"name": "don-canary", "labels": {"app": "don", MODEL_LABEL_KEY: "don"}},
              "spec": {"replicas": 0,
                       "selector": {"matchLabels": {"app": "don", MODEL_LABEL_KEY: "don", TRACK_LABEL: "canary"}},
                       "template": {"metadata": {"labels": {"app": "don", MODEL_LABEL_KEY: "don",
                                                            TRACK_LABEL: "canary"}},
                                    "spec": {"containers": [{"name": "model-server", "env": [
                                        {"name": "DON_MODEL_VERSION", "value": "2"}]}]}}}}
    owner = {"kind": "ModelRollout", "name": "don", "uid": "u"}
    body = shadow.shadow_deployment(canary, "don-shadow", 2, owner)
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "don", TRACK_LABEL: "shadow"} == body["spec"]["selector"]["matchLabels"]
    assert body["spec"]["replicas"] == 2 and body["metadata"]["ownerReferences"] == [owner]
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DON_MODEL_VERSION", "value": "2"} in env and {"name": "DON_SHADOW", "value": "1"} in env
    assert canary["spec"]["template"]["metadata"]["labels"][MODEL_LABEL_KEY] == "don"  # not mutated


def test_the_mirror_configmap_is_what_the_model_server_reads(tmp_path):
    cm = shadow.mirror_configmap("don-mirror", "http://don-shadow.ns.svc", 25, {"uid": "u"})
    path = tmp_path / shadow.MIRROR_KEY
    path.write_text(cm["data"][shadow.MIRROR_KEY])
    target = read_target(path)
    assert (target.url, target.percent, target.model) == ("http://don-shadow.ns.svc", 25, None)


def pairs_doc(stable, candidate, truth):
    """The recorder's /v1/pairs?detail=1 document, the parts the lab gate reads."""
    decisions = {"1000": {side: {"falseAccepts": int(np.sum((np.asarray(p) <= 1000) & (np.asarray(truth) > 1000))),
                                 "falseRejects": int(np.sum((np.asarray(p) > 1000) & (np.asarray(truth) <= 1000)))}
                          for side, p in (("stable", stable), ("candidate", candidate))}}
    return {"pairs": len(truth), "decisions": decisions,
            "detail": {"sample_id": [str(i) for i in range(len(truth))], "stable_ppb": list(stable),
                       "candidate_ppb": list(candidate), "truth_ppb": list(truth)}}


def test_the_lab_gate_judges_the_recorders_pairs():
    rng = np.random.default_rng(0)
    truth = np.expm1(rng.uniform(5, 9, 200))
    good = truth * np.exp(rng.normal(0, 0.1, 200))
    bad = truth * 2.5
    settings = shadow_spec().lab_gate
    passed = lab.judge(settings, pairs_doc(good, good * np.exp(rng.normal(0, 0.01, 200)), truth))
    assert passed["verdict"] == lab.PASS and passed["pairs"] == 200
    failed = lab.judge(settings, pairs_doc(good, bad, truth))
    assert failed["verdict"] == lab.FAIL and failed["lower"] > 0.02
    assert failed["candidateFalseAccepts"] == 0 and failed["candidateFalseRejects"] > 0
    held = lab.judge(settings, pairs_doc(good[:5], bad[:5], truth[:5]))
    assert held["verdict"] == lab.HOLD and "30 needed" in held["reason"]
    assert lab.check(failed)["result"] == analysis.FAIL and lab.check(held)["result"] == analysis.INCONCLUSIVE


def test_a_recorder_that_cannot_be_read_holds_naming_why():
    from tests.net import free_port
    gate = LabGateSpec(30, 0.02, 0.05, f"http://127.0.0.1:{free_port()}")
    seen = lab.look(gate, "don", 1, 2, timeout=2)
    assert seen["verdict"] == lab.HOLD and "recorder unreadable" in seen["reason"]
    assert json.dumps(seen)  # goes into the status as it is


def test_the_gateway_mirror_filter_is_added_and_removed_on_the_stables_rules_only():
    other = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}
    route = {"spec": {"rules": [
        {"backendRefs": [{"name": "don-stable"}, {"name": "don-canary"}], "filters": [other]},
        {"backendRefs": [{"name": "elsewhere"}]}]}}
    rules = shadow.mirrored_rules(route, "don-stable", "don-shadow", 100)
    assert rules[0]["filters"] == [other, {"type": "RequestMirror",
                                           "requestMirror": {"backendRef": {
                                               "group": "", "kind": "Service", "name": "don-shadow", "port": 80}}}]
    assert "filters" not in rules[1]
    again = shadow.mirrored_rules({"spec": {"rules": rules}}, "don-stable", "don-shadow", 25)
    assert again[0]["filters"][1]["requestMirror"]["percent"] == 25 and len(again[0]["filters"]) == 2
    assert shadow.request_mirror("s", 12.5)["requestMirror"]["fraction"] == {"numerator": 1250, "denominator": 10000}
    assert shadow.mirrored_rules({"spec": {"rules": again}}, "don-stable", "don-shadow", None)[0]["filters"] == [other]
