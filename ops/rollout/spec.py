"""A ModelRollout spec, parsed once into typed objects with every default filled in.

The CRD's schema defaults are applied by the API server; the operator fills in the same ones
(don_core.contract.ROLLOUT_DEFAULTS) so that it also works on objects written before a default
existed (tests keep the CRD in step with them). Every threshold of the canary gate is decided here,
in `AnalysisSpec`; the rest of the operator reads these objects, never the object's dicts.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from don_core.contract import LIVE_ACCURACY_DEFAULTS, ON_NO_LABELS, ONNX_MIN_AGREEMENT, SHADOW_STEP
from don_core.contract import ROLLOUT_DEFAULTS as DEFAULTS

MODES = ("Knative", "Standard", "Deployment")
# Once: one rollout of spec.candidate, then the object is done (`python -m ops rollout start`).
# Desired: spec.candidate.version is the version that should serve (the chart's models.<m>.version);
# each time it differs from the live one (and was not tried already) a new rollout starts.
DELIVERIES = ("Once", "Desired")
_INTERVAL = re.compile(r"^([0-9]+)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
SIDES = ("stable", "canary")  # the two versions an analysis compares, as spec.endpoints names them


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


def parse_interval(text: str, field: str = "duration") -> int:
    match = _INTERVAL.match(str(text))
    if not match:
        raise SpecError(f"{field} {text!r} must look like 30s, 5m or 1h")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def with_defaults(spec: dict) -> dict:
    """A deep copy of `spec` with defaults merged in (one level deep for the sub-objects)."""
    merged = copy.deepcopy(DEFAULTS)
    for key, value in (spec or {}).items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key].update(copy.deepcopy(value))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Fields:
    """Reads one sub-object's fields by type; a value of the wrong type is a SpecError naming
    spec.<path>.<key>."""

    def __init__(self, values: dict | None, path: str, defaults: dict | None = None):
        if values is not None and not isinstance(values, dict):
            raise SpecError(f"{path} must be an object")
        self.values, self.path = {**(defaults or {}), **(values or {})}, path

    def _get(self, key: str):
        value = self.values.get(key)
        return None if value is None or value == "" else value

    def _wrong(self, key: str, what: str) -> SpecError:
        return SpecError(f"{self.path}.{key} {self.values.get(key)!r} must be {what}")

    def number(self, key: str) -> float | None:
        value = self._get(key)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value  # as written: 500 stays 500 in messages and the status
        raise self._wrong(key, "a number")

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise self._wrong(key, "an integer")

    def text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None or isinstance(value, str):
            return value
        raise self._wrong(key, "a string")

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        raise self._wrong(key, "true or false")

    def required(self, value, key: str):
        if value is None:
            raise SpecError(f"{self.path}.{key} is required")
        return value


@dataclass(frozen=True)
class LiveAccuracySpec:
    """spec.analysis.liveAccuracy: the recorder's live false-accept rate, canary vs stable."""
    recorder_url: str
    threshold_ppb: int
    window: str
    max_false_accept_increase: float
    min_matched: int

    @classmethod
    def parse(cls, values: dict) -> LiveAccuracySpec:
        f = _Fields(values, "spec.analysis.liveAccuracy", LIVE_ACCURACY_DEFAULTS)
        return cls(recorder_url=f.required(f.text("recorderUrl"), "recorderUrl"),
                   threshold_ppb=f.integer("thresholdPpb"), window=f.text("window"),
                   max_false_accept_increase=f.number("maxFalseAcceptIncrease"),
                   min_matched=f.integer("minMatched"))


@dataclass(frozen=True)
class AnalysisSpec:
    """The canary gate: every threshold an analysis judges against (analysis.py applies them).
    The served-correctly check's threshold is the contract's ONNX agreement rule, not a setting."""
    min_success_rate: float
    max_p99_latency_ms: float
    failure_limit: int
    min_requests: int
    golden_set: bool
    reference_set: bool
    max_reference_error_increase: float
    max_reference_false_accept_increase: float
    live_accuracy: LiveAccuracySpec | None = None
    min_served_correctly: float = ONNX_MIN_AGREEMENT

    @classmethod
    def parse(cls, values: dict) -> AnalysisSpec:
        f = _Fields(values, "spec.analysis")
        live = values.get("liveAccuracy")
        return cls(min_success_rate=f.number("minSuccessRate"),
                   max_p99_latency_ms=f.number("maxP99LatencyMs"),
                   failure_limit=f.integer("failureLimit"), min_requests=f.integer("minRequests"),
                   golden_set=f.flag("goldenSet"), reference_set=f.flag("referenceSet"),
                   max_reference_error_increase=f.number("maxReferenceErrorIncrease"),
                   max_reference_false_accept_increase=f.number("maxReferenceFalseAcceptIncrease"),
                   live_accuracy=LiveAccuracySpec.parse(live) if live else None)


@dataclass(frozen=True)
class MetricsSpec:
    source: str  # Direct | Prometheus (sources.py)
    requests_metric: str
    latency_metric: str
    prometheus_url: str | None

    @classmethod
    def parse(cls, values: dict) -> MetricsSpec:
        f = _Fields(values, "spec.metrics")
        spec = cls(source=f.text("source"), requests_metric=f.text("requestsMetric"),
                   latency_metric=f.text("latencyMetric"), prometheus_url=f.text("prometheusUrl"))
        if spec.source == "Prometheus" and not spec.prometheus_url:
            raise SpecError("spec.metrics.source is Prometheus but spec.metrics.prometheusUrl is unset")
        return spec


@dataclass(frozen=True)
class EndpointsSpec:
    """Where the model servers answer when not the engine's Services (endpoints.py)."""
    model_name: str | None
    timeout_s: float
    urls: dict  # side (stable|canary) -> base URL, only those given
    metrics_urls: dict  # side -> /metrics URL, only those given
    shadow_url: str | None = None  # the shadow step's shadow (shadow.py), when not its Service

    @classmethod
    def parse(cls, values: dict) -> EndpointsSpec:
        f = _Fields(values, "spec.endpoints")
        return cls(model_name=f.text("modelName"), timeout_s=f.number("timeoutSeconds"),
                   urls={side: f.text(f"{side}Url") for side in SIDES if f.text(f"{side}Url")},
                   metrics_urls={side: f.text(f"{side}MetricsUrl") for side in SIDES
                                 if f.text(f"{side}MetricsUrl")},
                   shadow_url=f.text("shadowUrl"))


@dataclass(frozen=True)
class StoreSpec:
    """Where the golden and reference sets are read (locate.py); unset: found otherwise."""
    root: str | None
    model: str | None

    @classmethod
    def parse(cls, values: dict) -> StoreSpec:
        f = _Fields(values, "spec.store")
        return cls(root=f.text("root"), model=f.text("model"))


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int

    @classmethod
    def parse(cls, values: dict) -> AutoscalingSpec:
        f = _Fields(values, "spec.deployment.autoscaling")
        return cls(*(f.required(f.integer(key), key) for key in (
            "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage")))


@dataclass(frozen=True)
class DeploymentSpec:
    """Deployment mode: the chart's Deployments and Services (routers.DeploymentRouter)."""
    version_env: str
    stable: str
    canary: str
    stable_service: str
    canary_service: str
    replicas: int | None
    http_route: str | None
    autoscaling: AutoscalingSpec | None

    @classmethod
    def parse(cls, values: dict, target: str) -> DeploymentSpec:
        f = _Fields(values, "spec.deployment")
        autoscaling = values.get("autoscaling")
        return cls(version_env=f.text("versionEnv"), stable=f.text("stable") or target,
                   canary=f.text("canary") or f"{target}-canary",
                   stable_service=f.text("stableService") or f"{target}-stable",
                   canary_service=f.text("canaryService") or f"{target}-canary",
                   replicas=f.integer("replicas"), http_route=f.text("httpRoute"),
                   autoscaling=AutoscalingSpec.parse(autoscaling) if autoscaling else None)


@dataclass(frozen=True)
class CandidateSpec:
    """The new version: `version`, or where it is published (`storage_uri`), or both."""
    version: int | None
    storage_uri: str | None


@dataclass(frozen=True)
class LabGateSpec:
    """spec.labGate: the paired lab gate on the recorder's pairs (lab.py, don_core.lab_gate)."""
    min_pairs: int
    margin: float
    alpha: float
    recorder_url: str | None = None  # required by the shadow step (GET /v1/pairs)

    @classmethod
    def parse(cls, values: dict) -> LabGateSpec:
        f = _Fields(values, "spec.labGate")
        return cls(f.integer("minPairs"), f.number("margin"), f.number("alpha"), f.text("recorderUrl"))


@dataclass(frozen=True)
class ShadowSpec:
    """spec.shadow: the shadow step, when spec.steps begins with it (shadow_step.py)."""
    percent: float
    deadline: str  # as written, for messages
    deadline_s: int
    on_no_labels: str  # RollBack | Proceed
    watch: str = "0s"  # as written, for messages
    watch_s: int = 0  # the post-promotion watch (watch.py); 0: none

    @classmethod
    def parse(cls, values: dict) -> ShadowSpec:
        f = _Fields(values, "spec.shadow")
        spec = cls(percent=f.number("percent"), deadline=f.text("deadline"),
                   deadline_s=parse_interval(f.text("deadline"), "spec.shadow.deadline"),
                   on_no_labels=f.text("onNoLabels"), watch=f.text("watch"),
                   watch_s=parse_interval(f.text("watch"), "spec.shadow.watch"))
        if spec.on_no_labels not in ON_NO_LABELS:
            raise SpecError(f"spec.shadow.onNoLabels {spec.on_no_labels!r} is not one of "
                            f"{', '.join(ON_NO_LABELS)}")
        return spec


@dataclass(frozen=True)
class RolloutSpec:
    target: str
    mode: str
    delivery: str
    steps: tuple[int, ...]
    interval_s: int
    progress_deadline: str  # as written, for messages
    progress_deadline_s: int
    paused: bool
    action: str
    candidate: CandidateSpec
    analysis: AnalysisSpec
    metrics: MetricsSpec
    endpoints: EndpointsSpec
    store: StoreSpec
    deployment: DeploymentSpec
    inference_service: dict | None  # the template of the InferenceService the operator creates
    lab_gate: LabGateSpec
    shadow: ShadowSpec | None = None  # steps began with "shadow" (then `steps` are the rest)

    @property
    def desired(self) -> bool:
        return self.delivery == "Desired"

    @property
    def model_name(self) -> str:
        return self.endpoints.model_name or self.target


def parse_spec(spec: dict) -> RolloutSpec:
    raw = with_defaults(spec)
    target = raw.get("target")
    if not target:
        raise SpecError("spec.target (the InferenceService name) is required")
    if raw["mode"] not in MODES:
        raise SpecError(f"spec.mode {raw['mode']!r} is not one of {', '.join(MODES)}")
    if raw["delivery"] not in DELIVERIES:
        raise SpecError(f"spec.delivery {raw['delivery']!r} is not one of {', '.join(DELIVERIES)}")
    fields = _Fields(raw.get("candidate"), "spec.candidate")
    candidate = CandidateSpec(version=fields.integer("version"), storage_uri=fields.text("storageUri"))
    if not candidate.version and not candidate.storage_uri:
        raise SpecError("spec.candidate needs a version or a storageUri")
    if raw["delivery"] == "Desired" and not candidate.version:
        raise SpecError("spec.delivery Desired needs spec.candidate.version (the desired version)")
    shadow = _shadow(raw)
    try:
        steps = tuple(int(s) for s in raw["steps"][1 if shadow else 0:])
    except (TypeError, ValueError):
        raise SpecError(f"spec.steps {raw['steps']!r} must be a list of percentages, after an "
                        f"optional first {SHADOW_STEP!r}") from None
    if not steps or any(not 1 <= s <= 100 for s in steps):
        raise SpecError(f"spec.steps {list(steps)} must be percentages between 1 and 100")
    if list(steps) != sorted(set(steps)):
        raise SpecError(f"spec.steps {list(steps)} must be strictly increasing")
    return RolloutSpec(
        target=target, mode=raw["mode"], delivery=raw["delivery"], steps=steps,
        interval_s=parse_interval(raw["interval"], "spec.interval"),
        progress_deadline=str(raw["progressDeadline"]),
        progress_deadline_s=parse_interval(raw["progressDeadline"], "spec.progressDeadline"),
        paused=bool(raw.get("paused")), action=raw.get("action") or "", candidate=candidate,
        analysis=AnalysisSpec.parse(raw["analysis"]), metrics=MetricsSpec.parse(raw["metrics"]),
        endpoints=EndpointsSpec.parse(raw["endpoints"]), store=StoreSpec.parse(raw["store"]),
        deployment=DeploymentSpec.parse(raw["deployment"], target),
        inference_service=raw.get("inferenceService") or None,
        lab_gate=LabGateSpec.parse(raw["labGate"]), shadow=shadow)


def _shadow(raw: dict) -> ShadowSpec | None:
    """The shadow step's settings when the steps begin with it, checking what it needs."""
    steps = list(raw["steps"] or [])
    if SHADOW_STEP in steps[1:]:
        raise SpecError(f"spec.steps {steps}: {SHADOW_STEP!r} may only be the first step")
    if steps[:1] != [SHADOW_STEP]:
        return None
    if not LabGateSpec.parse(raw["labGate"]).recorder_url:
        raise SpecError("spec.steps: the shadow step needs spec.labGate.recorderUrl (the "
                        "prediction recorder that pairs the stable's answers with the shadow's)")
    shadow = ShadowSpec.parse(raw["shadow"])
    if shadow.watch_s and raw["mode"] != "Deployment":
        raise SpecError(f"spec.shadow.watch {shadow.watch}: the post-promotion watch needs mode "
                        "Deployment (on KServe the previous version does not run on as a shadow "
                        "yet); set it to 0s")
    return shadow
