"""One reconcile pass over a ModelRollout (`Engine.tick`) and its kopf wiring.

Each tick reads the object fresh from the API server (never a cached body, which may predate our
own last status write), finishes any traffic change the status asks for, and, when the status
says an analysis is due, analyses and decides. How the stable and canary endpoints are found:
`spec.endpoints.*Url` when given (tests, or Services of your own), else KServe's conventional
Service names `<target>-predictor` (stable) and `<target>-predictor-canary` (canary), or in
Knative mode the tag routes `prev-<target>-predictor` / `latest-<target>-predictor`; metrics are
scraped from every ready endpoint address behind those Services, or queried from Prometheus.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Callable

from don_core.contract import storage_uri
from ops.rollout import analysis as judge_mod
from ops.rollout import golden as golden_mod
from ops.rollout import live_accuracy
from ops.rollout import metrics as metrics_mod
from ops.rollout import reference as reference_mod
from ops.rollout import state
from ops.rollout import traffic
from ops.rollout.kube import ApiException, Kube
from ops.rollout.spec import RolloutSpec, SpecError, parse_spec

log = logging.getLogger("ops.rollout")
Emit = Callable[[dict, str, str, str], None]  # (object, Normal|Warning, reason, message)


def default_urls(spec: RolloutSpec, ns: str) -> tuple[str, str]:
    """Base URLs of the stable and the canary model server for V1 calls."""
    endpoints, target = spec.endpoints, spec.target
    if spec.mode == "Knative":
        stable, canary = f"prev-{target}-predictor", f"latest-{target}-predictor"
    elif spec.mode == "Deployment":
        deployment = spec.raw["deployment"]
        stable = deployment.get("stableService") or f"{target}-stable"
        canary = deployment.get("canaryService") or f"{target}-canary"
    else:
        stable, canary = f"{target}-predictor", f"{target}-predictor-canary"
    return (endpoints.get("stableUrl") or f"http://{stable}.{ns}.svc",
            endpoints.get("canaryUrl") or f"http://{canary}.{ns}.svc")


def store_root(explicit: str | None, from_uri: str) -> str:
    """Where the golden and reference sets are read: spec.store.root, else the candidate
    storageUri's own root
    when the operator can open it (s3:// or a path), else $DON_STORE (e.g. the model PVC mounted
    read-only into the operator pod; KServe's pvc:// URIs name a claim, not a path)."""
    if explicit:
        return explicit
    if from_uri.startswith("s3://") or from_uri.startswith("/"):
        return from_uri
    if os.environ.get("DON_STORE"):
        return os.environ["DON_STORE"]
    raise golden_mod.GoldenError(f"cannot read the model store of {from_uri}: set "
                                 "spec.store.root or DON_STORE in the operator's environment")


def owner_reference(obj: dict) -> dict:
    """Makes the serving objects the operator creates go away with their ModelRollout (and so
    with the Helm release that declares it)."""
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion") or "rollouts.don-predictor.io/v1alpha1",
            "kind": obj.get("kind") or "ModelRollout", "name": meta["name"], "uid": meta["uid"],
            "controller": True}


def _service_of(url: str) -> str:
    return url.split("://", 1)[1].split(".", 1)[0].split(":", 1)[0].split("/", 1)[0]


def _stable_golden(result: dict, remembered: dict | None) -> tuple[dict, dict | None]:
    """(golden or reference result, the stable's figures to remember). The stable version's
    answers on a fixed row set do not change during a rollout, so once measured they stand in
    when the stable cannot answer any more (the deployment engine's last step runs no stable pod)."""
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


def _version_of(uri: str | None):
    try:
        return golden_mod.split_storage_uri(uri)[2]
    except golden_mod.GoldenError:
        return None


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
        phase, desired = status.get("phase"), int(spec.candidate["version"])
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
        except (ApiException, traffic.TrafficError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot deliver version {desired} on {spec.mode} target {spec.target}: {reason}"
            if status.get("message") != message:
                # No desiredVersion: once the objects can be found, delivery goes on.
                self._write(obj, dict(state.fail(status, self.clock(), message), trafficApplied=True))
                self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        if phase and status.get("desiredVersion") == desired:
            # This desired version was acted on already (delivered, promoted, rolled back or
            # failed): nothing is retried, and a version made live by a one-off rollout
            # (`python -m ops rollout start`) is left alone, until the desired version changes.
            if status.get("liveVersion") != live:
                self._write(obj, {"liveVersion": live})
            return None
        if live is not None and int(live) == desired:
            message = f"version {desired} serves all traffic"
            status = self._write(obj, dict(state.delivered(status, self.clock(), desired, message),
                                           desiredVersion=desired))
            self.emit(obj, "Normal", "Delivered", message)
            self._apply(obj, spec, status)
            return "Delivered"
        return self._start(obj, spec, previous=status, live=live)

    def _ensure(self, obj: dict, spec: RolloutSpec):
        """The live version of the target; creates the serving object the operator owns when it
        does not exist yet (first install), serving the desired version."""
        ns = obj["metadata"]["namespace"]
        if spec.mode == "Deployment":
            deployment = spec.raw["deployment"]
            stable_name = deployment.get("stable") or spec.target
            try:
                stable = self.kube.raw_deployment(ns, stable_name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                canary = self.kube.raw_deployment(ns, deployment.get("canary") or f"{spec.target}-canary")
                total = int(deployment.get("replicas") or 1)
                stable = self.kube.create_deployment(ns, traffic.stable_from_canary(
                    canary, stable_name, total, owner_reference(obj)))
                self.emit(obj, "Normal", "Created", f"Deployment {stable_name} created from "
                          f"{canary['metadata']['name']} ({total} replicas)")
            version = traffic.deployment_version(stable, deployment["versionEnv"])
            return int(version) if str(version).isdigit() else None
        try:
            isvc = self.kube.get_isvc(ns, spec.target)
        except ApiException as exc:
            template = spec.raw.get("inferenceService")
            if exc.status != 404 or not template:
                raise
            body = traffic.isvc_from_template(template, spec.target, owner_reference(obj))
            isvc = self.kube.create_isvc(ns, body)
            self.emit(obj, "Normal", "Created", f"InferenceService {spec.target} created serving "
                      f"{traffic.stable_storage_uri(isvc)}")
        return _version_of(traffic.stable_storage_uri(isvc))

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
        desired = {"desiredVersion": spec.candidate["version"], "liveVersion": live} \
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
        try:
            stable_uri, candidate_uri, stable_version, candidate_version = self._versions(ns, spec)
        except (ApiException, traffic.TrafficError, golden_mod.GoldenError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot start on {spec.mode} target {spec.target}: {reason}"
            self._write(obj, dict(state.fail(previous or {}, moment, message), **desired,
                                  candidateVersion=spec.candidate.get("version"),
                                  trafficApplied=True))
            self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        if candidate_uri == stable_uri:
            message = f"candidate {candidate_uri} is already the stable version"
            self._write(obj, dict(state.fail(previous or {}, moment, message), **desired,
                                  candidateVersion=spec.candidate.get("version"),
                                  trafficApplied=True))
            self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        extra = dict(desired, snapshot=self._baseline(ns, spec))
        if spec.mode == "Deployment":  # the replica total to split, as found at the start
            stable = self.kube.raw_deployment(ns, spec.raw["deployment"].get("stable") or spec.target)
            extra["replicas"] = int(stable.get("spec", {}).get("replicas") or 1)
        status = self._write(obj, dict(state.start(spec, moment, stable_uri, candidate_uri,
                                                   stable_version, candidate_version, previous),
                                       **extra))
        self.emit(obj, "Normal", "Started",
                  f"rolling out {candidate_uri} on {spec.target} ({spec.mode}): "
                  f"{status['weight']}% to the candidate, steps {list(spec.steps)}")
        self._apply(obj, spec, status)
        return "Start"

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

    def _versions(self, ns: str, spec: RolloutSpec):
        candidate = spec.candidate
        if spec.mode == "Deployment":
            deployment = spec.raw["deployment"]
            env = deployment["versionEnv"]
            stable = self.kube.raw_deployment(ns, deployment.get("stable") or spec.target)
            canary_name = deployment.get("canary") or f"{spec.target}-canary"
            canary = self.kube.raw_deployment(ns, canary_name)
            if not candidate.get("version"):
                raise traffic.TrafficError("Deployment mode needs spec.candidate.version")
            stable_version = traffic.deployment_version(stable, env)
            served = traffic.deployment_version(canary, env)
            if served is not None and str(served) != str(candidate["version"]):
                raise traffic.TrafficError(
                    f"Deployment {canary_name} runs version {served} ({env}), not the candidate "
                    f"{candidate['version']}: deploy the candidate as the canary first "
                    "(chart value models.<rf|tf>.canary.version)")
            model = spec.raw["store"].get("model") or spec.target
            root = spec.raw["store"].get("root") or "store"
            return (storage_uri(root, model, stable_version), storage_uri(root, model, candidate["version"]),
                    int(stable_version) if str(stable_version).isdigit() else None,
                    int(candidate["version"]))
        stable_uri = traffic.stable_storage_uri(self.kube.get_isvc(ns, spec.target))
        if candidate.get("storageUri"):
            candidate_uri = candidate["storageUri"]
        else:
            root, model, _ = golden_mod.split_storage_uri(stable_uri)
            candidate_uri = storage_uri(root, model, candidate["version"])
        return (stable_uri, candidate_uri, _version_of(stable_uri),
                candidate.get("version") or _version_of(candidate_uri))

    # ---- traffic --------------------------------------------------------------------------
    def _apply(self, obj: dict, spec: RolloutSpec, status: dict) -> bool:
        """Make the serving objects match the status, then record that they do. False while a
        change has to wait (pods that must be ready before others go); the next tick goes on."""
        ns, phase, weight = obj["metadata"]["namespace"], status["phase"], int(status.get("weight") or 0)
        if spec.mode == "Deployment":
            if not self._apply_deployment(ns, spec, status, phase, weight):
                return False
        elif phase != "Delivered":  # Delivered: the live version already serves 100 %
            isvc = self.kube.get_isvc(ns, spec.target)
            self.kube.patch_isvc(ns, spec.target, traffic.isvc_patch(
                spec.mode, isvc, phase, weight, status["stableStorageUri"],
                status["candidateStorageUri"]))
        self._write(obj, {"trafficApplied": True})
        return True

    def _apply_deployment(self, ns, spec, status, phase, weight) -> bool:
        deployment = spec.raw["deployment"]
        stable_name = deployment.get("stable") or spec.target
        canary_name = deployment.get("canary") or f"{spec.target}-canary"
        if phase == "Promoted":
            canary = self.kube.raw_deployment(ns, canary_name)
            self.kube.patch_deployment(ns, stable_name, traffic.promotion_patch(canary),
                                       strategic=False)
        if phase in state.TERMINAL:
            weight = 0  # the stable Deployment serves everything (the candidate once promoted)
        total = int(deployment.get("replicas") or status.get("replicas") or 1)
        if deployment.get("httpRoute"):
            route = self.kube.get_route(ns, deployment["httpRoute"])
            stable_service = deployment.get("stableService") or f"{spec.target}-stable"
            canary_service = deployment.get("canaryService") or f"{spec.target}-canary"
            self.kube.patch_route(ns, deployment["httpRoute"], {"spec": {"rules": traffic.route_rules(
                route, stable_service, canary_service, weight)}})
            stable_replicas, canary_replicas = total, (total if phase in state.ACTIVE else 0)
        else:
            stable_replicas, canary_replicas = traffic.replica_split(total, weight)
        # Scale up first; scale down only once what stays has its pods ready (on the current
        # template), so that callers of the model's Service always find a ready pod.
        wanted = {stable_name: stable_replicas, canary_name: canary_replicas}
        current = {name: self.kube.raw_deployment(ns, name) for name in wanted}
        for name, replicas in wanted.items():
            if replicas > 0 and (current[name].get("spec") or {}).get("replicas") != replicas:
                self.kube.scale_deployment(ns, name, replicas)
                current[name] = self.kube.raw_deployment(ns, name)
        waiting = [name for name, replicas in wanted.items()
                   if replicas > 0 and not traffic.deployment_ready(current[name], replicas)]
        if waiting:
            return False
        for name, replicas in wanted.items():
            if replicas == 0 and (current[name].get("spec") or {}).get("replicas") != 0:
                self.kube.scale_deployment(ns, name, 0)
        return True

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
        result, snapshot = self.analyse(obj["metadata"]["namespace"], spec, status)
        decision, changes = state.decide(status, spec, result, self.clock())
        status = self._write(obj, dict(changes, snapshot=snapshot,
                                       **{key: result[key] for key in ("goldenStable", "referenceStable")
                                          if result.get(key)}))
        kind = "Warning" if decision == "RollBack" or result["verdict"] == judge_mod.FAIL else "Normal"
        reason = {"Advance": "Advanced", "Promote": "Promoted", "RollBack": "RolledBack"}.get(
            decision, "Held")
        if changes.get("deadlineExceeded"):
            reason = "ProgressDeadlineExceeded"
        self.emit(obj, kind, reason, changes["message"])
        log.info("%s/%s: %s (%s)", obj["metadata"]["namespace"], obj["metadata"]["name"],
                 decision, changes["message"])
        if not status.get("trafficApplied", True):
            self._apply(obj, spec, status)
        return decision

    # ---- analysis -------------------------------------------------------------------------
    def analyse(self, ns: str, spec: RolloutSpec, status: dict) -> tuple[dict, dict]:
        """(judged analysis, new metrics snapshot) for the window since the last analysis."""
        stable_url, canary_url = default_urls(spec, ns)
        waiting = self._canary_not_ready(ns, spec, canary_url)

        if waiting:
            check = {"name": "canaryReady", "value": None, "threshold": None,
                     "result": judge_mod.INCONCLUSIVE, "note": waiting}
            return ({"verdict": judge_mod.INCONCLUSIVE, "checks": [check],
                     "summary": f"canaryReady: {waiting}", "canary": {}, "stable": {}},
                    dict(status.get("snapshot") or {}))
        golden_urls = (stable_url, canary_url)
        if spec.mode == "Deployment":  # the chart's own Services, by ClusterIP: no cluster DNS needed
            golden_urls = tuple(self._by_cluster_ip(ns, spec, side, url) for side, url in
                                (("stable", stable_url), ("canary", canary_url)))
        golden = self._golden(spec, status, *golden_urls) if spec.analysis["goldenSet"] else None
        reference = self._reference(spec, status, *golden_urls) \
            if spec.analysis["referenceSet"] else None
        remembered = {}
        if golden is not None and not golden.get("unavailable"):
            golden, remembered["goldenStable"] = _stable_golden(golden, status.get("goldenStable"))
        if reference is not None and not reference.get("unavailable"):
            reference, remembered["referenceStable"] = _stable_golden(
                reference, status.get("referenceStable"))
        snapshot = dict(status.get("snapshot") or {})
        figures = {}
        for side, url, version in (("stable", stable_url, status.get("stableVersion")),
                                   ("canary", canary_url, status.get("candidateVersion"))):
            try:
                if spec.metrics["source"] == "Prometheus":
                    source = metrics_mod.PrometheusSource(
                        spec.metrics["prometheusUrl"], spec.metrics["requestsMetric"],
                        spec.metrics["latencyMetric"], spec.endpoints["timeoutSeconds"])
                    figures[side] = source.figures(spec.model_name, version, spec.interval_s)
                else:
                    current = self._scrape(ns, spec, side, url)
                    figures[side] = metrics_mod.summarise(
                        metrics_mod.window(current, snapshot.get(side)))
                    snapshot[side] = current
            except (metrics_mod.MetricsError, ApiException) as exc:
                figures[side] = {"error": str(exc)[:300]}
        result = judge_mod.judge(spec.analysis, figures["canary"], figures["stable"], golden,
                                 status.get("candidateVersion"), reference)
        result.update({key: value for key, value in remembered.items() if value})
        if spec.analysis.get("liveAccuracy"):
            result = judge_mod.add_checks(result, [live_accuracy.check(
                spec.analysis["liveAccuracy"], spec.model_name, status.get("stableVersion"),
                status.get("candidateVersion"), spec.endpoints["timeoutSeconds"])])
        return result, snapshot

    def _by_cluster_ip(self, ns: str, spec: RolloutSpec, side: str, url: str) -> str:
        if spec.endpoints.get(f"{side}Url"):
            return url
        try:
            return self.kube.service_url(ns, _service_of(url)) or url
        except ApiException:
            return url

    def _canary_not_ready(self, ns: str, spec: RolloutSpec, canary_url: str) -> str | None:
        """Why no traffic can reach the canary yet (its Service has no ready pod), or None. Only
        for the deployment engine's own canary Service; explicit URLs are taken as they are."""
        if spec.mode != "Deployment" or spec.endpoints.get("canaryUrl") \
                or spec.endpoints.get("canaryMetricsUrl"):
            return None
        service = _service_of(canary_url)
        try:
            ready = self.kube.endpoint_urls(ns, service)
        except ApiException as exc:
            return f"no traffic reached the canary: Service {service}: {exc.status} {exc.reason}"
        if not ready:
            return f"no traffic reached the canary: Service {service} has no ready pods"
        return None

    def _scrape(self, ns: str, spec: RolloutSpec, side: str, base_url: str) -> dict:
        explicit = spec.endpoints.get(f"{side}MetricsUrl")
        if explicit:
            urls = [explicit]
        elif spec.endpoints.get(f"{side}Url"):
            urls = [spec.endpoints[f"{side}Url"].rstrip("/") + "/metrics"]
        else:
            urls = self.kube.endpoint_urls(ns, _service_of(base_url))
            if not urls:
                raise metrics_mod.MetricsError(f"Service {_service_of(base_url)} has no ready endpoints")
        return {url: metrics_mod.scrape(url, spec.model_name, spec.metrics["requestsMetric"],
                                        spec.metrics["latencyMetric"],
                                        spec.endpoints["timeoutSeconds"]) for url in urls}

    def _baseline(self, ns: str, spec: RolloutSpec) -> dict:
        """Counters at the start, so the first window counts only requests made during the rollout."""
        if spec.metrics["source"] == "Prometheus":
            return {}
        snapshot = {}
        for side, url in zip(("stable", "canary"), default_urls(spec, ns)):
            try:
                snapshot[side] = self._scrape(ns, spec, side, url)
            except (metrics_mod.MetricsError, ApiException):
                pass  # not up yet: its first window starts at its own start
        return snapshot

    def _reference(self, spec, status, stable_url, canary_url) -> dict:
        """The model's reference set (`<store root>/<model>/reference.json`, found like the
        golden set) answered by both versions."""
        try:
            try:
                root, model, _ = golden_mod.split_storage_uri(status["candidateStorageUri"])
                root = store_root(spec.raw["store"].get("root"), root)
            except golden_mod.GoldenError as exc:
                raise reference_mod.ReferenceUnavailable(
                    f"reference set unreadable: {exc}") from None
            model = spec.raw["store"].get("model") or model
            doc = reference_mod.load_reference(root, model)
        except reference_mod.ReferenceUnavailable as exc:
            return {"unavailable": True, "error": str(exc)}
        return reference_mod.compare(stable_url, canary_url, spec.model_name, doc,
                                     spec.endpoints["timeoutSeconds"])

    def _golden(self, spec, status, stable_url, canary_url) -> dict:
        timeout = spec.endpoints["timeoutSeconds"]
        try:
            root, model, version = golden_mod.split_storage_uri(status["candidateStorageUri"])
            root = store_root(spec.raw["store"].get("root"), root)
            model = spec.raw["store"].get("model") or model
            data = golden_mod.load_golden(root, model, int(status.get("candidateVersion") or version))
        except golden_mod.GoldenError as exc:
            error = {"error": str(exc)}
            return {"stable": error, "canary": {"version": None, **error}, "unavailable": True}
        result = {}
        for side, url in (("stable", stable_url), ("canary", canary_url)):
            try:
                result[side] = golden_mod.evaluate(url, spec.model_name, data, timeout)
            except golden_mod.GoldenError as exc:
                result[side] = {"error": str(exc)[:300]}
        if "mae" in result["stable"] and "mae" in result["canary"]:
            result["relativeIncrease"] = golden_mod.relative_increase(result["canary"]["mae"],
                                                                      result["stable"]["mae"])
        return result
