"""The shadow step's objects on the KServe engines (Standard and Knative): the candidate as an
InferenceService of its own beside the target, answering mirrored copies only.

- InferenceService `<target>-shadow`: the target's predictor serving the candidate (storageUri, and
  the version env and pod label where the chart put them: traffic.retarget, as the routers make
  the canary), DON_SHADOW=1 in the model container's env (model_server/mirror.py: every answer
  recorded as the shadow's, nothing mirrored on), no canaryTrafficPercent, on track "shadow"
  without the model label. KServe gives it Services of its own (`<target>-shadow-predictor`...)
  that no caller's route names, so callers never reach it. Of the target's annotations only
  KServe's and Knative's (deployment mode, autoscaler) are kept; the chart's version annotations
  would say the wrong version.
- ConfigMap `<target>-mirror`, as on the Deployment engine (shadow.Shadow): the chart mounts it into
  the stable InferenceService's predictor pods, whose servers re-read it (no restart). It points at
  the shadow's URL: spec.endpoints.shadowUrl, else the address KServe reports (status.address.url,
  then status.url), else the engine's Service by KServe's naming (routers: Standard
  `<name>-predictor`, Knative `<name>`). KServe reports the address only once the shadow is
  reconciled, so `not_ready`, once the shadow is Ready, moves the ConfigMap onto it.
The post-promotion watch needs the Deployment engine (spec.py refuses it on these).
"""
from __future__ import annotations

import dataclasses

from don_core.contract import SHADOW_ENV
from ops.rollout import endpoints, routers, traffic
from ops.rollout.kube import ApiException
from ops.rollout.shadow import SHADOW_MARK, Shadow, shadow_labels
from ops.rollout.traffic import Served

# The target's annotations the shadow keeps: how KServe deploys and scales an InferenceService.
KEPT_ANNOTATIONS = ("serving.kserve.io/", "autoscaling.knative.dev/")


def shadow_isvc(target: dict, name: str, candidate: Served, owner: dict) -> dict:
    """The shadow InferenceService: `target`'s predictor serving `candidate`, marked a shadow."""
    meta = target.get("metadata") or {}
    predictor = traffic.retarget((target.get("spec") or {}).get("predictor") or {}, candidate)
    container = predictor[traffic.storage_key(predictor)]
    container["env"] = [e for e in container.get("env") or [] if e.get("name") != SHADOW_ENV] + [
        dict(SHADOW_MARK)]
    predictor["labels"] = shadow_labels(predictor.get("labels"))
    annotations = {key: value for key, value in (meta.get("annotations") or {}).items()
                   if key.startswith(KEPT_ANNOTATIONS)}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "labels": shadow_labels(meta.get("labels")),
                         "annotations": annotations, "ownerReferences": [owner]},
            "spec": {"predictor": predictor}}


def ready_condition(isvc: dict) -> str | None:
    """Why KServe does not report `isvc` Ready for its current spec (None when it does)."""
    status = isvc.get("status") or {}
    generation = int((isvc.get("metadata") or {}).get("generation") or 0)
    if "observedGeneration" in status and int(status["observedGeneration"] or 0) < generation:
        return "KServe has not reconciled its last change yet"
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return "no Ready condition yet"
    if ready.get("status") != "True":
        return ready.get("message") or ready.get("reason") or f"Ready is {ready.get('status')}"
    return None


class IsvcShadow(Shadow):
    """The shadow of one ModelRollout's KServe target (the same interface as shadow.Shadow)."""

    kind = "InferenceService"

    def _read(self) -> dict:
        return self.kube.get_isvc(self.ns, self.name)

    def url(self, found: dict | None = None) -> str:
        """spec.endpoints.shadowUrl, else the address KServe reports, else KServe's naming."""
        if self.spec.endpoints.shadow_url:
            return self.spec.endpoints.shadow_url
        try:
            status = ((found if found is not None else self._found()) or {}).get("status") or {}
        except ApiException:
            status = {}
        named = routers.for_spec(self.kube, self.ns, dataclasses.replace(self.spec, target=self.name))
        return ((status.get("address") or {}).get("url") or status.get("url")
                or endpoints.dns_url(self.ns, named.live_service()))

    def ensure(self, status, owner: dict) -> list[str]:
        return self.ensure_isvc(Served(status.candidate_storage_uri, status.candidate_version),
                                owner) + self.ensure_mirror(owner)

    def ensure_isvc(self, candidate: Served, owner: dict) -> list[str]:
        """The shadow InferenceService serving `candidate`: created, or retargeted when it serves
        another storageUri; what changed, for the Event."""
        found = self._found()
        if found is not None and traffic.stable_storage_uri(found) == candidate.uri:
            return []
        body = shadow_isvc(self.kube.get_isvc(self.ns, self.spec.target), self.name, candidate, owner)
        if found is not None:
            self.kube.patch_isvc(self.ns, self.name, {"spec": {"predictor": body["spec"]["predictor"]}})
            return [f"InferenceService {self.name} (now serving {candidate.uri})"]
        try:
            self.kube.create_isvc(self.ns, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return []
        return [f"InferenceService {self.name}"]

    def ensure_mirror(self, owner: dict) -> list[str]:
        return self._mirror_configmap(self.url(), owner)

    def _not_ready(self, found: dict) -> str | None:
        """None once KServe reports it Ready; then the mirror setting follows the address KServe
        reports."""
        why = ready_condition(found)
        if why:
            return f"the shadow is starting (InferenceService {self.name}: {why})"
        self._follow(found)
        return None

    def _follow(self, found: dict) -> None:
        """The mirror ConfigMap onto the shadow's reported address (left alone while there is none
        or it has no owner to keep)."""
        try:
            owners = (self.kube.get_configmap(self.ns, self.mirror_name).get("metadata") or {}).get(
                "ownerReferences") or []
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        if owners:
            self._mirror_configmap(self.url(found), owners[0])

    def remove(self) -> list[str]:
        """The mirror setting first (the stable stops copying), then the shadow itself."""
        return [f"{kind} {name}" for kind, name in (
            ("ConfigMap", self.mirror_name), ("InferenceService", self.name))
            if self.kube.delete(kind, self.ns, name)]
