"""Per-engine traffic behind one small interface (Flagger's router idea), so that the reconcile
loop (controller.py) never asks which engine it drives.

A router acts on one ModelRollout's target in one namespace:
- `ensure(owner)`: the live version; first creates the serving object the operator owns when a
  `delivery: Desired` object needs it (Flagger's initialisation);
- `read_state()`: the status fields (RolloutStatus attributes) a rollout starts from: the stable
  and candidate versions, the storage URIs where an InferenceService serves them, and what the
  engine needs later, e.g. the replica total to split;
- `set_weights(status, weight)`: `weight` % to the candidate; `promote(status)`: the candidate
  serves everything; `rollback(status)`: the stable serves everything and nothing runs the
  candidate; `settle(status)`: a delivered version (no rollout) keeps all traffic.
Each returns False while a change has to wait (pods that must be ready before others go); calling
it again on the next tick goes on. All are idempotent. The object-level patches they send are
built by the pure functions of traffic.py. API faults propagate as ApiException.

Engines: KServe Knative (canaryTrafficPercent on the predictor), KServe Standard (spec.canary[]
with trafficPercent), the chart's Deployment engine split by replica ratio, or by HTTPRoute
backend weights when spec.deployment.httpRoute names a route.
"""
from __future__ import annotations

from don_core.contract import parse_storage_uri, storage_uri
from ops.rollout import traffic
from ops.rollout.kube import ApiException, Kube
from ops.rollout.spec import RolloutSpec
from ops.rollout.status import RolloutStatus
from ops.rollout.traffic import Served, TrafficError


def served_at(uri: str) -> Served:
    """A storage URI an InferenceService (or spec.candidate.storageUri) names, with its version:
    the one place a version is read from a URI (None outside the <root>/<model>/<N> layout)."""
    try:
        return Served(uri, parse_storage_uri(uri)[2])
    except ValueError:
        return Served(uri, None)


class Router:
    # True when the stable and canary Services are the chart's own: the analysis reaches them
    # by ClusterIP (no cluster DNS needed) and waits until the canary Service has a ready pod.
    own_services = False

    def __init__(self, kube: Kube, ns: str, spec: RolloutSpec):
        self.kube, self.ns, self.spec = kube, ns, spec

    def services(self) -> tuple[str, str]:
        """Names of the stable and the canary Service (endpoint discovery)."""
        raise NotImplementedError

    def live_service(self) -> str:
        """The Service whose pods serve the live version when no rollout runs."""
        return self.services()[0]

    def share(self, weight: int, replicas: int | None = None) -> int:
        """The percent of requests the candidate really answers when a step asks for `weight`
        (`replicas`: the replica total found at the start, status.replicas)."""
        return int(weight)

    def replicas_not_ready(self) -> str | None:
        """Why the live version's wanted replicas are not all ready (None when they are, or when
        the engine keeps its own count, e.g. KServe's autoscaler)."""
        return None

    def ensure(self, owner: dict) -> tuple[int | None, str | None]:
        """(live version, what was created or changed, or None)."""
        raise NotImplementedError

    def read_state(self) -> dict:
        raise NotImplementedError

    def set_weights(self, status: RolloutStatus, weight: int) -> bool:
        raise NotImplementedError

    def promote(self, status: RolloutStatus) -> bool:
        raise NotImplementedError

    def rollback(self, status: RolloutStatus) -> bool:
        raise NotImplementedError

    def settle(self, status: RolloutStatus) -> bool:
        raise NotImplementedError


class InferenceServiceRouter(Router):
    """KServe: the InferenceService `spec.target`; `mode` picks the patch (traffic.isvc_patch)."""
    mode = ""

    def ensure(self, owner: dict) -> tuple[int | None, str | None]:
        created = None
        try:
            isvc = self.kube.get_isvc(self.ns, self.spec.target)
        except ApiException as exc:
            template = self.spec.inference_service
            if exc.status != 404 or not template:
                raise
            isvc = self.kube.create_isvc(self.ns, traffic.isvc_from_template(template, self.spec.target, owner))
            created = f"InferenceService {self.spec.target} created serving {traffic.stable_storage_uri(isvc)}"
        version = served_at(traffic.stable_storage_uri(isvc)).version
        if not created and self.spec.inference_service:
            created = self._follow_chart(isvc, self.spec.inference_service, version)
        return version, created

    def _follow_chart(self, isvc: dict, template: dict, version: int | None) -> str | None:
        """A chart change that keeps the version (resources, the recorder turned on, an image)
        reaches the InferenceService too: while no canary is in flight and the chart's template
        serves the version the InferenceService serves, it takes the template's predictor (KServe
        rolls the pods). A new version waits for its rollout instead."""
        digest = traffic.template_digest(template)
        if (((isvc.get("metadata") or {}).get("annotations") or {}).get(traffic.TEMPLATE_DIGEST) == digest
                or version is None or traffic.isvc_weight(self.mode, isvc) is not None):
            return None
        predictor = (template.get("spec") or {}).get("predictor") or {}
        try:
            if served_at(predictor[traffic.storage_key(predictor)]["storageUri"]).version != version:
                return None
        except TrafficError:
            return None
        self.kube.patch_isvc(self.ns, self.spec.target, traffic.template_patch(isvc, template))
        return (f"InferenceService {self.spec.target} updated to the chart's template "
                f"(version {version} unchanged)")

    def read_state(self) -> dict:
        candidate = self.spec.candidate
        stable = served_at(traffic.stable_storage_uri(self.kube.get_isvc(self.ns, self.spec.target)))
        if candidate.storage_uri:
            found = served_at(candidate.storage_uri)
            candidate_served = Served(found.uri, candidate.version or found.version)
        else:
            # the candidate is published beside the stable: <root>/<model>/<candidate version>
            try:
                root, model, _ = parse_storage_uri(stable.uri)
            except ValueError as exc:
                raise TrafficError(str(exc)) from None
            candidate_served = Served(storage_uri(root, model, candidate.version), candidate.version)
        return {"stable_storage_uri": stable.uri, "candidate_storage_uri": candidate_served.uri,
                "stable_version": stable.version, "candidate_version": candidate_served.version}

    def _patch(self, status: RolloutStatus, phase: str, weight: int) -> bool:
        isvc = self.kube.get_isvc(self.ns, self.spec.target)
        self.kube.patch_isvc(self.ns, self.spec.target, traffic.isvc_patch(
            self.mode, isvc, phase, weight,
            Served(status.stable_storage_uri, status.stable_version),
            Served(status.candidate_storage_uri, status.candidate_version)))
        return True

    def set_weights(self, status: RolloutStatus, weight: int) -> bool:
        return self._patch(status, "Progressing", weight)

    def promote(self, status: RolloutStatus) -> bool:
        return self._patch(status, "Promoted", 100)

    def rollback(self, status: RolloutStatus) -> bool:
        return self._patch(status, "RolledBack", 0)

    def settle(self, status: RolloutStatus) -> bool:
        return True  # the live version already serves all traffic; nothing to change


class KnativeRouter(InferenceServiceRouter):
    """KServe Serverless: the predictor IS the candidate at canaryTrafficPercent; the previous
    revision keeps the rest (reached through its tag routes)."""
    mode = "Knative"

    def services(self) -> tuple[str, str]:
        return f"prev-{self.spec.target}-predictor", f"latest-{self.spec.target}-predictor"

    def live_service(self) -> str:
        return self.spec.target  # the tag routes exist only while a canary runs


class StandardRouter(InferenceServiceRouter):
    """KServe raw deployment: spec.canary[] carries the candidate at trafficPercent."""
    mode = "Standard"

    def services(self) -> tuple[str, str]:
        return f"{self.spec.target}-predictor", f"{self.spec.target}-predictor-canary"


class DeploymentRouter(Router):
    """The chart's Deployment engine: Deployments `<target>` (stable) and `<target>-canary` (the
    candidate, deployed by the chart; its env `versionEnv` says which version), traffic by the
    replica ratio. Promotion copies the canary's pod template into the stable Deployment."""
    own_services = True

    def __init__(self, kube: Kube, ns: str, spec: RolloutSpec):
        super().__init__(kube, ns, spec)
        self.settings = spec.deployment
        self.stable_name, self.canary_name = self.settings.stable, self.settings.canary

    def services(self) -> tuple[str, str]:
        return self.settings.stable_service, self.settings.canary_service

    def _version(self, deployment: dict) -> int | None:
        version = traffic.deployment_version(deployment, self.settings.version_env)
        return int(version) if str(version).isdigit() else None

    def ensure(self, owner: dict) -> tuple[int | None, str | None]:
        created = None
        try:
            stable = self.kube.raw_deployment(self.ns, self.stable_name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            canary = self.kube.raw_deployment(self.ns, self.canary_name)
            total = self.settings.replicas or 1
            stable = self.kube.create_deployment(self.ns, traffic.stable_from_canary(
                canary, self.stable_name, total, owner))
            created = (f"Deployment {self.stable_name} created from {canary['metadata']['name']} "
                       f"({total} replicas)")
        followed = None if created else self._follow_chart(stable)
        autoscaled = self._ensure_autoscaler(owner)
        return self._version(stable), "; ".join(filter(None, (created, followed, autoscaled))) or None

    def _follow_chart(self, stable: dict) -> str | None:
        """A chart change that keeps the version (a new image, the recorder turned on, other
        resources) reaches the stable too: while the canary Deployment (the chart's) runs the
        version the stable runs, the stable takes its pod template, a rolling update that keeps
        ready pods until new ones are ready. A new version waits for its rollout instead."""
        canary = self.kube.raw_deployment(self.ns, self.canary_name)
        version = self._version(stable)
        template = (canary.get("spec") or {}).get("template") or {}
        if version is None or self._version(canary) != version or \
                template.get("spec") == stable["spec"]["template"].get("spec"):
            return None
        self.restore(template)
        return (f"Deployment {self.stable_name} updated to the pod template of {self.canary_name} "
                f"(the chart changed it; version {version} unchanged)")

    def _ensure_autoscaler(self, owner: dict) -> str | None:
        """Keeps the HPA of spec.deployment.autoscaling on the stable Deployment (it survives
        promotions: they change the stable's pod template, not the Deployment)."""
        autoscaling = self.settings.autoscaling
        if not autoscaling:
            return None
        wanted = traffic.hpa_spec(self.stable_name, autoscaling)
        try:
            found = self.kube.get_hpa(self.ns, self.stable_name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.kube.create_hpa(self.ns, {"metadata": {"name": self.stable_name,
                                                        "ownerReferences": [owner]},
                                           "spec": wanted})
            return (f"HorizontalPodAutoscaler {self.stable_name} created "
                    f"({wanted['minReplicas']}-{wanted['maxReplicas']} replicas)")
        if any(found.get("spec", {}).get(key) != value for key, value in wanted.items()):
            self.kube.patch_hpa(self.ns, self.stable_name, {"spec": wanted})
        return None

    def read_state(self) -> dict:
        candidate, env = self.spec.candidate, self.settings.version_env
        stable = self.kube.raw_deployment(self.ns, self.stable_name)
        canary = self.kube.raw_deployment(self.ns, self.canary_name)
        if not candidate.version:
            raise TrafficError("Deployment mode needs spec.candidate.version")
        served = traffic.deployment_version(canary, env)
        if served is not None and str(served) != str(candidate.version):
            raise TrafficError(
                f"Deployment {self.canary_name} runs version {served} ({env}), not the candidate "
                f"{candidate.version}: deploy the candidate as the canary first "
                "(chart value models.<rf|tf>.canary.version)")
        # The Deployments name versions, not store locations: no storage URI (locate.py finds
        # the golden sets from spec.store and the version).
        return {"stable_version": self._version(stable), "candidate_version": candidate.version,
                # the replica total to split, as found at the start
                "replicas": int(stable.get("spec", {}).get("replicas") or 1)}

    def _total(self, replicas: int | None = None) -> int:
        """The stable's replicas to split against: the HPA's current choice when one owns them
        (`replicas`: the total found when the rollout started)."""
        if self.settings.autoscaling:
            stable = self.kube.raw_deployment(self.ns, self.stable_name)
            current = int((stable.get("spec") or {}).get("replicas") or 0)
            # none at the 100 % step: then the count found when the rollout started
            return current or max(1, replicas or 1)
        return self.settings.replicas or replicas or 1

    def share(self, weight: int, replicas: int | None = None) -> int:
        return traffic.replica_share(*self._split(self._total(replicas), weight, canary_running=True))

    def replicas_not_ready(self) -> str | None:
        stable = self.kube.raw_deployment(self.ns, self.stable_name)
        wanted = int((stable.get("spec") or {}).get("replicas") or 0)
        if wanted and traffic.deployment_ready(stable, wanted):
            return None
        ready = int((stable.get("status") or {}).get("readyReplicas") or 0)
        return f"{ready} of {wanted} replicas of Deployment {self.stable_name} ready"

    def _split(self, total: int, weight: int, canary_running: bool) -> tuple[int, int]:
        """(stable, canary) replicas carrying `weight` % on the canary."""
        if not canary_running:
            return total, 0
        autoscaling = self.settings.autoscaling
        if autoscaling:  # the HPA owns the stable's count; only the canary's is ours
            return traffic.autoscaled_split(total, weight, autoscaling.max_replicas)
        return traffic.replica_split(total, weight)

    def _move(self, status: RolloutStatus, weight: int, canary_running: bool) -> bool:
        total = self._total(status.replicas)
        stable_replicas, canary_replicas = self._split(total, weight, canary_running)
        # Scale up first; scale down only once what stays has its pods ready (on the current
        # template), so that callers of the model's Service always find a ready pod.
        wanted = {self.stable_name: stable_replicas, self.canary_name: canary_replicas}
        current = {name: self.kube.raw_deployment(self.ns, name) for name in wanted}
        for name, replicas in wanted.items():
            if replicas > 0 and (current[name].get("spec") or {}).get("replicas") != replicas:
                self.kube.scale_deployment(self.ns, name, replicas)
                current[name] = self.kube.raw_deployment(self.ns, name)
        if any(replicas > 0 and not traffic.deployment_ready(current[name], replicas)
               for name, replicas in wanted.items()):
            return False
        if not self._routed(wanted):
            return False
        for name, replicas in wanted.items():
            if replicas == 0 and (current[name].get("spec") or {}).get("replicas") != 0:
                self.kube.scale_deployment(self.ns, name, 0)
        return True

    def _routed(self, wanted: dict[str, int]) -> bool:
        """Every wanted ready pod is behind its track's Service: the endpoints controller follows
        a Deployment's readiness with a lag, and until then the split is not the one reported
        (a Service that does not exist is not checked)."""
        for replicas, service in zip(wanted.values(), self.services()):
            if replicas <= 0:
                continue
            try:
                routed = len(self.kube.endpoint_urls(self.ns, service, path=""))
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if routed < replicas:
                return False
        return True

    def set_weights(self, status: RolloutStatus, weight: int) -> bool:
        return self._move(status, weight, canary_running=True)

    def promote(self, status: RolloutStatus) -> bool:
        self.restore(self.kube.raw_deployment(self.ns, self.canary_name)["spec"]["template"])
        # the stable Deployment now runs the candidate and serves everything
        return self._move(status, 0, canary_running=False)

    def restore(self, template: dict) -> None:
        """The stable Deployment runs `template`'s pod spec and version label (a promotion, or
        the post-promotion watch's rollback to the template it kept)."""
        self.kube.patch_deployment(self.ns, self.stable_name, traffic.promotion_patch(
            {"spec": {"template": template}}))

    def stable_version(self) -> int | None:
        return self._version(self.kube.raw_deployment(self.ns, self.stable_name))

    def rollback(self, status: RolloutStatus) -> bool:
        return self._move(status, 0, canary_running=False)

    def settle(self, status: RolloutStatus) -> bool:
        return self._move(status, 0, canary_running=False)


class HttpRouteRouter(DeploymentRouter):
    """The Deployment engine behind a Gateway API HTTPRoute: backend weights carry the split;
    both Deployments run the whole replica total while a canary is in progress."""

    def share(self, weight: int, replicas: int | None = None) -> int:
        return int(weight)

    def _split(self, total: int, weight: int, canary_running: bool) -> tuple[int, int]:
        name = self.settings.http_route
        stable_service, canary_service = self.services()
        route = self.kube.get_route(self.ns, name)
        self.kube.patch_route(self.ns, name, {"spec": {"rules": traffic.route_rules(
            route, stable_service, canary_service, weight if canary_running else 0)}})
        return total, (total if canary_running else 0)


def for_spec(kube: Kube, ns: str, spec: RolloutSpec) -> Router:
    """The router of `spec.mode` (and, for Deployment mode, of how traffic is split)."""
    if spec.mode == "Deployment":
        cls = HttpRouteRouter if spec.deployment.http_route else DeploymentRouter
    else:
        cls = {"Knative": KnativeRouter, "Standard": StandardRouter}[spec.mode]
    return cls(kube, ns, spec)
