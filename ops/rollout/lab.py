"""The paired lab gate inside a rollout: the recorder's lab-matched pairs of a stable version and
its shadow (GET /v1/pairs?detail=1, ops/recorder/pairs.py), judged by don_core.lab_gate.

`spec.labGate` (spec.LabGateSpec: recorderUrl, minPairs, margin, alpha). The verdict is Pass (non-inferior within
the margin), Fail (worse by more than it) or Hold (fewer than minPairs pairs, or undecided); a
recorder that cannot be read holds too, with the reason. `figures` is what the status, its history
and the Events show: pairs, the mean score and its bounds, and each version's false accepts and
false rejects at the false-accept limit.
"""
from __future__ import annotations

import math

import requests

from don_core import lab_gate
from don_core.contract import PAIRS_PATH
from don_core.accuracy import FALSE_ACCEPT_LIMIT_PPB

NAME = "labNonInferiority"  # its analysis check's name
PASS, FAIL, HOLD = lab_gate.PASS, lab_gate.FAIL, lab_gate.HOLD


def fetch(recorder_url: str, model: str, stable: int, candidate: int, timeout: float) -> dict:
    """The pairs document of (the served stable, the candidate in shadow), with the per-lot lists."""
    response = requests.get(recorder_url.rstrip("/") + PAIRS_PATH, timeout=timeout, params={
        "model": model, "stable": stable, "candidate": candidate, "detail": 1})
    response.raise_for_status()
    return response.json()


def _rounded(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else round(float(value), 4)


def judge(gate, doc: dict) -> dict:
    """The figures of one look at the pairs (`gate`: spec.LabGateSpec)."""
    detail = doc["detail"]
    result = lab_gate.judge(detail["stable_ppb"], detail["candidate_ppb"], detail["truth_ppb"],
                            margin=gate.margin, alpha=gate.alpha, min_pairs=gate.min_pairs,
                            limit_ppb=FALSE_ACCEPT_LIMIT_PPB)
    at_limit = doc.get("decisions", {}).get(str(FALSE_ACCEPT_LIMIT_PPB), {})
    figures = {"verdict": result.verdict, "pairs": result.pairs, "margin": gate.margin,
               "minPairs": gate.min_pairs, "meanScore": _rounded(result.statistic),
               "lower": _rounded(result.lower), "upper": _rounded(result.upper),
               "reason": result.reason}
    for side in ("stable", "candidate"):
        counts = at_limit.get(side) or {}
        figures[f"{side}FalseAccepts"] = counts.get("falseAccepts")
        figures[f"{side}FalseRejects"] = counts.get("falseRejects")
    return figures


def turned(doc: dict) -> dict:
    """The pairs document with its two sides exchanged."""
    detail = doc["detail"]
    return dict(doc, detail=dict(detail, stable_ppb=detail["candidate_ppb"],
                                 candidate_ppb=detail["stable_ppb"]),
                decisions={limit: dict(sides, stable=sides.get("candidate"),
                                       candidate=sides.get("stable"))
                           for limit, sides in (doc.get("decisions") or {}).items()})


def look(gate, model: str, stable: int, candidate: int, timeout: float,
         candidate_serves: bool = False) -> dict:
    """Fetch and judge; a recorder that cannot be read is a Hold naming why. `candidate_serves`:
    the post-promotion watch (watch.py), where the candidate serves and the stable answers the
    copies: the recorder pairs them the other way round, turned back here, so that the figures'
    stable and candidate stay the status's and the gate still judges the candidate."""
    try:
        if candidate_serves:
            doc = turned(fetch(gate.recorder_url, model, candidate, stable, timeout))
        else:
            doc = fetch(gate.recorder_url, model, stable, candidate, timeout)
        return judge(gate, doc)
    except (requests.RequestException, ValueError, KeyError) as exc:
        return {"verdict": HOLD, "pairs": None, "reason": f"recorder unreadable: {str(exc)[:200]}"}


def describe(figures: dict) -> str:
    """One line for messages and Events: the verdict with the figures that made it."""
    if figures.get("pairs") is None:
        return f"lab gate {figures['verdict']}: {figures['reason']}"
    return (f"lab gate {figures['verdict']} on {figures['pairs']} pairs: mean score "
            f"{_shown(figures['meanScore'])} (bounds {_shown(figures['lower'])} .. "
            f"{_shown(figures['upper'])}, margin {figures['margin']}); false accepts at "
            f"{FALSE_ACCEPT_LIMIT_PPB} ppb stable {figures['stableFalseAccepts']}, candidate "
            f"{figures['candidateFalseAccepts']}; false rejects stable "
            f"{figures['stableFalseRejects']}, candidate {figures['candidateFalseRejects']}")


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def check(figures: dict) -> dict:
    """The lab gate as one analysis check (ops/rollout/analysis.py's shape)."""
    result = {PASS: "Pass", FAIL: "Fail"}.get(figures["verdict"], "Inconclusive")
    bound = figures.get("lower") if result == "Fail" else figures.get("upper")
    return {"name": NAME, "value": bound, "threshold": figures.get("margin"),
            "result": result, "note": describe(figures)}
