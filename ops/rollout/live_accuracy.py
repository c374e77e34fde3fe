"""Optional gate on live accuracy: the recorder's false-accept rate of canary vs stable.

`spec.analysis.liveAccuracy` (off unless set): the recorder joins the lab's reference results to
the predictions each version made (ops/recorder). Lab results arrive hours or days after the
predictions, so the gate only bites once both versions have `minMatched` matched samples in the
window: before that, and while no matched sample is contaminated, the check passes with a note.
A recorder that cannot be read makes the check Inconclusive (the rollout holds).
"""
from __future__ import annotations

import requests

from don_core.contract import ACCURACY_PATH
from ops.rollout.analysis import FAIL, INCONCLUSIVE, PASS
from ops.rollout.spec import LiveAccuracySpec

NAME = "liveFalseAcceptIncrease"


def _check(value, limit, result: str, note: str) -> dict:
    return {"name": NAME, "value": value, "threshold": limit, "result": result, "note": note}


def fetch(recorder_url: str, model: str, timeout: float) -> dict:
    response = requests.get(recorder_url.rstrip("/") + ACCURACY_PATH, params={"model": model}, timeout=timeout)
    response.raise_for_status()
    return response.json()


def judge(settings: LiveAccuracySpec, report: dict, model: str, stable_version, canary_version) -> dict:
    """One analysis check from the recorder's /v1/accuracy document."""
    limit, window, needed = settings.max_false_accept_increase, settings.window, settings.min_matched
    threshold = str(settings.threshold_ppb)
    found = {}
    for entry in report.get("results", []):
        if entry.get("model") == model and entry.get("window") == window:
            found[str(entry.get("version"))] = entry
    sides = {"stable": found.get(str(stable_version)), "canary": found.get(str(canary_version))}
    matched = {side: (entry or {}).get("matched", 0) for side, entry in sides.items()}
    if min(matched.values()) < needed:
        return _check(None, limit, PASS, f"not applied yet: {matched['canary']} canary and {matched['stable']} "
                                         f"stable samples matched to lab results in {window}, {needed} needed")
    rates = {side: entry["thresholds"].get(threshold, {}).get("falseAcceptRate") for side, entry in sides.items()}
    if rates["canary"] is None or rates["stable"] is None:
        return _check(None, limit, PASS, f"not measurable: no matched sample above {threshold} ppb in {window}")
    increase = rates["canary"] - rates["stable"]
    return _check(increase, limit, PASS if increase <= limit else FAIL,
                  f"live false-accept rate at {threshold} ppb over {window}: canary {rates['canary']:.3f} "
                  f"({matched['canary']} samples) vs stable {rates['stable']:.3f} ({matched['stable']} samples)")


def check(settings: LiveAccuracySpec, model: str, stable_version, canary_version, timeout: float) -> dict:
    try:
        report = fetch(settings.recorder_url, model, timeout)
    except (requests.RequestException, ValueError) as exc:
        return _check(None, settings.max_false_accept_increase, INCONCLUSIVE,
                      f"recorder unreadable: {str(exc)[:200]}")
    return judge(settings, report, model, stable_version, canary_version)
