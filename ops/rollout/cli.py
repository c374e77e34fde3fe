"""`python -m ops rollout ...`: start, watch and steer ModelRollouts from a terminal."""
from __future__ import annotations

import datetime as dt

from ops.rollout import GROUP, KIND, VERSION
from ops.rollout.kube import ApiException, Kube
from ops.rollout.state import parse_stamp


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in [headers] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    moment = parse_stamp(timestamp)
    if not moment:
        return "-"
    seconds = int(((now or dt.datetime.now(dt.timezone.utc)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def rollout_body(args) -> dict:
    spec: dict = {"target": args.target, "mode": args.mode, "candidate": {}}
    if args.version:
        spec["candidate"]["version"] = args.version
    if args.storage_uri:
        spec["candidate"]["storageUri"] = args.storage_uri
    if args.steps:
        spec["steps"] = [int(s) for s in args.steps.split(",")]
    if args.interval:
        spec["interval"] = args.interval
    if args.paused:
        spec["paused"] = True
    analysis = {key: value for key, value in (
        ("minSuccessRate", args.min_success_rate), ("maxP99LatencyMs", args.max_p99_ms),
        ("maxReferenceErrorIncrease", args.max_reference_error_increase),
        ("maxReferenceFalseAcceptIncrease", args.max_reference_false_accept_increase),
        ("failureLimit", args.failure_limit), ("minRequests", args.min_requests)) if value is not None}
    if analysis:
        spec["analysis"] = analysis
    endpoints = {key: value for key, value in (
        ("stableUrl", args.stable_url), ("canaryUrl", args.canary_url),
        ("modelName", args.model_name)) if value}
    if endpoints:
        spec["endpoints"] = endpoints
    if args.prometheus_url:
        spec["metrics"] = {"source": "Prometheus", "prometheusUrl": args.prometheus_url}
    if args.store_root:
        spec["store"] = {"root": args.store_root}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": args.name or f"{args.target}-v{args.version or 'x'}"}, "spec": spec}


def summary_rows(items: list[dict], all_namespaces: bool) -> tuple[list[list], list[str]]:
    headers = (["NAMESPACE"] if all_namespaces else []) + \
        ["NAME", "TARGET", "MODE", "PHASE", "WEIGHT", "STEP", "FAILED", "AGE", "MESSAGE"]
    rows = []
    for item in items:
        meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status") or {}
        row = [meta["name"], spec.get("target"), spec.get("mode"), status.get("phase", "Pending"),
               f"{status['weight']}%" if status.get("weight") is not None else "-",
               status.get("stepLabel", "-"), status.get("failedChecks", 0),
               age(meta.get("creationTimestamp")), (status.get("message") or "")[:70]]
        rows.append(([meta["namespace"]] if all_namespaces else []) + row)
    return rows, headers


def detail(item: dict) -> str:
    rows, headers = summary_rows([item], False)
    status = item.get("status") or {}
    parts = [table(rows, headers), "",
             f"stable:    {status.get('stableStorageUri', '-')}",
             f"candidate: {status.get('candidateStorageUri', '-')}",
             f"next analysis: {status.get('nextCheckAt') or '-'}"]
    last = status.get("lastAnalysis")
    if last:
        parts += ["", f"last analysis ({last.get('time')}, step {last.get('step')}, "
                      f"weight {last.get('weight')}%): {last.get('verdict')}"]
        parts.append(table([[c["name"], _fmt(c.get("value")), c.get("threshold"), c["result"],
                             c.get("note", "")] for c in last.get("checks", [])],
                           ["CHECK", "VALUE", "THRESHOLD", "RESULT", "NOTE"]))
    history = status.get("history") or []
    if history:
        parts += ["", table([[h.get("time"), h.get("event"), h.get("step"), h.get("weight"),
                              (h.get("message") or "")[:90]] for h in history[-15:]],
                            ["TIME", "EVENT", "STEP", "WEIGHT", "MESSAGE"])]
    return "\n".join(parts)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


# The steering verbs and the patch each sends: the CLI and the web console (console/) both call
# steer(), so a button does exactly what `python -m ops rollout VERB NAME` does.
ACTIONS = {"pause": {"spec": {"paused": True}}, "resume": {"spec": {"paused": False}},
           "promote": {"spec": {"action": "Promote"}}, "abort": {"spec": {"action": "Abort"}}}


def steer(kube: Kube, namespace: str, name: str, action: str) -> str:
    """Send one steering verb to a ModelRollout; the line to show. ApiException on refusal."""
    kube.patch_rollout(namespace, name, ACTIONS[action])
    return f"modelrollout {name}: {action} requested"


def api_reason(exc: ApiException) -> str:
    """The API server's own message of a refusal (e.g. `... not found`)."""
    try:
        import json
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:
        return exc.reason


def run(args, kube: Kube, namespace: str, say=print) -> int:
    try:
        if args.rollout_command == "start":
            created = kube.create_rollout(namespace, rollout_body(args))
            say(f"modelrollout {created['metadata']['name']} created in {namespace}")
            return 0
        if args.rollout_command == "status":
            if args.name:
                say(detail(kube.get_rollout(namespace, args.name)))
            else:
                items = kube.list_rollouts(None if args.all_namespaces else namespace)
                if not items:
                    say("no ModelRollouts found")
                else:
                    say(table(*summary_rows(items, args.all_namespaces)))
            return 0
        say(steer(kube, namespace, args.name, args.rollout_command))
        return 0
    except ApiException as exc:
        say(f"error: {exc.status} {api_reason(exc)}")
        return 1
