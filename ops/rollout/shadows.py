"""The shadow of a ModelRollout's engine, and one look at it in the shadow step.

`of` is the one place that picks the kind: `shadow.Shadow` (a Deployment and Service) on the
Deployment engine, `shadow_isvc.IsvcShadow` (an InferenceService of its own) on KServe's.
`analyse` is what each analysis of the shadow step judges (shadow_step.py decides on it).
"""
from __future__ import annotations

from ops.rollout import analysis, endpoints, lab
from ops.rollout.kube import Kube
from ops.rollout.shadow import Shadow
from ops.rollout.shadow_isvc import IsvcShadow


def of(kube: Kube, ns: str, spec) -> Shadow:
    """The shadow of the spec's engine (the one place that picks): `Shadow` on the Deployment
    engine, an InferenceService of its own on KServe's."""
    return Shadow(kube, ns, spec) if spec.mode == "Deployment" else IsvcShadow(kube, ns, spec)


def analyse(kube: Kube, router, spec, status, golden, reference) -> tuple[dict, dict]:
    """(judged checks, the lab gate's figures) of one look at the shadow: the lab gate, and the
    controller's served-correctly (`golden(spec, status, url)`) and reference-set checks
    (`reference(spec, status, stable_url, url)`) on the shadow; no traffic figures (callers send
    the shadow nothing)."""
    figures = lab.look(spec.lab_gate, spec.model_name, status.stable_version,
                       status.candidate_version, spec.endpoints.timeout_s)
    shadow = of(kube, router.ns, spec)
    waiting = shadow.not_ready()
    if waiting:
        ready = {"name": "shadowReady", "value": None, "threshold": None,
                 "result": analysis.INCONCLUSIVE, "note": waiting}
        return analysis.add_checks({"checks": [], "canary": {}, "stable": {}},
                                   [ready, lab.check(figures)]), figures
    url = shadow.url()
    stable_url = endpoints.direct_urls(kube, router, endpoints.base_urls(router))[0]
    result = analysis.judge(
        spec.analysis, {"error": "not measured on a shadow"}, None,
        golden(spec, status, url) if spec.analysis.golden_set else None,
        status.candidate_version,
        reference(spec, status, stable_url, url) if spec.analysis.reference_set else None)
    kept = [c for c in result["checks"] if c["name"] != "metrics"]
    return analysis.add_checks(dict(result, checks=kept), [lab.check(figures)]), figures
