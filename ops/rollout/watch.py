"""The post-promotion watch (Argo's background analysis, on lab results), Deployment engine; the
state logic is free of I/O, `Watch` moves the objects.

With spec.shadow.watch set, a shadowed candidate's promotion keeps the previous version running as
the shadow, and the paired lab gate keeps judging the promoted version against it:
- before the promotion patch, the shadow Deployment is made from the stable Deployment while it
  still runs the previous version, its pod template kept verbatim on it (shadow.PREVIOUS_TEMPLATE),
  so a restarted operator restores that one, never a copy of the promoted template;
- after the patch, the mirror setting makes the stable's servers (now the promoted version) copy
  requests to it; the recorder pairs them the other way round, which lab.look turns back;
- each interval: Fail rolls back (the kept template patched back into the stable Deployment, then
  the shadow removed; phase RolledBack naming the figures); Pass, the end of the watch, or a new
  desired version ends it (the shadow and the mirror setting removed; the phase stays Promoted).
status.watchUntil is set while the watch runs; status.watchResult says how it ended.
"""
from __future__ import annotations

import datetime as dt

from ops.rollout import lab, state
from ops.rollout.shadow import Shadow, ShadowLost
from ops.rollout.status import RolloutStatus

PASS, FAIL, ENDED = "Pass", "Fail", "Ended"  # status.watchResult


def active(status: RolloutStatus) -> bool:
    return status.phase == "Promoted" and bool(status.watch_until)


def rolled_back(status: RolloutStatus) -> bool:
    """A rollback of the watch: the stable Deployment must get the previous template back."""
    return status.phase == "RolledBack" and status.watch_result == FAIL


def begin(status: RolloutStatus, spec, moment: dt.datetime) -> RolloutStatus:
    """`status` just promoted, with the watch started when the spec asks for one."""
    if not (spec.shadow and spec.shadow.watch_s) or status.phase != "Promoted":
        return status
    until = state.stamp(moment + dt.timedelta(seconds=spec.shadow.watch_s))
    return status.but(
        watch_until=until, watch_result=None,
        next_check_at=state.stamp(moment + dt.timedelta(seconds=spec.interval_s)),
        message=f"{status.message}; watching it against version {status.stable_version} "
                f"(the lab gate on the shadow's pairs) until {until}")


def end(status: RolloutStatus, moment: dt.datetime, why: str) -> RolloutStatus:
    """The watch ended with the promoted version serving on: the shadow goes."""
    return state.transition(status, phase="Promoted", event="WatchEnded", moment=moment,
                            message=f"promoted; the watch ended: {why}", watch_until=None,
                            watch_result=ENDED, next_check_at=None, traffic_applied=False)


def decide(status: RolloutStatus, spec, figures: dict, moment: dt.datetime) -> tuple[str, RolloutStatus]:
    """(RollBack | Pass | Ended | Hold, the status after it) after one look at the lab gate."""
    said, seen = lab.describe(figures), dict(figures, time=state.stamp(moment))
    if figures["verdict"] == lab.FAIL:
        after = state.rollback(status, moment, (
            f"rolled back after promotion (watch): {said}; version {status.stable_version} "
            f"serves again")).but(watch_until=None, watch_result=FAIL, lab_gate=seen)
        return "RollBack", after
    if figures["verdict"] == lab.PASS:
        after = state.transition(status, phase="Promoted", event="Watched", moment=moment,
                                 message=f"promoted; the watch passed: {said}", watch_until=None,
                                 watch_result=PASS, next_check_at=None, traffic_applied=False)
        return PASS, after.but(lab_gate=seen)
    until = state.parse_stamp(status.watch_until)
    if until is not None and moment >= until:
        return ENDED, end(status, moment, f"{spec.shadow.watch} ran out without a lab verdict; "
                                          f"{said}").but(lab_gate=seen)
    return "Hold", status.but(lab_gate=seen, next_check_at=state.stamp(
        moment + dt.timedelta(seconds=spec.interval_s)))


def look(spec, status: RolloutStatus) -> dict:
    """The lab gate on (the promoted version serving, the previous one as the shadow)."""
    return lab.look(spec.lab_gate, spec.model_name, status.stable_version,
                    status.candidate_version, spec.endpoints.timeout_s, candidate_serves=True)


class Watch:
    """The watch's objects on one target: the shadow of the previous version (shadow.Shadow)."""

    def __init__(self, shadow: Shadow, router):
        self.shadow, self.router = shadow, router

    def promote(self, status: RolloutStatus, owner: dict) -> tuple[bool, list[str]]:
        """(promoted, what was created): the previous version's shadow, made while the stable
        still runs it (ShadowLost after), then the promotion, then the mirror setting."""
        created = self.shadow.ensure_pods(status.replicas or 1, owner, self.router.stable_name,
                                          previous=status.stable_version)
        done = self.router.promote(status)
        return done, created + (self.shadow.ensure_mirror(owner) if done else [])

    def restore(self, status: RolloutStatus) -> bool:
        """The kept template back in the stable Deployment (idempotent; the shadow is removed
        only after this, so a restart finds it again); False while the pods follow. Raises
        ShadowLost when no template was kept and the stable does not run the previous version."""
        template = self.shadow.previous_template()
        if template is not None:
            self.router.restore(template)
        elif self.router.stable_version() != status.stable_version:
            raise ShadowLost(f"the previous pod template is gone and Deployment "
                                   f"{self.router.stable_name} does not run version "
                                   f"{status.stable_version}")
        return self.router.rollback(status)
