"""The rollout state machine, free of I/O: status in, status changes and one decision out.

Everything the operator needs to resume lives in the status: the step, the weight, when the next
analysis is due (a timestamp, not an in-memory timer), the consecutive failed checks and whether
the traffic for the current state has been applied. Status is written before traffic is moved,
and moving traffic is idempotent, so a restart at any point neither repeats nor skips a step.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from ops.rollout.analysis import FAIL, INCONCLUSIVE, PASS

ACTIVE = ("Pending", "Progressing", "Paused")
# Delivered: a Desired-delivery object whose desired version serves 100 % with no rollout needed,
# verified (in the store; every wanted replica ready and answering as that version).
TERMINAL = ("Promoted", "RolledBack", "Failed", "Delivered")
# Waiting: a Desired-delivery object whose desired version cannot be verified yet or is not in the
# store yet (the message says which); no rollout runs and no deadline counts.
WAITING = "Waiting"
HISTORY_LIMIT = 40


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    return None


def step_label(step: int, steps) -> str:
    return f"{step}/{len(steps)}"


def _conditions(phase: str, reason: str, message: str, moment: str) -> list[dict]:
    running = phase in ACTIVE or phase == WAITING
    succeeded = {"Promoted": "True", "Delivered": "True", "RolledBack": "False",
                 "Failed": "False"}.get(phase, "Unknown")
    return [
        {"type": "Progressing", "status": "True" if running else "False", "reason": reason,
         "message": message, "lastTransitionTime": moment},
        {"type": "Succeeded", "status": succeeded, "reason": reason, "message": message,
         "lastTransitionTime": moment},
    ]


def transition(status: dict, *, phase: str, event: str, message: str, moment: dt.datetime,
               **fields) -> dict:
    """Status changes for a state change, with a history entry and fresh conditions."""
    when = stamp(moment)
    entry = {"time": when, "event": event, "phase": phase,
             "step": fields.get("step", status.get("step")),
             "weight": fields.get("weight", status.get("weight")), "message": message}
    history = (list(status.get("history") or []) + [entry])[-HISTORY_LIMIT:]
    return dict(fields, phase=phase, message=message, history=history,
                conditions=_conditions(phase, event, message, when))


def _same(weight: int) -> int:
    return weight


def sending(step_weight: int, share: int) -> str:
    """What the status says a step sends: the share really applied, and the step when it differs
    (the replica split can only give whole pods)."""
    if share == step_weight:
        return f"sending {share}% of traffic to the candidate"
    return f"sending {share}% of traffic to the candidate (step {step_weight}%: the nearest share the replicas allow)"


def start(spec, moment: dt.datetime, found: dict, previous: dict | None = None,
          share: Callable[[int], int] = _same, first_step: dict | None = None) -> dict:
    """A fresh rollout from what the router found (`Router.read_state`: the stable and candidate
    versions, their storage URIs where an InferenceService serves them, ...); `previous` (a
    Desired object's last status) only lends its history.
    `share(step)`: the percent the engine really sends for a step (status.weight); the step's own
    percent is status.stepWeight, which the routers apply. `first_step`: other fields of the first
    step (shadow_step.first_step: step 0, the candidate as a shadow)."""
    first = spec.steps[0]
    step = dict(message=sending(first, share(first)), stepWeight=first, step=1,
                weight=share(first), stepLabel=step_label(1, spec.steps))
    step.update(first_step or {})
    return transition({"history": (previous or {}).get("history")}, phase="Progressing",
                      event="Started", moment=moment, lastAnalysis=None, inconclusiveSince=None,
                      goldenStable=None, referenceStable=None, labGate=None, failedChecks=0,
                      **found, stepStartedAt=stamp(moment),
                      nextCheckAt=stamp(moment + dt.timedelta(seconds=spec.interval_s)),
                      trafficApplied=False, **step)


def fail(status: dict, moment: dt.datetime, message: str) -> dict:
    return transition(status, phase="Failed", event="Failed", moment=moment, message=message,
                      weight=0 if status.get("weight") is None else status["weight"],
                      trafficApplied=not status.get("weight"))


def promote(status: dict, moment: dt.datetime, message: str) -> dict:
    return transition(status, phase="Promoted", event="Promoted", moment=moment, message=message,
                      weight=100, stepWeight=100, failedChecks=0, nextCheckAt=None,
                      trafficApplied=False)


def rollback(status: dict, moment: dt.datetime, message: str) -> dict:
    return transition(status, phase="RolledBack", event="RolledBack", moment=moment,
                      message=message, weight=0, stepWeight=0, nextCheckAt=None,
                      trafficApplied=False)


def delivered(status: dict, moment: dt.datetime, version, message: str) -> dict:
    return transition(status, phase="Delivered", event="Delivered", moment=moment, message=message,
                      weight=0, stepWeight=0, step=None, stepLabel=None, nextCheckAt=None,
                      liveVersion=version, trafficApplied=True)


def waiting(status: dict, moment: dt.datetime, message: str) -> dict:
    return transition(status, phase=WAITING, event=WAITING, moment=moment, message=message,
                      weight=0, stepWeight=0, step=None, stepLabel=None, nextCheckAt=None,
                      trafficApplied=True)


def pause(status: dict, moment: dt.datetime) -> dict:
    return transition(status, phase="Paused", event="Paused", moment=moment,
                      message=f"paused at {status.get('weight')}% on the candidate",
                      nextCheckAt=None)


def resume(status: dict, spec, moment: dt.datetime) -> dict:
    return transition(status, phase="Progressing", event="Resumed", moment=moment,
                      message=f"resumed at {status.get('weight')}% on the candidate",
                      nextCheckAt=stamp(moment + dt.timedelta(seconds=spec.interval_s)))


def due(status: dict, moment: dt.datetime) -> bool:
    next_check = parse_stamp(status.get("nextCheckAt"))
    return next_check is None or moment >= next_check


def decide(status: dict, spec, result: dict, moment: dt.datetime,
           share: Callable[[int], int] = _same) -> tuple[str, dict]:
    """(decision, status changes) after an analysis: Advance, Promote, Hold or RollBack."""
    verdict, summary = result["verdict"], result["summary"]
    step = 1 if status.get("step") is None else int(status["step"])  # 0: the shadow step
    next_check = stamp(moment + dt.timedelta(seconds=spec.interval_s))
    analysis = dict(result, time=stamp(moment), step=step, weight=status.get("weight"))
    decision, changes = _decide(status, spec, result, moment, verdict, summary, step, next_check,
                                analysis, share)
    # Each analysis's figures stay in its history entry (lastAnalysis keeps only the latest): the
    # console draws them as a timeline.
    entry = changes["history"][-1]
    figures = {c["name"]: c["value"] for c in result["checks"]
               if isinstance(c.get("value"), (int, float)) and not isinstance(c["value"], bool)}
    for key in ("canaryShare", "windowRequests"):  # the share the canary really answered, of n
        if result.get(key) is not None:
            figures[key] = result[key]
    # The entry's weight is the one the decision moves to; the figures are the window of the
    # step that was analysed, at this weight.
    changes["history"][-1] = dict(entry, verdict=verdict, figures=figures,
                                  analysedWeight=status.get("weight"))
    return decision, changes


def _decide(status, spec, result, moment, verdict, summary, step, next_check, analysis, share):
    if verdict == PASS:
        if step >= len(spec.steps):
            changes = promote(status, moment, f"candidate promoted after {step} steps: {summary}")
            return "Promote", dict(changes, lastAnalysis=analysis)
        weight = spec.steps[step]  # steps are 1-based in status, so this is the next one
        changes = transition(status, phase="Progressing", event="Advanced", moment=moment,
                             message=f"analysis passed; {sending(weight, share(weight))}",
                             step=step + 1, weight=share(weight), stepWeight=weight,
                             stepLabel=step_label(step + 1, spec.steps), failedChecks=0,
                             stepStartedAt=stamp(moment), nextCheckAt=next_check,
                             trafficApplied=False, inconclusiveSince=None)
        return "Advance", dict(changes, lastAnalysis=analysis)
    if verdict == FAIL:
        failed = int(status.get("failedChecks") or 0) + 1
        limit = spec.analysis.failure_limit
        if failed > limit:
            changes = rollback(status, moment, f"rolled back after {failed} failed "
                                               f"analyses: {summary}")
            return "RollBack", dict(changes, failedChecks=failed, lastAnalysis=analysis)
        changes = transition(status, phase="Progressing", event="Held", moment=moment,
                             message=f"analysis failed ({failed}/{limit} tolerated): {summary}",
                             failedChecks=failed, nextCheckAt=next_check, inconclusiveSince=None)
        return "Hold", dict(changes, lastAnalysis=analysis)
    assert verdict == INCONCLUSIVE
    # How long the rollout has made no progress: since the last decisive analysis of this step,
    # else since the step started.
    since_text = status.get("inconclusiveSince") or _last_decisive(status, step) \
        or status.get("stepStartedAt") or stamp(moment)
    since = parse_stamp(since_text) or moment
    stuck = (moment - since).total_seconds()
    if stuck >= spec.progress_deadline_s:
        changes = rollback(status, moment, f"progress deadline {spec.progress_deadline} "
                                           f"exceeded (inconclusive for {stuck:.0f}s): {summary}")
        return "RollBack", dict(changes, lastAnalysis=analysis, deadlineExceeded=True)
    changes = transition(status, phase="Progressing", event="Held", moment=moment,
                         message=f"analysis inconclusive, holding at {status.get('weight')}%: "
                                 f"{summary}", nextCheckAt=next_check, inconclusiveSince=since_text)
    return "Hold", dict(changes, lastAnalysis=analysis)


def _last_decisive(status: dict, step: int) -> str | None:
    last = status.get("lastAnalysis") or {}
    if last.get("step") == step and last.get("verdict") in (PASS, FAIL):
        return last.get("time")
    return None
