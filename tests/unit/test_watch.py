"""The post-promotion watch's state logic (ops/rollout/watch.py) and the lab gate read the other way
round (ops/rollout/lab.py); its objects on a real kube-apiserver are in
tests/integration/test_operator_shadow.py."""
from __future__ import annotations

import datetime as dt

import numpy as np

from ops.rollout import lab, state, watch
from ops.rollout.status import RolloutStatus
from tests.unit.test_shadow_step import T0, figures, pairs_doc, shadow_spec

PROMOTED = RolloutStatus(phase="Promoted", message="candidate promoted after 2 steps: ok",
                         stable_version=1, candidate_version=2, weight=100, history=[],
                         traffic_applied=True)


def watching(spec):
    return watch.begin(PROMOTED, spec, T0)


def test_the_watch_is_off_by_default_and_starts_with_the_promotion_when_asked():
    assert shadow_spec().shadow.watch_s == 0 and watch.begin(PROMOTED, shadow_spec(), T0) == PROMOTED
    assert watch.begin(PROMOTED, shadow_spec(steps=[10, 100]), T0) == PROMOTED  # no shadow step
    status = watching(shadow_spec(shadow={"watch": "2h"}))
    assert watch.active(status) and status.watch_until == state.stamp(T0 + dt.timedelta(hours=2))
    assert status.next_check_at == state.stamp(T0 + dt.timedelta(seconds=5))
    assert "watching it against version 1" in status.message
    rolled = state.rollback(PROMOTED, T0, "x")
    assert watch.begin(rolled, shadow_spec(shadow={"watch": "2h"}), T0) == rolled


def test_a_fail_in_the_watch_rolls_back_to_the_previous_version_naming_the_figures():
    spec = shadow_spec(shadow={"watch": "2h"})
    decision, after = watch.decide(watching(spec), spec, figures(lab.FAIL), T0)
    assert decision == "RollBack" and after.phase == "RolledBack" and watch.rolled_back(after)
    assert not watch.active(after) and not after.applied and after.watch_until is None
    assert "rolled back after promotion (watch): lab gate Fail on 40 pairs" in after.message
    assert "version 1 serves again" in after.message and after.lab_gate["verdict"] == lab.FAIL


def test_a_pass_or_the_end_of_the_watch_keeps_the_promotion_and_removes_the_shadow():
    spec = shadow_spec(shadow={"watch": "2h"})
    decision, after = watch.decide(watching(spec), spec, figures(lab.PASS), T0)
    assert (decision, after.phase, after.watch_result) == ("Pass", "Promoted", watch.PASS)
    assert not watch.active(after) and not after.applied  # the shadow goes on the next apply
    held, status = watch.decide(watching(spec), spec, figures(lab.HOLD, pairs=3), T0 + dt.timedelta(hours=1))
    assert held == "Hold" and watch.active(status) and status.lab_gate["pairs"] == 3
    assert status.history == []  # a hold is no event
    ended, status = watch.decide(watching(spec), spec, figures(lab.HOLD, pairs=3), T0 + dt.timedelta(hours=2))
    assert (ended, status.phase, status.watch_result) == ("Ended", "Promoted", watch.ENDED)
    assert "2h ran out without a lab verdict" in status.message and not status.applied


def test_the_pairs_read_the_other_way_round_judge_the_promoted_version():
    rng = np.random.default_rng(1)
    truth = np.expm1(rng.uniform(5, 9, 200))
    previous, promoted = truth * np.exp(rng.normal(0, 0.1, 200)), truth * 2.5
    # the recorder pairs the served (promoted) answers as "stable", the shadow's as "candidate"
    served_first = pairs_doc(promoted, previous, truth)
    judged = lab.judge(shadow_spec().lab_gate, lab.turned(served_first))
    assert judged["verdict"] == lab.FAIL and judged["lower"] > 0.02
    assert judged["candidateFalseRejects"] > 0 and judged["stableFalseRejects"] == \
        served_first["decisions"]["1000"]["candidate"]["falseRejects"]
    assert lab.judge(shadow_spec().lab_gate, served_first)["verdict"] != lab.FAIL  # unturned: wrong way
