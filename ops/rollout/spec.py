"""A ModelRollout spec with every default filled in.

The CRD's schema defaults are applied by the API server; the operator fills in the same ones
(don_core.contract.ROLLOUT_DEFAULTS) so that it also works on objects written before a default
existed (tests keep the CRD in step with them).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from don_core.contract import ON_NO_LABELS, SHADOW_STEP
from don_core.contract import ROLLOUT_DEFAULTS as DEFAULTS

MODES = ("Knative", "Standard", "Deployment")
# Once: one rollout of spec.candidate, then the object is done (`python -m ops rollout start`).
# Desired: spec.candidate.version is the version that should serve (the chart's models.<m>.version);
# each time it differs from the live one (and was not tried already) a new rollout starts.
DELIVERIES = ("Once", "Desired")
_INTERVAL = re.compile(r"^([0-9]+)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


class SpecError(ValueError):
    """A spec the operator cannot act on; the message names the field."""


def parse_interval(text: str) -> int:
    match = _INTERVAL.match(str(text))
    if not match:
        raise SpecError(f"duration {text!r} must look like 30s, 5m or 1h")
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


@dataclass(frozen=True)
class RolloutSpec:
    raw: dict
    target: str
    mode: str
    steps: tuple[int, ...]
    interval_s: int
    progress_deadline_s: int
    # steps began with "shadow": the candidate first answers mirrored copies only (shadow_step.py)
    shadow: bool = False
    shadow_deadline_s: int = 0

    @property
    def desired(self) -> bool:
        return self.raw["delivery"] == "Desired"

    @property
    def analysis(self) -> dict:
        return self.raw["analysis"]

    @property
    def metrics(self) -> dict:
        return self.raw["metrics"]

    @property
    def endpoints(self) -> dict:
        return self.raw["endpoints"]

    @property
    def candidate(self) -> dict:
        return self.raw.get("candidate") or {}

    @property
    def paused(self) -> bool:
        return bool(self.raw.get("paused"))

    @property
    def action(self) -> str:
        return self.raw.get("action") or ""

    @property
    def model_name(self) -> str:
        return self.endpoints.get("modelName") or self.target


def parse_spec(spec: dict) -> RolloutSpec:
    raw = with_defaults(spec)
    target = raw.get("target")
    if not target:
        raise SpecError("spec.target (the InferenceService name) is required")
    if raw["mode"] not in MODES:
        raise SpecError(f"spec.mode {raw['mode']!r} is not one of {', '.join(MODES)}")
    if raw["delivery"] not in DELIVERIES:
        raise SpecError(f"spec.delivery {raw['delivery']!r} is not one of {', '.join(DELIVERIES)}")
    candidate = raw.get("candidate") or {}
    if not candidate.get("version") and not candidate.get("storageUri"):
        raise SpecError("spec.candidate needs a version or a storageUri")
    if raw["delivery"] == "Desired" and not candidate.get("version"):
        raise SpecError("spec.delivery Desired needs spec.candidate.version (the desired version)")
    shadow = _shadow(raw)
    try:
        steps = tuple(int(s) for s in raw["steps"][1 if shadow else 0:])
    except (TypeError, ValueError):
        raise SpecError(f"spec.steps {raw['steps']} must be percentages, after an optional first "
                        f"{SHADOW_STEP!r}") from None
    if not steps or any(not 1 <= s <= 100 for s in steps):
        raise SpecError(f"spec.steps {list(steps)} must be percentages between 1 and 100")
    if list(steps) != sorted(set(steps)):
        raise SpecError(f"spec.steps {list(steps)} must be strictly increasing")
    if raw["metrics"].get("source") == "Prometheus" and not raw["metrics"].get("prometheusUrl"):
        raise SpecError("spec.metrics.source is Prometheus but spec.metrics.prometheusUrl is unset")
    return RolloutSpec(raw=raw, target=target, mode=raw["mode"], steps=steps,
                       interval_s=parse_interval(raw["interval"]),
                       progress_deadline_s=parse_interval(raw["progressDeadline"]), shadow=shadow,
                       shadow_deadline_s=parse_interval(raw["shadow"]["deadline"]) if shadow else 0)


def _shadow(raw: dict) -> bool:
    """Whether the steps begin with the shadow step, checking what it needs."""
    if SHADOW_STEP in raw["steps"][1:]:
        raise SpecError(f"spec.steps {raw['steps']}: {SHADOW_STEP!r} may only be the first step")
    if raw["steps"][:1] != [SHADOW_STEP]:
        return False
    if raw["mode"] != "Deployment":
        raise SpecError(f"spec.steps: the {SHADOW_STEP} step needs mode Deployment (a KServe "
                        "InferenceService has no shadow of its own yet)")
    if not raw["labGate"].get("recorderUrl"):
        raise SpecError("spec.steps: the shadow step needs spec.labGate.recorderUrl (the "
                        "prediction recorder that pairs the stable's answers with the shadow's)")
    if raw["shadow"]["onNoLabels"] not in ON_NO_LABELS:
        raise SpecError(f"spec.shadow.onNoLabels {raw['shadow']['onNoLabels']!r} is not one of "
                        f"{', '.join(ON_NO_LABELS)}")
    return True
