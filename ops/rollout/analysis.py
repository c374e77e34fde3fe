"""Judge one analysis window: each figure against its threshold, then one verdict. The thresholds
are decided in one place, spec.AnalysisSpec (from spec.analysis and the contract's defaults).

Verdicts: Pass (every check passed), Fail (some check failed), Inconclusive (no check failed but
some could not be made: too few requests, canary not serving the candidate yet, stable down).
"""
from __future__ import annotations

from don_core.contract import ONNX_ATOL_PPB, ONNX_RTOL
from ops.rollout.spec import AnalysisSpec

# The golden check's name: the share of the recorded rows the canary reproduces (ops/rollout/golden.py)
SERVED_CORRECTLY = "servedCorrectly"
PASS, FAIL, INCONCLUSIVE = "Pass", "Fail", "Inconclusive"


def _check(name: str, value, threshold, passed: bool | None, note: str = "") -> dict:
    result = PASS if passed else (INCONCLUSIVE if passed is None else FAIL)
    check = {"name": name, "value": value, "threshold": threshold, "result": result}
    if note:
        check["note"] = note
    return check


def judge(analysis: AnalysisSpec, canary: dict, stable: dict | None, golden: dict | None,
          expected_version: int | None, reference: dict | None = None) -> dict:
    """`analysis`: the thresholds (spec.AnalysisSpec, where each is decided);
    `canary`/`stable`: metrics summaries (requests, successRate, p99LatencyMs) or {'error': ...};
    `golden`: {'canary': golden.served_correctly's figures|{'error'}}, {'unavailable': True,
    'canary': {'error'}} or None when disabled;
    `reference`: the same for the reference set (ops/rollout/reference.py `compare`), or
    {'unavailable': True, 'error': ...}, or None when disabled. The golden check (is the candidate
    served correctly?) and the reference checks (does it generalise as well as the stable?) are
    separate checks with their own results."""
    checks = []
    if "error" in canary:
        checks.append(_check("metrics", None, None, None, canary["error"]))
    else:
        enough = canary["requests"] >= analysis.min_requests
        note = "" if enough else (f"{canary['requests']} canary requests in the window, "
                                  f"{analysis.min_requests} needed")
        rate = canary["successRate"]
        checks.append(_check("successRate", rate, analysis.min_success_rate,
                             (rate >= analysis.min_success_rate) if enough else None, note))
        p99 = canary["p99LatencyMs"]
        checks.append(_check("p99LatencyMs", p99, analysis.max_p99_latency_ms,
                             (p99 <= analysis.max_p99_latency_ms) if enough and p99 is not None
                             else None, note))
    if golden is not None:
        checks.extend(_golden_checks(golden, expected_version, analysis.min_served_correctly))
    if reference is not None:
        checks.extend(c for c in _reference_checks(analysis, reference, expected_version)
                      if c not in checks)  # one canaryVersion check when both find it
    return _verdict(checks, canary, stable)


def add_checks(result: dict, checks: list[dict]) -> dict:
    """A judged analysis with more checks (e.g. ops/rollout/live_accuracy.py), judged again."""
    return _verdict(result["checks"] + checks, result["canary"], result["stable"])


def _verdict(checks: list[dict], canary: dict, stable: dict | None) -> dict:
    results = {c["result"] for c in checks}
    verdict = FAIL if FAIL in results else (INCONCLUSIVE if INCONCLUSIVE in results else PASS)
    failed = [c for c in checks if c["result"] != PASS]
    summary = "; ".join(_describe(c) for c in failed) or "all checks passed"
    return {"verdict": verdict, "checks": checks, "summary": summary,
            "canary": canary, "stable": stable or {}}


def _golden_checks(golden: dict, expected_version: int | None, least: float) -> list[dict]:
    canary = golden.get("canary", {})
    if golden.get("unavailable"):
        return [_check(SERVED_CORRECTLY, None, least, None,
                       canary.get("error", "golden set unavailable"))]
    if "error" in canary:
        # A canary that cannot answer the rows is not served correctly.
        return [_check(SERVED_CORRECTLY, None, least, False, canary["error"])]
    served = canary.get("version")
    if expected_version is not None and served is not None and str(served) != str(expected_version):
        return [_check("canaryVersion", served, expected_version, None,
                       f"canary endpoint serves version {served}, not {expected_version} yet")]
    if "unrecorded" in canary:
        return [_check(SERVED_CORRECTLY, None, least, None, canary["unrecorded"])]
    share, rows = canary["agreement"], canary["rows"]
    worst = canary.get("maxAbsDiffPpb")
    return [_check(SERVED_CORRECTLY, share, least, share >= least,
                   f"{round(share * rows)} of {rows} rows within {ONNX_ATOL_PPB} ppb + "
                   f"{ONNX_RTOL:g} x the prediction recorded at training time (max |diff| "
                   f"{'n/a' if worst is None else f'{worst:.3g}'} ppb)")]


def _reference_checks(analysis: AnalysisSpec, reference: dict,
                      expected_version: int | None) -> list[dict]:
    error_limit = analysis.max_reference_error_increase
    far_limit = analysis.max_reference_false_accept_increase
    if reference.get("unavailable"):
        return [_check("referenceSet", None, None, None, reference["error"])]
    canary, stable = reference["canary"], reference["stable"]
    if "error" in canary:
        return [_check("referenceErrorIncrease", None, error_limit, False, canary["error"])]
    served = canary.get("version")
    if expected_version is not None and served is not None and str(served) != str(expected_version):
        return [_check("canaryVersion", served, expected_version, None,
                       f"canary endpoint serves version {served}, not {expected_version} yet")]
    if "error" in stable:
        return [_check("referenceErrorIncrease", None, error_limit, None,
                       f"stable cannot answer the reference set: {stable['error']}")]
    rows = reference["rows"]
    increase = reference["relativeIncrease"]
    checks = [_check("referenceErrorIncrease", increase, error_limit, increase <= error_limit,
                     f"log1p MAE on {rows} reference rows: canary {canary['mae']:.4f} vs stable "
                     f"{stable['mae']:.4f}")]
    far = reference.get("falseAcceptIncrease")
    if far is None:
        checks.append(_check("referenceFalseAcceptIncrease", None, far_limit, True,
                             "not measurable: no reference row is above 1000 ppb"))
    else:
        checks.append(_check("referenceFalseAcceptIncrease", far, far_limit, far <= far_limit,
                             f"false-accept rate at 1000 ppb on {reference['positives']} "
                             f"contaminated reference rows: canary {canary['falseAcceptRate']:.3f}"
                             f" vs stable {stable['falseAcceptRate']:.3f}"))
    return checks


def _describe(check: dict) -> str:
    if check.get("note") and check["value"] is None:
        return f"{check['name']}: {check['note']}"
    value = check["value"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    relation = "below" if check["name"] in ("successRate", SERVED_CORRECTLY) else "above"
    text = f"{check['name']} {shown} ({relation} limit {check['threshold']})" \
        if check["result"] == FAIL else f"{check['name']}: {check.get('note') or shown}"
    return text
