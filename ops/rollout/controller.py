"""One reconcile pass over a ModelRollout (`Engine.tick`), the same for every serving engine.

Each tick reads the object fresh from the API server (never a cached body, which may predate our
own last status write), finishes any traffic change the status asks for, and, when the status
says an analysis is due, analyses and decides. Where the parts live: moving traffic per engine
(routers.py), reaching the model servers (endpoints.py), the metrics source (sources.py), the
golden and reference sets (locate.py, golden.py, reference.py), the state machine (state.py).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Callable

from ops.rollout import analysis as judge_mod
from ops.rollout import endpoints
from ops.rollout import golden as golden_mod
from ops.rollout import live_accuracy, locate, routers, shadow_step, shadows, sources, state, watch
from ops.rollout import reference as reference_mod
from ops.rollout import shadow as shadow_mod
from ops.rollout.kube import ApiException, Kube
from ops.rollout.spec import RolloutSpec, SpecError, parse_spec
from ops.rollout.status import RolloutStatus

log = logging.getLogger("ops.rollout")
Emit = Callable[[dict, str, str, str], None]  # (object, Normal|Warning, reason, message)


def current(obj: dict) -> RolloutStatus:
    """The status of `obj` as last read or written."""
    return RolloutStatus.from_wire(obj.get("status"))


def owner_reference(obj: dict) -> dict:
    """Makes the serving objects the operator creates go away with their ModelRollout (and so
    with the Helm release that declares it)."""
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion") or "rollouts.don-predictor.io/v1alpha1",
            "kind": obj.get("kind") or "ModelRollout", "name": meta["name"], "uid": meta["uid"],
            "controller": True}


def _stable_reference(result: dict, remembered: dict | None) -> tuple[dict, dict | None]:
    """(reference result, the stable's figures to remember). The stable version's answers on a
    fixed row set do not change during a rollout, so once measured they stand in when the stable
    cannot answer any more (the deployment engine's last step runs no stable pod)."""
    stable = result.get("stable") or {}
    if "mae" in stable:
        return result, dict(stable)
    canary = result.get("canary") or {}
    if remembered and "mae" in canary:
        result = dict(result, stable=dict(remembered, note="measured at an earlier step"))
        result["relativeIncrease"] = golden_mod.relative_increase(canary["mae"], remembered["mae"])
        if canary.get("falseAcceptRate") is not None and remembered.get("falseAcceptRate") is not None:
            result["falseAcceptIncrease"] = canary["falseAcceptRate"] - remembered["falseAcceptRate"]
    return result, remembered


def _canary_share(figures: dict) -> dict | None:
    """The percent of the window's requests the canary answered, and of how many (None without
    requests): the share's precision depends on that count."""
    try:
        canary, stable = int(figures["canary"]["requests"]), int(figures["stable"]["requests"])
    except (KeyError, TypeError, ValueError):
        return None
    if not canary + stable:
        return None
    return {"canaryShare": round(100 * canary / (canary + stable), 1),
            "windowRequests": canary + stable}


class Engine:
    def __init__(self, kube: Kube, emit: Emit, clock: Callable[[], dt.datetime] = state.now_utc):
        self.kube, self.emit, self.clock = kube, emit, clock

    # ---- the pass -------------------------------------------------------------------------
    def tick(self, ns: str, name: str) -> str | None:
        """Reconcile once; returns the decision taken (for logs and tests), if any."""
        try:
            obj = self.kube.get_rollout(ns, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        status = RolloutStatus.from_wire(obj.get("status"))
        phase = status.phase
        try:
            spec = parse_spec(obj.get("spec") or {})
        except SpecError as exc:
            if phase not in state.TERMINAL:
                self._write(obj, state.fail(status, self.clock(), f"invalid spec: {exc}"))
                self.emit(obj, "Warning", "InvalidSpec", str(exc))
            return "Fail"
        if spec.desired:
            return self._deliver(obj, spec, status)
        if not phase:
            return self._start(obj, spec, status)
        if not status.applied:
            self._apply(obj, spec, status)
            status = current(obj)
        if watch.active(status):
            return self._watch(obj, spec, status)
        if phase in state.TERMINAL:
            return None
        return self._progress(obj, spec, status)

    # ---- Desired delivery (the chart's objects: models.<m>.version is the desired version) ----
    def _deliver(self, obj: dict, spec: RolloutSpec, status: RolloutStatus) -> str | None:
        """Flagger's model: a rollout starts when the desired version changes (status.desiredVersion
        is the last one acted on) and differs from the live one; a rolled-back version is not
        retried until the desired version changes; between rollouts the serving objects are left
        as they are."""
        phase, desired = status.phase, spec.candidate.version
        if phase in state.ACTIVE:
            if status.candidate_version not in (None, desired) and spec.action != "Promote":
                # The desired version changed mid-rollout: give up on the old candidate first.
                status = self._write(obj, state.rollback(status, self.clock(), (
                    f"superseded: the desired version is now {desired}; version "
                    f"{status.candidate_version} was not delivered")))
                self.emit(obj, "Warning", "RolledBack", status.message)
                self._apply(obj, spec, status)
                return "RollBack"
            if not status.applied:
                self._apply(obj, spec, status)
                status = current(obj)
            return self._progress(obj, spec, status)
        if not status.applied:
            if not self._apply(obj, spec, status):
                return None  # still moving traffic (e.g. waiting for the stable pods)
            status = current(obj)
        if watch.active(status):
            if status.candidate_version == desired:
                return self._watch(obj, spec, status)
            status = self._write(obj, watch.end(status, self.clock(),
                                                f"the desired version is now {desired}"))
            self.emit(obj, "Normal", "WatchEnded", status.message)
            if not self._apply(obj, spec, status):
                return None
            status = current(obj)
        try:
            live = self._ensure(obj, spec)
        except (ApiException, routers.TrafficError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot deliver version {desired} on {spec.mode} target {spec.target}: {reason}"
            if status.message != message:
                # No desiredVersion: once the objects can be found, delivery goes on.
                self._write(obj, state.fail(status, self.clock(), message).but(traffic_applied=True))
                self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        if phase and phase != state.WAITING and status.desired_version == desired:
            # This desired version was acted on already (delivered, promoted, rolled back or
            # failed): nothing is retried, and a version made live by a one-off rollout
            # (`python -m ops rollout start`) is left alone, until the desired version changes.
            if status.live_version != live:
                self._write(obj, status.but(live_version=live))
            return None
        if live == desired:
            return self._verify_delivery(obj, spec, status, desired)
        missing = locate.not_in_store(spec, status.stable_storage_uri, desired)
        if missing:  # no rollout (and no deadline) until the version is published
            return self._wait(obj, status, f"{missing}: the rollout starts once it is published",
                              live_version=live)
        return self._start(obj, spec, status, live=live)

    def _wait(self, obj: dict, status: RolloutStatus, message: str, **fields) -> str:
        """Phase Waiting with the reason; an Event only when the reason changes."""
        if status.phase != state.WAITING or status.message != message:
            self._write(obj, state.waiting(status, self.clock(), message).but(**fields))
            self.emit(obj, "Normal", state.WAITING, message)
        return "Wait"

    def _verify_delivery(self, obj: dict, spec: RolloutSpec, status: RolloutStatus,
                         desired: int) -> str:
        """Delivered only once verified: the version is in the store, the engine's wanted replicas
        are ready, and every ready server answers as that version; Waiting with the reason until
        then. Traffic is settled meanwhile (the stable serves everything, no canary pods)."""
        router = self.router(obj["metadata"]["namespace"], spec)
        uri = status.stable_storage_uri or status.candidate_storage_uri
        problem = locate.not_in_store(spec, uri, desired)
        # idempotent; scales down only what ready pods replace, so it may take a few ticks
        if not router.settle(status):
            problem = problem or "the canary track is not scaled down yet (waiting for the stable's pods)"
        problem = problem or endpoints.not_serving(self.kube, router, desired,
                                                   spec.endpoints.timeout_s)
        if problem:
            return self._wait(obj, status, f"version {desired} is not verified yet: {problem}",
                              live_version=desired)
        message = f"version {desired} serves all traffic (verified: ready servers answer as it)"
        self._write(obj, state.delivered(status, self.clock(), desired, message).but(
            desired_version=desired))
        self.emit(obj, "Normal", "Delivered", message)
        return "Delivered"

    def _ensure(self, obj: dict, spec: RolloutSpec):
        """The live version of the target; creates the serving object the operator owns when it
        does not exist yet (first install), serving the desired version, and keeps it in step
        with the chart (e.g. a new pod template for the same version)."""
        live, changed = self.router(obj["metadata"]["namespace"], spec).ensure(owner_reference(obj))
        if changed:
            self.emit(obj, "Normal", "ServingObjects", changed)
        return live

    def router(self, ns: str, spec: RolloutSpec) -> routers.Router:
        return routers.for_spec(self.kube, ns, spec)

    def _write(self, obj: dict, status: RolloutStatus) -> RolloutStatus:
        """Writes `status` (every field: what it leaves unset is removed) and returns it as the
        API server stored it."""
        meta = obj["metadata"]
        updated = self.kube.patch_rollout_status(meta["namespace"], meta["name"], status.but(
            observed_generation=meta.get("generation")).to_wire())
        obj["status"] = updated.get("status") or {}
        return current(obj)

    # ---- start ----------------------------------------------------------------------------
    def _start(self, obj: dict, spec: RolloutSpec, status: RolloutStatus, live=None) -> str | None:
        """A new rollout over `status` (a Desired object's last one lends its history)."""
        moment = self.clock()
        desired = {"desired_version": spec.candidate.version, "live_version": live} \
            if spec.desired else {}
        rival = self._rival(obj, spec)
        if rival:
            message = (f"ModelRollout {rival} is already rolling out {spec.target}; "
                       "two rollouts on one target are refused")
            if spec.desired:  # it starts once the other one has finished
                if status.message != message:
                    self._write(obj, status.but(message=message))
                    self.emit(obj, "Warning", "Refused", message)
                return None
            self._write(obj, state.fail(status, moment, message))
            self.emit(obj, "Warning", "Refused", message)
            return "Fail"
        router = self.router(obj["metadata"]["namespace"], spec)
        try:
            found = router.read_state()
        except (ApiException, routers.TrafficError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            return self._not_started(obj, spec, status, desired,
                                     f"cannot start on {spec.mode} target {spec.target}: {reason}")
        # The storage URIs where an InferenceService serves the versions, else the versions.
        candidate = found.get("candidate_storage_uri") or f"version {found['candidate_version']}"
        if found.get("candidate_storage_uri", found["candidate_version"]) == \
                found.get("stable_storage_uri", found["stable_version"]):
            return self._not_started(obj, spec, status, desired,
                                     f"candidate {candidate} is already the stable version")
        snapshot = sources.for_spec(self.kube, router).baseline(endpoints.base_urls(router))
        share = functools.partial(router.share, replicas=found.get("replicas"))
        first = shadow_step.first_step(spec, moment) if spec.shadow else None
        status = self._write(obj, state.start(spec, moment, found, status, share=share,
                                              first_step=first).but(**desired, snapshot=snapshot))
        said = status.message if spec.shadow else f"{status.weight}% to the candidate"
        self.emit(obj, "Normal", "Started", f"rolling out {candidate} on {spec.target} ({spec.mode}): "
                                            f"{said}, steps {['shadow'] * bool(spec.shadow) + list(spec.steps)}")
        self._apply(obj, spec, status)
        return "Start"

    def _not_started(self, obj: dict, spec: RolloutSpec, status: RolloutStatus, desired: dict,
                     message: str) -> str:
        """Failed before any traffic moved: the serving objects stay as they are."""
        self._write(obj, state.fail(status, self.clock(), message).but(
            **desired, candidate_version=spec.candidate.version, traffic_applied=True))
        self.emit(obj, "Warning", "Failed", message)
        return "Fail"

    def _rival(self, obj: dict, spec: RolloutSpec) -> str | None:
        meta = obj["metadata"]
        mine = (meta.get("creationTimestamp") or "", meta["name"])
        for other in self.kube.list_rollouts(meta["namespace"]):
            other_meta = other["metadata"]
            if other_meta["uid"] == meta["uid"] or (other.get("spec") or {}).get("target") != spec.target:
                continue
            phase = (other.get("status") or {}).get("phase")
            if phase in state.TERMINAL:
                continue
            theirs = (other_meta.get("creationTimestamp") or "", other_meta["name"])
            # The older one wins; a younger active rival is refused on its own first tick.
            if phase in state.ACTIVE or theirs < mine:
                return other_meta["name"]
        return None

    # ---- traffic --------------------------------------------------------------------------
    def _apply(self, obj: dict, spec: RolloutSpec, status: RolloutStatus) -> bool:
        """Make the serving objects match the status, then record that they do. False while a
        change has to wait (pods that must be ready before others go); the next tick goes on."""
        router, phase = self.router(obj["metadata"]["namespace"], spec), status.phase
        watching = watch.active(status) or watch.rolled_back(status)
        if spec.shadow and not watching:
            self._shadow(obj, spec, status)
        if watching:
            done = self._watch_objects(obj, spec, status, router)
        elif shadow_step.active(status):  # callers get the stable alone; copies go to the shadow
            done = router.settle(status)
        elif phase == "Promoted":  # after a watch the promotion is done: no second patch
            done = router.settle(status) if status.watch_result else router.promote(status)
        elif phase in ("Delivered", state.WAITING):  # the live version serves 100 %
            done = router.settle(status)
        elif phase in state.TERMINAL:  # rolled back or failed
            done = router.rollback(status)
        else:
            weight = status.weight if status.step_weight is None else status.step_weight
            done = router.set_weights(status, int(weight or 0))
        if not done:
            return False
        status = status.but(traffic_applied=True)
        if phase in state.ACTIVE:
            # The next analysis window starts once this step's split is in place (its pods
            # ready): what the canary answers in it is the share the step really gives.
            status = status.but(
                snapshot=sources.for_spec(self.kube, router).baseline(endpoints.base_urls(router)),
                next_check_at=state.stamp(self.clock() + dt.timedelta(seconds=spec.interval_s)))
        self._write(obj, status)
        return True

    def _shadow(self, obj: dict, spec: RolloutSpec, status: RolloutStatus) -> None:
        """The shadow and the mirror setting exist exactly while the status is in the shadow step
        (shadow.py) or the watch (watch.py, `_watch_objects`); an Event says what was created or
        removed."""
        shadow = shadows.of(self.kube, obj["metadata"]["namespace"], spec)
        if shadow_step.active(status):
            self._shadow_event(obj, status, shadow.ensure(status, owner_reference(obj)), "created")
        else:
            self._shadow_event(obj, status, shadow.remove(), "removed")

    def _shadow_event(self, obj: dict, status: RolloutStatus, changed: list, verb: str) -> None:
        version = status.candidate_version if shadow_step.active(status) else status.stable_version
        if changed:
            self.emit(obj, "Normal", "Shadow", f"shadow of version {version}: {verb} {', '.join(changed)}")

    def _watch_objects(self, obj: dict, spec: RolloutSpec, status: RolloutStatus, router) -> bool:
        """The watch's side of `_apply` (watch.Watch); a lost previous template ends the watch,
        or fails its rollback, saying so."""
        objects = watch.Watch(shadow_mod.Shadow(self.kube, router.ns, spec), router)
        try:
            if watch.rolled_back(status):
                done = objects.restore(status)
                if done:  # only now: the shadow keeps the template until it is back
                    self._shadow(obj, spec, status)
                return done
            done, created = objects.promote(status, owner_reference(obj))
            self._shadow_event(obj, status, created, "created")
            return done
        except shadow_mod.ShadowLost as exc:
            why = f"version {status.stable_version}: {exc}"
            status = self._write(obj, state.fail(status, self.clock(), f"cannot roll back to {why}")
                                 if watch.rolled_back(status) else
                                 watch.end(status, self.clock(), f"no shadow of {why}"))
            self.emit(obj, "Warning", "WatchEnded", status.message)
            self._shadow(obj, spec, status)
            if not status.applied:
                self._apply(obj, spec, status)
            return False  # the status this call began with is no longer the one to mark applied

    # ---- progress -------------------------------------------------------------------------
    def _progress(self, obj: dict, spec: RolloutSpec, status: RolloutStatus) -> str | None:
        moment = self.clock()
        if spec.action in ("Promote", "Abort"):
            if spec.action == "Promote":
                status = watch.begin(state.promote(status, moment, "promoted by hand (spec.action: "
                                                                   "Promote)"), spec, moment)
                kind, reason = "Normal", "Promoted"
            else:
                status = state.rollback(status, moment, "rolled back by hand (spec.action: Abort)")
                kind, reason = "Warning", "RolledBack"
            status = self._write(obj, status)
            self.emit(obj, kind, reason, status.message)
            self._apply(obj, spec, status)
            return spec.action
        if spec.paused:
            if status.phase != "Paused":
                status = self._write(obj, state.pause(status, moment))
                self.emit(obj, "Normal", "Paused", status.message)
            return None
        if status.phase == "Paused":
            status = self._write(obj, state.resume(status, spec, moment))
            self.emit(obj, "Normal", "Resumed", status.message)
            return "Resume"
        if not state.due(status, moment):
            return None
        router = self.router(obj["metadata"]["namespace"], spec)
        before, share = status, functools.partial(router.share, replicas=status.replicas)
        if shadow_step.active(status):
            result, figures = shadows.analyse(self.kube, router, spec, status, self._golden,
                                                 self._reference)
            snapshot = status.snapshot
            decision, after = shadow_step.decide(status, spec, result, figures, self.clock(), share)
        else:
            result, snapshot = self.analyse(obj["metadata"]["namespace"], spec, status)
            decision, after = state.decide(status, spec, result, self.clock(), share=share)
        after = watch.begin(after, spec, self.clock())
        status = self._write(obj, after.but(
            snapshot=snapshot, reference_stable=result.get("referenceStable") or after.reference_stable))
        kind = "Warning" if decision == "RollBack" or result["verdict"] == judge_mod.FAIL else "Normal"
        reason = {"Advance": "Advanced", "Promote": "Promoted", "RollBack": "RolledBack"}.get(
            decision, "Held")
        if after.deadline_exceeded and not before.deadline_exceeded:
            reason = "ProgressDeadlineExceeded"
        elif after.shadow_deadline_exceeded and not before.shadow_deadline_exceeded:
            reason = "ShadowDeadlineExceeded"
        self.emit(obj, kind, reason, status.message)
        log.info("%s/%s: %s (%s)", obj["metadata"]["namespace"], obj["metadata"]["name"],
                 decision, status.message)
        if not status.applied:
            self._apply(obj, spec, status)
        return decision

    def _watch(self, obj: dict, spec: RolloutSpec, status: RolloutStatus) -> str | None:
        """One look of the post-promotion watch (watch.py) when due; Abort rolls back by hand."""
        moment = self.clock()
        if not status.applied or (spec.action != "Abort" and not state.due(status, moment)):
            return None
        if spec.action == "Abort":
            decision, after = "RollBack", state.rollback(status, moment, (
                f"rolled back by hand during the watch (spec.action: Abort); version "
                f"{status.stable_version} serves again")).but(watch_until=None, watch_result=watch.FAIL)
        else:
            decision, after = watch.decide(status, spec, watch.look(spec, status), moment)
        status = self._write(obj, after)
        if decision != "Hold":
            self.emit(obj, "Warning" if decision == "RollBack" else "Normal",
                      {"RollBack": "RolledBack", watch.PASS: "Watched"}.get(decision, "WatchEnded"),
                      status.message)
            log.info("%s/%s: watch %s (%s)", obj["metadata"]["namespace"], obj["metadata"]["name"],
                     decision, status.message)
        if not status.applied:
            self._apply(obj, spec, status)
        return decision

    # ---- analysis -------------------------------------------------------------------------
    def analyse(self, ns: str, spec: RolloutSpec, status: RolloutStatus) -> tuple[dict, dict]:
        """(judged analysis, new metrics snapshot) for the window since the last analysis."""
        router = self.router(ns, spec)
        stable_url, canary_url = endpoints.base_urls(router)
        waiting = endpoints.canary_not_ready(self.kube, router, canary_url)
        if not waiting and not status.applied:
            # A window that began before this step's pods were ready would judge (and measure
            # the share of) a split the step does not give; the deadline still counts.
            waiting = (f"the step's split ({status.weight}% to the candidate) is not in "
                       "place yet: its pods are starting")
        if waiting:
            check = {"name": "canaryReady", "value": None, "threshold": None,
                     "result": judge_mod.INCONCLUSIVE, "note": waiting}
            return ({"verdict": judge_mod.INCONCLUSIVE, "checks": [check],
                     "summary": f"canaryReady: {waiting}", "canary": {}, "stable": {}},
                    dict(status.snapshot or {}))
        golden_urls = endpoints.direct_urls(self.kube, router, (stable_url, canary_url))
        golden = self._golden(spec, status, golden_urls[1]) if spec.analysis.golden_set else None
        reference = self._reference(spec, status, *golden_urls) \
            if spec.analysis.reference_set else None
        remembered = {}
        if reference is not None and not reference.get("unavailable"):
            reference, remembered["referenceStable"] = _stable_reference(
                reference, status.reference_stable)
        snapshot = dict(status.snapshot or {})
        source, figures = sources.for_spec(self.kube, router), {}
        for side, url, version in (("stable", stable_url, status.stable_version),
                                   ("canary", canary_url, status.candidate_version)):
            try:
                figures[side] = source.figures(side, url, version, snapshot)
            except sources.FAULTS as exc:
                figures[side] = {"error": str(exc)[:300]}
        result = judge_mod.judge(spec.analysis, figures["canary"], figures["stable"], golden,
                                 status.candidate_version, reference)
        result.update(_canary_share(figures) or {})  # what the canary really answered
        result.update({key: value for key, value in remembered.items() if value})
        if spec.analysis.live_accuracy:
            result = judge_mod.add_checks(result, [live_accuracy.check(
                spec.analysis.live_accuracy, spec.model_name, status.stable_version,
                status.candidate_version, spec.endpoints.timeout_s)])
        return result, snapshot

    def _reference(self, spec, status, stable_url, canary_url) -> dict:
        """The model's reference set (`<store root>/<model>/reference.json`, found like the
        golden set) answered by both versions."""
        try:
            try:
                root, model, _ = locate.candidate_set(spec, status)
            except golden_mod.GoldenError as exc:
                raise reference_mod.ReferenceUnavailable(
                    f"reference set unreadable: {exc}") from None
            doc = reference_mod.load_reference(root, model)
        except reference_mod.ReferenceUnavailable as exc:
            return {"unavailable": True, "error": str(exc)}
        return reference_mod.compare(stable_url, canary_url, spec.model_name, doc,
                                     spec.endpoints.timeout_s)

    def _golden(self, spec, status, canary_url) -> dict:
        """Served correctly: the canary answers the rows its golden.json recorded predictions on
        (the stable is not involved; golden.py says why)."""
        try:
            data = golden_mod.load_golden(*locate.candidate_set(spec, status))
        except golden_mod.GoldenError as exc:
            return {"canary": {"version": None, "error": str(exc)}, "unavailable": True}
        try:
            return {"canary": golden_mod.served_correctly(canary_url, spec.model_name, data,
                                                          spec.endpoints.timeout_s)}
        except golden_mod.GoldenError as exc:
            return {"canary": {"error": str(exc)[:300]}}
