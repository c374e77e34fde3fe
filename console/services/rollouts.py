"""The Rollouts page: the ModelRollouts through ops.rollout.client (the calls of `python -m ops
rollout`), their timelines, the steering buttons, and the recorder's paired lab figures of the
stable version against the candidate in shadow."""
from __future__ import annotations

from console.services.common import ConsoleError, Settings, call, recorder_url
from don_core.contract import PAIRS_PATH
from ops.rollout import client


def rollout_client(settings: Settings) -> client.RolloutClient:
    """From the kubeconfig or the in-cluster account; ConsoleError if neither."""
    try:
        return client.RolloutClient.connect(settings.kubeconfig, settings.namespace)
    except Exception as exc:  # no kubeconfig, no in-cluster account, a broken file
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConsoleError("no Kubernetes API to read ModelRollouts from: give --kubeconfig, set "
                           f"$KUBECONFIG or run in a cluster ({detail})") from None


def list_rollouts(rollouts: client.RolloutClient) -> list[dict]:
    try:
        return rollouts.list()
    except client.RolloutError as exc:
        if exc.status is None:   # unreachable: the reason alone
            raise ConsoleError(str(exc)) from None
        raise ConsoleError(f"cannot list ModelRollouts in {rollouts.namespace}: {exc}") from None


def rollout_rows(items: list[dict]) -> list[dict]:
    """The table of `python -m ops rollout status`, as records."""
    return [client.summary(item) for item in items]


def timeline(item: dict) -> list[dict]:
    """One record per history entry and per figure: time, event, weight, figure name, value."""
    out = []
    for entry in (item.get("status") or {}).get("history") or []:
        base = {"time": entry.get("time"), "event": entry.get("event"), "step": entry.get("step"),
                "weight": entry.get("weight"), "verdict": entry.get("verdict")}
        out.append(dict(base, figure="weight %", value=entry.get("weight")))
        for name, value in (entry.get("figures") or {}).items():
            out.append(dict(base, figure=name, value=value))
    return [r for r in out if r["value"] is not None and r["time"]]


def rollout_versions(item: dict) -> tuple[str, int, int] | None:
    """(model, stable, candidate) from a ModelRollout's status; None until the operator has found
    both versions."""
    status = item.get("status") or {}
    stable, candidate = status.get("stableVersion"), status.get("candidateVersion")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (stable, candidate)) or stable == candidate:
        return None
    return client.rollout_model(item), stable, candidate


def pairs(settings: Settings, model: str, stable: int, candidate: int) -> dict:
    """The recorder's paired figures (GET /v1/pairs): stable against the candidate's shadow answers."""
    return call("GET", recorder_url(settings, PAIRS_PATH), settings,
                params={"model": model, "stable": stable, "candidate": candidate}).json()


def pairs_rows(doc: dict) -> list[dict]:
    """One row per version of a pairs document: its error and its decisions on the same lots."""
    rows = []
    for side in ("stable", "candidate"):
        row = {"version": f"v{doc[side]} ({side})", "pairs": doc["pairs"], "MAE log1p": doc["maeLog1p"][side]}
        for limit, d in doc["decisions"].items():
            row[f"false accepts @{limit}"] = d[side]["falseAccepts"]
            row[f"false rejects @{limit}"] = d[side]["falseRejects"]
        rows.append(row)
    return rows


def pairs_summary(doc: dict) -> str:
    """The paired difference in one sentence."""
    diff = doc["difference"]
    if diff["mean"] is None:
        return (f"no lab-matched pair yet: the lab has measured none of the lots both v{doc['stable']} and "
                f"v{doc['candidate']} (in shadow) answered")
    interval = (f"95 % CI [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]" if diff["ci95"]
                else "no interval from one pair")
    return (f"{doc['pairs']} lab-matched pair(s): the candidate's |log1p error| minus the stable's, "
            f"mean {diff['mean']:+.4f}, {interval} (positive: the candidate is worse)")


def lab_gate_summary(status: dict) -> str | None:
    """The operator's last look through the lab gate (status.labGate) in one sentence; None before
    its first look (no shadow step)."""
    gate = status.get("labGate") or {}
    if not gate.get("verdict"):
        return None
    return (f"Lab gate (the operator's last look): **{gate['verdict']}** on {gate.get('pairs', 0)} "
            f"pair(s), margin {gate.get('margin')}: {gate.get('reason') or ''}")


def steer(settings: Settings, rollouts: client.RolloutClient, name: str, action: str) -> str:
    """A rollout button: exactly `python -m ops rollout ACTION NAME`."""
    if not settings.control:
        raise ConsoleError("rollout control is off (start the console with --control)")
    try:
        return rollouts.steer(name, action)
    except client.RolloutError as exc:
        raise ConsoleError(f"{action} {name}: {exc}") from None
