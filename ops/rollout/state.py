"""The rollout state machine, free of I/O: a status in, the status after it and one decision out.

Everything the operator needs to resume lives in the status: the step, the weight, when the next
analysis is due (a timestamp, not an in-memory timer), the consecutive failed checks and whether
the traffic for the current state has been applied. Status is written before traffic is moved,
and moving traffic is idempotent, so a restart at any point neither repeats nor skips a step.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from ops.rollout.analysis import FAIL, INCONCLUSIVE, PASS
from ops.rollout.status import RolloutStatus

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


def transition(status: RolloutStatus, *, phase: str, event: str, message: str,
               moment: dt.datetime, **fields) -> RolloutStatus:
    """`status` after a state change (`fields`: RolloutStatus attributes), with a history entry
    and fresh conditions."""
    when = stamp(moment)
    entry = {"time": when, "event": event, "phase": phase,
             "step": fields.get("step", status.step),
             "weight": fields.get("weight", status.weight), "message": message}
    history = (list(status.history or []) + [entry])[-HISTORY_LIMIT:]
    return status.but(**fields, phase=phase, message=message, history=history,
                      conditions=_conditions(phase, event, message, when))


def _same(weight: int) -> int:
    return weight


def sending(step_weight: int, share: int) -> str:
    """What the status says a step sends: the share really applied, and the step when it differs
    (the replica split can only give whole pods)."""
    if share == step_weight:
        return f"sending {share}% of traffic to the candidate"
    return f"sending {share}% of traffic to the candidate (step {step_weight}%: the nearest share the replicas allow)"


def start(spec, moment: dt.datetime, found: dict, previous: RolloutStatus | None = None,
          share: Callable[[int], int] = _same, first_step: dict | None = None) -> RolloutStatus:
    """A fresh rollout from what the router found (`Router.read_state`: the stable and candidate
    versions, their storage URIs where an InferenceService serves them, ...) over `previous` (a
    Desired object's last status: its history goes on).
    `share(step)`: the percent the engine really sends for a step (status.weight); the step's own
    percent is status.stepWeight, which the routers apply. `first_step`: other fields of the first
    step (shadow_step.first_step: step 0, the candidate as a shadow)."""
    first = spec.steps[0]
    step = dict(message=sending(first, share(first)), step_weight=first, step=1,
                weight=share(first), step_label=step_label(1, spec.steps), shadow_deadline_at=None)
    step.update(first_step or {})
    return transition(previous or RolloutStatus(), phase="Progressing", event="Started",
                      moment=moment, last_analysis=None, inconclusive_since=None,
                      reference_stable=None, deadline_exceeded=None, lab_gate=None,
                      shadow_deadline_exceeded=None, watch_until=None, watch_result=None,
                      failed_checks=0,
                      **found, step_started_at=stamp(moment),
                      next_check_at=stamp(moment + dt.timedelta(seconds=spec.interval_s)),
                      traffic_applied=False, **step)


def fail(status: RolloutStatus, moment: dt.datetime, message: str) -> RolloutStatus:
    return transition(status, phase="Failed", event="Failed", moment=moment, message=message,
                      weight=status.weight or 0, traffic_applied=not status.weight)


def promote(status: RolloutStatus, moment: dt.datetime, message: str) -> RolloutStatus:
    return transition(status, phase="Promoted", event="Promoted", moment=moment, message=message,
                      weight=100, step_weight=100, failed_checks=0, next_check_at=None,
                      traffic_applied=False)


def rollback(status: RolloutStatus, moment: dt.datetime, message: str) -> RolloutStatus:
    return transition(status, phase="RolledBack", event="RolledBack", moment=moment,
                      message=message, weight=0, step_weight=0, next_check_at=None,
                      traffic_applied=False)


def delivered(status: RolloutStatus, moment: dt.datetime, version: int,
              message: str) -> RolloutStatus:
    return transition(status, phase="Delivered", event="Delivered", moment=moment, message=message,
                      weight=0, step_weight=0, step=None, step_label=None, next_check_at=None,
                      live_version=version, traffic_applied=True)


def waiting(status: RolloutStatus, moment: dt.datetime, message: str) -> RolloutStatus:
    return transition(status, phase=WAITING, event=WAITING, moment=moment, message=message,
                      weight=0, step_weight=0, step=None, step_label=None, next_check_at=None,
                      traffic_applied=True)


def pause(status: RolloutStatus, moment: dt.datetime) -> RolloutStatus:
    return transition(status, phase="Paused", event="Paused", moment=moment,
                      message=f"paused at {status.weight}% on the candidate", next_check_at=None)


def resume(status: RolloutStatus, spec, moment: dt.datetime) -> RolloutStatus:
    return transition(status, phase="Progressing", event="Resumed", moment=moment,
                      message=f"resumed at {status.weight}% on the candidate",
                      next_check_at=stamp(moment + dt.timedelta(seconds=spec.interval_s)))


def due(status: RolloutStatus, moment: dt.datetime) -> bool:
    next_check = parse_stamp(status.next_check_at)
    return next_check is None or moment >= next_check


def decide(status: RolloutStatus, spec, result: dict, moment: dt.datetime,
           share: Callable[[int], int] = _same) -> tuple[str, RolloutStatus]:
    """(decision, the status after it) after an analysis: Advance, Promote, Hold or RollBack."""
    verdict, summary = result["verdict"], result["summary"]
    step = 1 if status.step is None else int(status.step)  # 0: the shadow step
    next_check = stamp(moment + dt.timedelta(seconds=spec.interval_s))
    analysis = dict(result, time=stamp(moment), step=step, weight=status.weight)
    decision, after = _decide(status, spec, result, moment, verdict, summary, step, next_check,
                              analysis, share)
    # Each analysis's figures stay in its history entry (lastAnalysis keeps only the latest): the
    # console draws them as a timeline.
    figures = {c["name"]: c["value"] for c in result["checks"]
               if isinstance(c.get("value"), (int, float)) and not isinstance(c["value"], bool)}
    for key in ("canaryShare", "windowRequests"):  # the share the canary really answered, of n
        if result.get(key) is not None:
            figures[key] = result[key]
    # The entry's weight is the one the decision moves to; the figures are the window of the
    # step that was analysed, at this weight.
    history = list(after.history)
    history[-1] = dict(history[-1], verdict=verdict, figures=figures, analysedWeight=status.weight)
    return decision, after.but(history=history, last_analysis=analysis)


def _decide(status, spec, result, moment, verdict, summary, step, next_check, analysis, share):
    if verdict == PASS:
        if step >= len(spec.steps):
            return "Promote", promote(status, moment, f"candidate promoted after {step} steps: {summary}")
        weight = spec.steps[step]  # steps are 1-based in status, so this is the next one
        return "Advance", transition(
            status, phase="Progressing", event="Advanced", moment=moment,
            message=f"analysis passed; {sending(weight, share(weight))}", step=step + 1,
            weight=share(weight), step_weight=weight, step_label=step_label(step + 1, spec.steps),
            failed_checks=0, step_started_at=stamp(moment), next_check_at=next_check,
            traffic_applied=False, inconclusive_since=None)
    if verdict == FAIL:
        failed = int(status.failed_checks or 0) + 1
        limit = spec.analysis.failure_limit
        if failed > limit:
            return "RollBack", rollback(status, moment, f"rolled back after {failed} failed "
                                                        f"analyses: {summary}").but(failed_checks=failed)
        return "Hold", transition(
            status, phase="Progressing", event="Held", moment=moment,
            message=f"analysis failed ({failed}/{limit} tolerated): {summary}",
            failed_checks=failed, next_check_at=next_check, inconclusive_since=None)
    assert verdict == INCONCLUSIVE
    # How long the rollout has made no progress: since the last decisive analysis of this step,
    # else since the step started.
    since_text = status.inconclusive_since or _last_decisive(status, step) \
        or status.step_started_at or stamp(moment)
    since = parse_stamp(since_text) or moment
    stuck = (moment - since).total_seconds()
    if stuck >= spec.progress_deadline_s:
        return "RollBack", rollback(status, moment, f"progress deadline {spec.progress_deadline} "
                                                    f"exceeded (inconclusive for {stuck:.0f}s): "
                                                    f"{summary}").but(deadline_exceeded=True)
    return "Hold", transition(
        status, phase="Progressing", event="Held", moment=moment,
        message=f"analysis inconclusive, holding at {status.weight}%: {summary}",
        next_check_at=next_check, inconclusive_since=since_text)


def _last_decisive(status: RolloutStatus, step: int) -> str | None:
    last = status.last_analysis or {}
    if last.get("step") == step and last.get("verdict") in (PASS, FAIL):
        return last.get("time")
    return None
