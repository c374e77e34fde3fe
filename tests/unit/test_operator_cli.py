"""The rollout CLI's pure parts: the object it creates and the tables it prints."""
from __future__ import annotations

import datetime as dt

from ops.__main__ import _parser
from ops.rollout import cli
from ops.rollout.spec import parse_spec


def test_start_builds_a_valid_rollout():
    args = _parser().parse_args(["rollout", "start", "--target", "don", "--version", "3",
                                 "--mode", "Knative", "--steps", "5,50,100", "--interval", "30s",
                                 "--max-p99-ms", "250", "--prometheus-url", "http://prom:9090"])
    body = cli.rollout_body(args)
    assert body["metadata"]["name"] == "don-v3"
    spec = parse_spec(body["spec"])
    assert spec.steps == (5, 50, 100) and spec.interval_s == 30 and spec.mode == "Knative"
    assert spec.analysis.max_p99_latency_ms == 250 and spec.analysis.min_success_rate == 0.99
    assert spec.metrics.source == "Prometheus"


def test_start_with_a_shadow_step_and_errors_as_one_line():
    def start(*extra):
        return _parser().parse_args(["rollout", "start", "--target", "don", "--version", "3",
                                     "--mode", "Deployment", *extra])
    body = cli.rollout_body(start("--steps", "shadow,10,50,100", "--recorder-url",
                                  "http://recorder:8080", "--shadow-watch", "72h"))
    spec = parse_spec(body["spec"])
    assert spec.shadow and spec.steps == (10, 50, 100) and spec.shadow.watch_s == 72 * 3600
    assert spec.lab_gate.recorder_url == "http://recorder:8080"
    said = []
    for extra, match in ((("--steps", "shadow,10,100"), "needs spec.labGate.recorderUrl"),
                         (("--steps", "10,shade,100"), "'shade' is neither a percent nor 'shadow'"),
                         (("--steps", "10,shadow"), "may only be the first step")):
        assert cli.run(start(*extra), client=None, say=said.append) == 1
        assert said[-1].startswith("error: ") and match in said[-1] and "\n" not in said[-1]


def test_status_table_lines_up():
    now = dt.datetime.now(dt.timezone.utc)
    item = {"metadata": {"name": "don-v3", "namespace": "ml",
                         "creationTimestamp": (now - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"target": "don", "mode": "Standard"},
            "status": {"phase": "Progressing", "weight": 25, "stepLabel": "2/4", "failedChecks": 0,
                       "message": "analysis passed; 25% of traffic to the candidate",
                       "lastAnalysis": {"time": "t", "step": 2, "weight": 25, "verdict": "Pass",
                                        "checks": [{"name": "successRate", "value": 0.998123,
                                                    "threshold": 0.99, "result": "Pass"}]},
                       "history": [{"time": "t", "event": "Started", "step": 1, "weight": 10,
                                    "message": "sending 10%"}]}}
    rows, headers = cli.summary_rows([item], all_namespaces=True)
    text = cli.table(rows, headers).splitlines()
    assert text[0].split() == ["NAMESPACE", "NAME", "TARGET", "MODE", "PHASE", "WEIGHT", "STEP",
                               "FAILED", "AGE", "MESSAGE"]
    assert text[1].split()[:9] == ["ml", "don-v3", "don", "Standard", "Progressing", "25%", "2/4", "0", "5m"]
    assert text[0].index("PHASE") == text[1].index("Progressing")
    detail = cli.detail(item)
    assert "0.9981" in detail and "CHECK" in detail and "Started" in detail
