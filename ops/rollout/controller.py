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

from ops.rollout import analysis as judge_mod
from ops.rollout import golden as golden_mod
from ops.rollout import live_accuracy
from ops.rollout import metrics as metrics_mod
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
    """Where the golden set is read: spec.store.root, else the candidate storageUri's own root
    when the operator can open it (s3:// or a path), else $DON_STORE (e.g. the model PVC mounted
    read-only into the operator pod; KServe's pvc:// URIs name a claim, not a path)."""
    if explicit:
        return explicit
    if from_uri.startswith("s3://") or from_uri.startswith("/"):
        return from_uri
    if os.environ.get("DON_STORE"):
        return os.environ["DON_STORE"]
    raise golden_mod.GoldenError(f"cannot read the golden set from {from_uri}: set spec.store.root "
                                 "or DON_STORE in the operator's environment")


def _service_of(url: str) -> str:
    return url.split("://", 1)[1].split(".", 1)[0].split(":", 1)[0].split("/", 1)[0]


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
        if not phase:
            return self._start(obj, spec)
        if not status.get("trafficApplied", True):
            self._apply(obj, spec, status)
            status = obj["status"]
        if phase in state.TERMINAL:
            return None
        return self._progress(obj, spec, status)

    def _write(self, obj: dict, changes: dict) -> dict:
        meta = obj["metadata"]
        changes = dict(changes, observedGeneration=meta.get("generation"))
        updated = self.kube.patch_rollout_status(meta["namespace"], meta["name"], changes)
        obj["status"] = updated.get("status") or {}
        return obj["status"]

    # ---- start ----------------------------------------------------------------------------
    def _start(self, obj: dict, spec: RolloutSpec) -> str:
        meta, moment = obj["metadata"], self.clock()
        ns = meta["namespace"]
        rival = self._rival(obj, spec)
        if rival:
            message = (f"ModelRollout {rival} is already rolling out {spec.target}; "
                       "two rollouts on one target are refused")
            self._write(obj, state.fail({}, moment, message))
            self.emit(obj, "Warning", "Refused", message)
            return "Fail"
        try:
            stable_uri, candidate_uri, stable_version, candidate_version = self._versions(ns, spec)
        except (ApiException, traffic.TrafficError, golden_mod.GoldenError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot start on {spec.mode} target {spec.target}: {reason}"
            self._write(obj, state.fail({}, moment, message))
            self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        if candidate_uri == stable_uri:
            message = f"candidate {candidate_uri} is already the stable version"
            self._write(obj, state.fail({}, moment, message))
            self.emit(obj, "Warning", "Failed", message)
            return "Fail"
        extra = {"snapshot": self._baseline(ns, spec)}
        if spec.mode == "Deployment":  # the replica total to split, as found at the start
            stable = self.kube.raw_deployment(ns, spec.raw["deployment"].get("stable") or spec.target)
            extra["replicas"] = int(stable.get("spec", {}).get("replicas") or 1)
        status = self._write(obj, dict(state.start(spec, moment, stable_uri, candidate_uri,
                                                   stable_version, candidate_version), **extra))
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
            return (f"{root}/{model}/{stable_version}", f"{root}/{model}/{candidate['version']}",
                    int(stable_version) if str(stable_version).isdigit() else None,
                    int(candidate["version"]))
        stable_uri = traffic.stable_storage_uri(self.kube.get_isvc(ns, spec.target))
        if candidate.get("storageUri"):
            candidate_uri = candidate["storageUri"]
        else:
            root, model, _ = golden_mod.split_storage_uri(stable_uri)
            candidate_uri = f"{root}/{model}/{candidate['version']}"
        return (stable_uri, candidate_uri, _version_of(stable_uri),
                candidate.get("version") or _version_of(candidate_uri))

    # ---- traffic --------------------------------------------------------------------------
    def _apply(self, obj: dict, spec: RolloutSpec, status: dict) -> None:
        """Make the serving objects match the status, then record that they do."""
        ns, phase, weight = obj["metadata"]["namespace"], status["phase"], int(status.get("weight") or 0)
        if spec.mode == "Deployment":
            self._apply_deployment(ns, spec, status, phase, weight)
        else:
            isvc = self.kube.get_isvc(ns, spec.target)
            self.kube.patch_isvc(ns, spec.target, traffic.isvc_patch(
                spec.mode, isvc, phase, weight, status["stableStorageUri"],
                status["candidateStorageUri"]))
        self._write(obj, {"trafficApplied": True})

    def _apply_deployment(self, ns, spec, status, phase, weight):
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
        self.kube.scale_deployment(ns, canary_name, canary_replicas)
        self.kube.scale_deployment(ns, stable_name, stable_replicas)

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
        status = self._write(obj, dict(changes, snapshot=snapshot))
        kind = "Warning" if decision == "RollBack" or result["verdict"] == judge_mod.FAIL else "Normal"
        reason = {"Advance": "Advanced", "Promote": "Promoted", "RollBack": "RolledBack"}.get(
            decision, "Held")
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
        golden = self._golden(spec, status, stable_url, canary_url) \
            if spec.analysis["goldenSet"] else None
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
                                 status.get("candidateVersion"))
        if spec.analysis.get("liveAccuracy"):
            result = judge_mod.add_checks(result, [live_accuracy.check(
                spec.analysis["liveAccuracy"], spec.model_name, status.get("stableVersion"),
                status.get("candidateVersion"), spec.endpoints["timeoutSeconds"])])
        return result, snapshot

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
