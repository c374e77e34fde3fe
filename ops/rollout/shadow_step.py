"""The shadow step of the state machine, free of I/O: a status in, one decision and the status after it out.

While status.stepLabel is "shadow" (status.step 0, weight 0) the candidate answers mirrored copies
only. Each analysis looks at the lab gate (ops/rollout/lab.py) and at the checks that apply to a
shadow (served correctly, the reference set; the traffic figures belong to the canary steps):
- the lab gate Fails: roll back at once, naming the figures;
- the lab gate Passes and the other checks pass: leave the shadow for the first canary step (the
  canary steps' own Advance, so state.decide builds it);
- another check Fails: as on a canary step (failureLimit tolerated, then roll back);
- otherwise hold, until spec.shadow.deadline. At the deadline a gate still short of minPairs pairs
  does what spec.shadow.onNoLabels says (Proceed: on the other checks alone; RollBack); a gate
  with enough pairs but undecided rolls back (not shown non-inferior).
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from don_core.contract import SHADOW_STEP
from ops.rollout import lab, state
from ops.rollout.analysis import FAIL, PASS
from ops.rollout.status import RolloutStatus


def active(status: RolloutStatus) -> bool:
    return status.step_label == SHADOW_STEP and status.phase in state.ACTIVE


def first_step(spec, moment: dt.datetime) -> dict:
    """The start fields (RolloutStatus attributes) of a rollout whose first step is the shadow."""
    deadline = state.stamp(moment + dt.timedelta(seconds=spec.shadow.deadline_s))
    return {"step": 0, "step_label": SHADOW_STEP, "weight": 0, "step_weight": 0,
            "shadow_deadline_at": deadline,
            "message": (f"shadowing {spec.shadow.percent}% of requests to the candidate (callers "
                        f"get none of its answers) until the lab gate decides, at most until {deadline}")}


def _look(after: RolloutStatus, figures: dict, moment: dt.datetime) -> RolloutStatus:
    """The lab figures in the status, in its message (so in the Event) and in this analysis's
    history entry."""
    said = lab.describe(figures)
    message = after.message if said in after.message else f"{after.message}; {said}"
    entry = dict(after.history[-1], lab=figures, message=message)
    return after.but(message=message, history=after.history[:-1] + [entry],
                     lab_gate=dict(figures, time=state.stamp(moment)))


def decide(status: RolloutStatus, spec, result: dict, figures: dict, moment: dt.datetime,
           share: Callable[[int], int]) -> tuple[str, RolloutStatus]:
    """(Advance | Hold | RollBack, the status after it); `result`: the judged checks with the lab
    gate's among them, `figures`: the lab gate's look (lab.look)."""
    said = lab.describe(figures)
    analysis = dict(result, time=state.stamp(moment), step=0, weight=0)
    others = {c["result"] for c in result["checks"] if c["name"] != lab.NAME}
    if figures["verdict"] == lab.FAIL:
        after = state.rollback(status, moment, f"rolled back in shadow: {said}")
        return "RollBack", _look(after.but(last_analysis=analysis), figures, moment)
    deadline = state.parse_stamp(status.shadow_deadline_at)
    late = deadline is not None and moment >= deadline
    if result["verdict"] in (PASS, FAIL):
        decision, after = state.decide(status, spec, result, moment, share)
        return decision, _look(after, figures, moment)
    if late:
        short = (figures.get("pairs") or 0) < spec.lab_gate.min_pairs
        if short and spec.shadow.on_no_labels == "Proceed" and others <= {PASS}:
            decision, after = state.decide(status, spec, dict(result, verdict=PASS), moment, share)
            after = after.but(message=f"shadow deadline {spec.shadow.deadline} reached, proceeding "
                                      f"without a lab verdict (onNoLabels: Proceed); {after.message}")
            return decision, _look(after, figures, moment)
        why = ("too few lab pairs (onNoLabels: RollBack)" if short and others <= {PASS} else
               "too few lab pairs" if short else "the lab gate is still undecided")
        after = state.rollback(status, moment, f"shadow deadline {spec.shadow.deadline} reached, "
                                               f"{why}: {result['summary']}; {said}")
        return "RollBack", _look(after.but(last_analysis=analysis, shadow_deadline_exceeded=True),
                                 figures, moment)
    after = state.transition(status, phase="Progressing", event="Held", moment=moment,
                             message=f"shadowing, holding: {result['summary']}",
                             next_check_at=state.stamp(moment + dt.timedelta(seconds=spec.interval_s)))
    return "Hold", _look(after.but(last_analysis=analysis), figures, moment)
