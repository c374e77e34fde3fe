"""`python -m ops rollout ...`: start, watch and steer ModelRollouts from a terminal; the calls
themselves are ops/rollout/client.py's, which the web console uses too."""
from __future__ import annotations

from don_core.contract import SHADOW_STEP
from ops.rollout import GROUP, KIND, VERSION
from ops.rollout.client import SUMMARY_COLUMNS, RolloutClient, RolloutError, summary
from ops.rollout.spec import SpecError, parse_spec


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in [headers] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _step(text: str) -> int | str:
    text = text.strip()
    if text == SHADOW_STEP:
        return text
    if text.isdigit():
        return int(text)
    raise RolloutError(f"--steps: {text!r} is neither a percent nor {SHADOW_STEP!r}")


def rollout_body(args) -> dict:
    """The ModelRollout to create; RolloutError, one line, when the operator would refuse it."""
    spec: dict = {"target": args.target, "mode": args.mode, "candidate": {}}
    if args.version:
        spec["candidate"]["version"] = args.version
    if args.storage_uri:
        spec["candidate"]["storageUri"] = args.storage_uri
    if args.steps:
        spec["steps"] = [_step(s) for s in args.steps.split(",")]
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
    if args.recorder_url:
        spec["labGate"] = {"recorderUrl": args.recorder_url}
    if args.shadow_watch:
        spec["shadow"] = {"watch": args.shadow_watch}
    try:
        parse_spec(spec)
    except SpecError as exc:
        raise RolloutError(str(exc)) from None
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": args.name or f"{args.target}-v{args.version or 'x'}"}, "spec": spec}


def summary_rows(items: list[dict], all_namespaces: bool) -> tuple[list[list], list[str]]:
    headers = (["NAMESPACE"] if all_namespaces else []) + [c.upper() for c in SUMMARY_COLUMNS]
    rows = [([item["metadata"]["namespace"]] if all_namespaces else []) + list(summary(item).values())
            for item in items]
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


def run(args, client: RolloutClient, say=print) -> int:
    try:
        if args.rollout_command == "start":
            body = rollout_body(args)  # refused here, one line, before any call
            created = client.create(body)
            say(f"modelrollout {created['metadata']['name']} created in {client.namespace}")
        elif args.rollout_command == "status" and args.name:
            say(detail(client.get(args.name)))
        elif args.rollout_command == "status":
            items = client.list(args.all_namespaces)
            say(table(*summary_rows(items, args.all_namespaces)) if items else "no ModelRollouts found")
        else:
            say(client.steer(args.name, args.rollout_command))
        return 0
    except RolloutError as exc:
        say(f"error: {exc}")
        return 1
