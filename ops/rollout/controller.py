"""One reconcile pass over a ModelRollout (`Engine.tick`), the same for every serving engine.

Each tick reads the object fresh from the API server (never a cached body, which may predate our
own last status write), finishes any traffic change the status asks for, and, when the status
says an analysis is due, analyses and decides. Where the parts live: moving traffic per engine
(routers.py), reaching the model servers (endpoints.py), the metrics source (sources.py), the
golden and reference sets (locate.py, golden.py, reference.py), the state machine (state.py).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from ops.rollout import analysis as judge_mod
from ops.rollout import endpoints
from ops.rollout import golden as golden_mod
from ops.rollout import live_accuracy, locate, routers, shadow_step, sources, state
from ops.rollout import reference as reference_mod
from ops.rollout import shadow as shadow_mod
from ops.rollout.kube import ApiException, Kube
from ops.rollout.spec import RolloutSpec, SpecError, parse_spec

log = logging.getLogger("ops.rollout")
Emit = Callable[[dict, str, str, str], None]  # (object, Normal|Warning, reason, message)


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
        status = obj.get("status") or {}
        phase = status.get("phase")
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
            return self._start(obj, spec)
        if not status.get("trafficApplied", True):
            self._apply(obj, spec, status)
            status = obj["status"]
        if phase in state.TERMINAL:
            return None
        return self._progress(obj, spec, status)

    # ---- Desired delivery (the chart's objects: models.<m>.version is the desired version) ----
    def _deliver(self, obj: dict, spec: RolloutSpec, status: dict) -> str | None:
        """Flagger's model: a rollout starts when the desired version changes (status.desiredVersion
        is the last one acted on) and differs from the live one; a rolled-back version is not
        retried until the desired version changes; between rollouts the serving objects are left
        as they are."""
        phase, desired = status.get("phase"), spec.candidate.version
        if phase in state.ACTIVE:
            if status.get("candidateVersion") not in (None, desired) and spec.action != "Promote":
                # The desired version changed mid-rollout: give up on the old candidate first.
                changes = state.rollback(status, self.clock(), (
                    f"superseded: the desired version is now {desired}; version "
                    f"{status.get('candidateVersion')} was not delivered"))
                status = self._write(obj, changes)
                self.emit(obj, "Warning", "RolledBack", changes["message"])
                self._apply(obj, spec, status)
                return "RollBack"
            if not status.get("trafficApplied", True):
                self._apply(obj, spec, status)
                status = obj["status"]
            return self._progress(obj, spec, status)
        if not status.get("trafficApplied", True):
            if not self._apply(obj, spec, status):
                return None  # still moving traffic (e.g. waiting for the stable pods)
            status = obj["status"]
        try:
            live = self._ensure(obj, spec)
        except (ApiException, routers.TrafficError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot deliver version {desired} on {spec.mode} target {spec.target}: {reason}"
            if status.get("message") != message:
                # No desiredVersion: once the objects can be found, delivery goes on.
                self._write(obj, dict(state.fail(status, self.clock(), message), trafficApplied=True))
                self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        if phase and phase != state.WAITING and status.get("desiredVersion") == desired:
            # This desired version was acted on already (delivered, promoted, rolled back or
            # failed): nothing is retried, and a version made live by a one-off rollout
            # (`python -m ops rollout start`) is left alone, until the desired version changes.
            if status.get("liveVersion") != live:
                self._write(obj, {"liveVersion": live})
            return None
        if live is not None and int(live) == desired:
            return self._verify_delivery(obj, spec, status, desired)
        missing = locate.not_in_store(spec, status.get("stableStorageUri"), desired)
        if missing:  # no rollout (and no deadline) until the version is published
            return self._wait(obj, status, f"{missing}: the rollout starts once it is published",
                              liveVersion=live)
        return self._start(obj, spec, previous=status, live=live)

    def _wait(self, obj: dict, status: dict, message: str, **fields) -> str:
        """Phase Waiting with the reason; an Event only when the reason changes."""
        if status.get("phase") != state.WAITING or status.get("message") != message:
            self._write(obj, dict(state.waiting(status, self.clock(), message), **fields))
            self.emit(obj, "Normal", state.WAITING, message)
        return "Wait"

    def _verify_delivery(self, obj: dict, spec: RolloutSpec, status: dict, desired: int) -> str:
        """Delivered only once verified: the version is in the store, the engine's wanted replicas
        are ready, and every ready server answers as that version; Waiting with the reason until
        then. Traffic is settled meanwhile (the stable serves everything, no canary pods)."""
        router = self.router(obj["metadata"]["namespace"], spec)
        uri = status.get("stableStorageUri") or status.get("candidateStorageUri")
        problem = locate.not_in_store(spec, uri, desired)
        router.settle(status)  # idempotent; scales down only what ready pods replace
        problem = problem or endpoints.not_serving(self.kube, router, desired,
                                                   spec.endpoints.timeout_s)
        if problem:
            return self._wait(obj, status, f"version {desired} is not verified yet: {problem}",
                              liveVersion=desired)
        message = f"version {desired} serves all traffic (verified: ready servers answer as it)"
        self._write(obj, dict(state.delivered(status, self.clock(), desired, message),
                              desiredVersion=desired))
        self.emit(obj, "Normal", "Delivered", message)
        return "Delivered"

    def _ensure(self, obj: dict, spec: RolloutSpec):
        """The live version of the target; creates the serving object the operator owns when it
        does not exist yet (first install), serving the desired version."""
        live, created = self.router(obj["metadata"]["namespace"], spec).ensure(owner_reference(obj))
        if created:
            self.emit(obj, "Normal", "Created", created)
        return live

    def router(self, ns: str, spec: RolloutSpec) -> routers.Router:
        return routers.for_spec(self.kube, ns, spec)

    def _write(self, obj: dict, changes: dict) -> dict:
        meta = obj["metadata"]
        changes = dict(changes, observedGeneration=meta.get("generation"))
        updated = self.kube.patch_rollout_status(meta["namespace"], meta["name"], changes)
        obj["status"] = updated.get("status") or {}
        return obj["status"]

    # ---- start ----------------------------------------------------------------------------
    def _start(self, obj: dict, spec: RolloutSpec, previous: dict | None = None,
               live=None) -> str:
        meta, moment = obj["metadata"], self.clock()
        desired = {"desiredVersion": spec.candidate.version, "liveVersion": live} \
            if spec.desired else {}
        ns = meta["namespace"]
        rival = self._rival(obj, spec)
        if rival:
            message = (f"ModelRollout {rival} is already rolling out {spec.target}; "
                       "two rollouts on one target are refused")
            if spec.desired:  # it starts once the other one has finished
                if (previous or {}).get("message") != message:
                    self._write(obj, {"message": message})
                    self.emit(obj, "Warning", "Refused", message)
                return None
            self._write(obj, state.fail({}, moment, message))
            self.emit(obj, "Warning", "Refused", message)
            return "Fail"
        router = self.router(ns, spec)
        try:
            found = router.read_state()
        except (ApiException, routers.TrafficError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            return self._not_started(obj, spec, previous, desired,
                                     f"cannot start on {spec.mode} target {spec.target}: {reason}")
        # The storage URIs where an InferenceService serves the versions, else the versions.
        candidate = found.get("candidateStorageUri") or f"version {found['candidateVersion']}"
        if found.get("candidateStorageUri", found["candidateVersion"]) == \
                found.get("stableStorageUri", found["stableVersion"]):
            return self._not_started(obj, spec, previous, desired,
                                     f"candidate {candidate} is already the stable version")
        snapshot = sources.for_spec(self.kube, router).baseline(endpoints.base_urls(router))
        status = self._write(obj, dict(state.start(
            spec, moment, found, previous, share=lambda weight: router.share(weight, found),
            first_step=shadow_step.first_step(spec, moment) if spec.shadow else None),
            **desired, snapshot=snapshot))
        first = status["message"] if spec.shadow else f"{status['weight']}% to the candidate"
        self.emit(obj, "Normal", "Started", f"rolling out {candidate} on {spec.target} ({spec.mode}): "
                                            f"{first}, steps {['shadow'] * bool(spec.shadow) + list(spec.steps)}")
        self._apply(obj, spec, status)
        return "Start"

    def _not_started(self, obj: dict, spec: RolloutSpec, previous: dict | None, desired: dict,
                     message: str) -> str:
        """Failed before any traffic moved: the serving objects stay as they are."""
        self._write(obj, dict(state.fail(previous or {}, self.clock(), message), **desired,
                              candidateVersion=spec.candidate.version, trafficApplied=True))
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
    def _apply(self, obj: dict, spec: RolloutSpec, status: dict) -> bool:
        """Make the serving objects match the status, then record that they do. False while a
        change has to wait (pods that must be ready before others go); the next tick goes on."""
        router, phase = self.router(obj["metadata"]["namespace"], spec), status["phase"]
        if spec.shadow:
            self._shadow(obj, spec, status)
        if shadow_step.active(status):  # callers get the stable alone; copies go to the shadow
            done = router.settle(status)
        elif phase == "Promoted":
            done = router.promote(status)
        elif phase in ("Delivered", state.WAITING):  # the live version serves 100 %
            done = router.settle(status)
        elif phase in state.TERMINAL:  # rolled back or failed
            done = router.rollback(status)
        else:
            done = router.set_weights(status, int(status.get("stepWeight", status.get("weight")) or 0))
        if not done:
            return False
        changes: dict = {"trafficApplied": True}
        if phase in state.ACTIVE:
            # The next analysis window starts once this step's split is in place (its pods
            # ready): what the canary answers in it is the share the step really gives.
            changes["snapshot"] = sources.for_spec(self.kube, router).baseline(
                endpoints.base_urls(router))
            changes["nextCheckAt"] = state.stamp(self.clock() + dt.timedelta(seconds=spec.interval_s))
        self._write(obj, changes)
        return True

    def _shadow(self, obj: dict, spec: RolloutSpec, status: dict) -> None:
        """The shadow and the mirror setting exist exactly while the status is in the shadow step
        (shadow.py); an Event says what was created or removed."""
        shadow = shadow_mod.Shadow(self.kube, obj["metadata"]["namespace"], spec)
        if shadow_step.active(status):
            changed = shadow.ensure(int(status.get("replicas") or 1), owner_reference(obj))
            verb = "created"
        else:
            changed, verb = shadow.remove(), "removed"
        if changed:
            self.emit(obj, "Normal", "Shadow", f"shadow of version {status.get('candidateVersion')}: "
                                               f"{verb} {', '.join(changed)}")

    # ---- progress -------------------------------------------------------------------------
    def _progress(self, obj: dict, spec: RolloutSpec, status: dict) -> str | None:
        moment = self.clock()
        if spec.action in ("Promote", "Abort"):
            if spec.action == "Promote":
                changes = state.promote(status, moment, "promoted by hand (spec.action: Promote)")
                kind, reason = "Normal", "Promoted"
            else:
                changes = state.rollback(status, moment, "rolled back by hand (spec.action: Abort)")
                kind, reason = "Warning", "RolledBack"
            status = self._write(obj, changes)
            self.emit(obj, kind, reason, changes["message"])
            self._apply(obj, spec, status)
            return spec.action
        if spec.paused:
            if status["phase"] != "Paused":
                changes = state.pause(status, moment)
                self._write(obj, changes)
                self.emit(obj, "Normal", "Paused", changes["message"])
            return None
        if status["phase"] == "Paused":
            changes = state.resume(status, spec, moment)
            self._write(obj, changes)
            self.emit(obj, "Normal", "Resumed", changes["message"])
            return "Resume"
        if not state.due(status, moment):
            return None
        router = self.router(obj["metadata"]["namespace"], spec)
        share = lambda weight: router.share(weight, status)  # noqa: E731
        if shadow_step.active(status):
            result, figures = shadow_mod.analyse(self.kube, router, spec, status, self._golden,
                                                 self._reference)
            snapshot = dict(status.get("snapshot") or {})
            decision, changes = shadow_step.decide(status, spec, result, figures, self.clock(), share)
        else:
            result, snapshot = self.analyse(obj["metadata"]["namespace"], spec, status)
            decision, changes = state.decide(status, spec, result, self.clock(), share=share)
        status = self._write(obj, dict(changes, snapshot=snapshot,
                                       **{key: result[key] for key in ("referenceStable",)
                                          if result.get(key)}))
        kind = "Warning" if decision == "RollBack" or result["verdict"] == judge_mod.FAIL else "Normal"
        reason = {"Advance": "Advanced", "Promote": "Promoted", "RollBack": "RolledBack"}.get(
            decision, "Held")
        if changes.get("deadlineExceeded"):
            reason = "ProgressDeadlineExceeded"
        elif changes.get("shadowDeadlineExceeded"):
            reason = "ShadowDeadlineExceeded"
        self.emit(obj, kind, reason, changes["message"])
        log.info("%s/%s: %s (%s)", obj["metadata"]["namespace"], obj["metadata"]["name"],
                 decision, changes["message"])
        if not status.get("trafficApplied", True):
            self._apply(obj, spec, status)
        return decision

    # ---- analysis -------------------------------------------------------------------------
    def analyse(self, ns: str, spec: RolloutSpec, status: dict) -> tuple[dict, dict]:
        """(judged analysis, new metrics snapshot) for the window since the last analysis."""
        router = self.router(ns, spec)
        stable_url, canary_url = endpoints.base_urls(router)
        waiting = endpoints.canary_not_ready(self.kube, router, canary_url)
        if not waiting and not status.get("trafficApplied", True):
            # A window that began before this step's pods were ready would judge (and measure
            # the share of) a split the step does not give; the deadline still counts.
            waiting = (f"the step's split ({status.get('weight')}% to the candidate) is not in "
                       "place yet: its pods are starting")
        if waiting:
            check = {"name": "canaryReady", "value": None, "threshold": None,
                     "result": judge_mod.INCONCLUSIVE, "note": waiting}
            return ({"verdict": judge_mod.INCONCLUSIVE, "checks": [check],
                     "summary": f"canaryReady: {waiting}", "canary": {}, "stable": {}},
                    dict(status.get("snapshot") or {}))
        golden_urls = endpoints.direct_urls(self.kube, router, (stable_url, canary_url))
        golden = self._golden(spec, status, golden_urls[1]) if spec.analysis.golden_set else None
        reference = self._reference(spec, status, *golden_urls) \
            if spec.analysis.reference_set else None
        remembered = {}
        if reference is not None and not reference.get("unavailable"):
            reference, remembered["referenceStable"] = _stable_reference(
                reference, status.get("referenceStable"))
        snapshot = dict(status.get("snapshot") or {})
        source, figures = sources.for_spec(self.kube, router), {}
        for side, url, version in (("stable", stable_url, status.get("stableVersion")),
                                   ("canary", canary_url, status.get("candidateVersion"))):
            try:
                figures[side] = source.figures(side, url, version, snapshot)
            except sources.FAULTS as exc:
                figures[side] = {"error": str(exc)[:300]}
        result = judge_mod.judge(spec.analysis, figures["canary"], figures["stable"], golden,
                                 status.get("candidateVersion"), reference)
        result.update(_canary_share(figures) or {})  # what the canary really answered
        result.update({key: value for key, value in remembered.items() if value})
        if spec.analysis.live_accuracy:
            result = judge_mod.add_checks(result, [live_accuracy.check(
                spec.analysis.live_accuracy, spec.model_name, status.get("stableVersion"),
                status.get("candidateVersion"), spec.endpoints.timeout_s)])
        return result, snapshot

    def _reference(self, spec, status, stable_url, canary_url) -> dict:
        """The model's reference set (`<store root>/<model>/reference.json`, found like the
        golden set) answered by both versions."""
        try:
            try:
                root, model, _ = locate.candidate_set(
                    spec, status.get("candidateVersion"), status.get("candidateStorageUri"))
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
            data = golden_mod.load_golden(*locate.candidate_set(
                spec, status.get("candidateVersion"), status.get("candidateStorageUri")))
        except golden_mod.GoldenError as exc:
            return {"canary": {"version": None, "error": str(exc)}, "unavailable": True}
        try:
            return {"canary": golden_mod.served_correctly(canary_url, spec.model_name, data,
                                                          spec.endpoints.timeout_s)}
        except golden_mod.GoldenError as exc:
            return {"canary": {"error": str(exc)[:300]}}
