"""Calibrated decisions and intervals from the repeated CV's out-of-fold predictions.

Per limit L the decision score is the decision head's score for "above L" (training_job.decision;
the predicted ppb where no head is given, the baseline reported beside it). With the calibration
lots' scores:

- accept iff prediction < a, where a is the k-th smallest score among contaminated lots (true
  > L), k = floor(alpha (n+ + 1)): for a new contaminated lot exchangeable with the n+ calibration
  ones, P(accepted) <= k / (n+ + 1) <= alpha (split-conformal / conformal risk control for the
  false-accept rate). k = 0 (fewer than 1/alpha - 1 contaminated lots): nothing is accepted.
- reject iff prediction > r, r the k-th largest score among clean lots, k = floor(beta (n- + 1)):
  P(a clean lot rejected) <= beta the same way.
- otherwise: send to the lab.

The 90 % interval is split-conformal in a transformed space: the half-width q is the
ceil((n + 1) level)-th smallest |f(y) - f(prediction)|, and [f^-1(f(p) - q), f^-1(f(p) + q)].

The served thresholds come from all out-of-fold predictions of the training job's repeated CV
(the R repeats pooled, the order statistic taken at R times the rank). The reported figures are
nested, every step inside the outer fold: for each outer fold, thresholds and interval are fitted
on the training side's predictions from an inner CV of that training side alone
(evaluate.inner_scores: no model behind them saw the held-out fold) and judged on the held-out
side, predicted by the outer fold's model.
"""
from __future__ import annotations

import math

import numpy as np

from don_core.calibration import (ACCEPT, INTERVAL_TRANSFORMS, LAB, REJECT, SCORE_HEAD, SCORE_PPB,
                                  Calibration, LimitRule)
from don_core.schema import (DECISION_THRESHOLDS_PPB, FALSE_ACCEPT_TARGET, FALSE_REJECT_TARGET,
                             INTERVAL_LEVEL)

# sqrt, not log1p: on split seed 1 both covered 90 %, but log1p intervals were 47x wider
# (median 169,000 vs 3,600 ppb).
INTERVAL_TRANSFORM = "sqrt"
METHOD = ("split-conformal bounds on out-of-fold predictions of the repeated CV: accept below the "
          "floor(alpha (n+ + 1))-th smallest prediction of contaminated lots, reject above the "
          "floor(beta (n- + 1))-th largest prediction of clean lots, else lab; interval: "
          "split-conformal quantile of |sqrt residuals|")


def _kth(scores: np.ndarray, k: int) -> float | None:
    """k-th smallest (1-based) of scores; None for k < 1."""
    if k < 1:
        return None
    return float(np.partition(scores, k - 1)[k - 1])


def fit(y: np.ndarray, scores: np.ndarray, *, rows: int | None = None,
        limits=DECISION_THRESHOLDS_PPB, alpha: float = FALSE_ACCEPT_TARGET,
        beta: float = FALSE_REJECT_TARGET, level: float = INTERVAL_LEVEL,
        transform: str = INTERVAL_TRANSFORM, head: dict | None = None) -> Calibration:
    """Thresholds and interval from calibration lots' true ppb and predictions.

    `y`/`scores` may hold R pooled copies of `rows` lots (R repeats of the CV): ranks are taken
    at R times the single-copy rank, so the bound is the one for `rows` exchangeable lots.
    `head` ({limit: decision head score per lot}): the thresholds are set on it instead of the
    predicted ppb (the interval stays on ppb).
    """
    y, scores = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
    copies = len(y) / (rows or len(y))
    rules = []
    for limit in limits:
        positive = y > limit
        decided_on = scores if head is None else np.asarray(head[limit], dtype=float)
        pos, neg = decided_on[positive], decided_on[~positive]
        k_accept = math.floor(alpha * (len(pos) / copies + 1))
        k_reject = math.floor(beta * (len(neg) / copies + 1))
        accept = _kth(pos, round(k_accept * copies)) if len(pos) else None
        reject = _kth(-neg, round(k_reject * copies)) if len(neg) else None
        rules.append(LimitRule(int(limit), accept, None if reject is None else -reject))
    forward, _ = INTERVAL_TRANSFORMS[transform]
    residuals = np.abs(forward(y) - forward(np.maximum(scores, 0.0)))
    n = len(y) / copies
    k = min(math.ceil((n + 1) * level), n)
    halfwidth = float(np.sort(residuals)[max(round(k * copies), 1) - 1])
    return Calibration(tuple(rules), float(level), transform, halfwidth,
                       SCORE_PPB if head is None else SCORE_HEAD)


def judge(calibration: Calibration, y: np.ndarray, ppb: np.ndarray,
          head: dict | None = None) -> dict[str, float]:
    """What the calibration does on lots it was not fitted on."""
    y, ppb = np.asarray(y, dtype=float), np.asarray(ppb, dtype=float)
    out = {}
    for limit, decision in calibration.decisions(ppb, head).items():
        positive = y > limit
        out[f"false_accept_rate_{limit}"] = float(np.mean(decision[positive] == ACCEPT)) \
            if positive.any() else float("nan")
        out[f"false_reject_rate_{limit}"] = float(np.mean(decision[~positive] == REJECT)) \
            if (~positive).any() else float("nan")
        out[f"lab_share_{limit}"] = float(np.mean(decision == LAB))
    lower, upper = calibration.interval(ppb)
    out["interval_coverage"] = float(np.mean((y >= lower) & (y <= upper)))
    out["interval_median_width_ppb"] = float(np.median(upper - lower))
    return out


def calibrate(y: np.ndarray, predictions: dict, head: dict | None = None, **targets) -> dict:
    """The metadata.json calibration block: served thresholds, method, targets, the expected
    figures (all OOF lots), and the honest per-fold figures of the nested repeated CV.

    `predictions`: evaluate.cross_validate's, with the nested "inner" scores. `head`
    (evaluate.out_of_fold_scores of the decision head on the same folds: "oof" {limit: [r, i]},
    "inner" {limit: [r, k, i]}): the thresholds are set on the head's score, and the per-fold
    figures of thresholds on the regressor's ppb are reported beside them as the baseline."""
    oof, fold_of = predictions["oof"], predictions["fold"]
    if "inner" not in predictions or (head is not None and "inner" not in head):
        raise ValueError("calibrate needs the nested CV's inner scores (cross_validate(..., "
                         "nested=True), out_of_fold_scores): thresholds fitted on out-of-fold "
                         "predictions of models that saw the held-out fold are not honest")
    inner = predictions["inner"]
    repeats = oof.shape[0]
    pooled = None if head is None else {limit: h.reshape(-1) for limit, h in head["oof"].items()}
    served = fit(np.tile(y, repeats), oof.reshape(-1), rows=len(y), head=pooled, **targets)
    per_fold, baseline = [], []
    for r in range(repeats):
        for k in np.unique(fold_of[r]):
            held_out = fold_of[r] == k
            train_head, test_head = (None, None) if head is None else (
                {limit: h[r, k, ~held_out] for limit, h in head["inner"].items()},
                {limit: h[r, held_out] for limit, h in head["oof"].items()})
            fitted = fit(y[~held_out], inner[r, k, ~held_out], head=train_head, **targets)
            per_fold.append(judge(fitted, y[held_out], oof[r, held_out], test_head))
            if head is not None:
                on_ppb = fit(y[~held_out], inner[r, k, ~held_out], **targets)
                baseline.append(judge(on_ppb, y[held_out], oof[r, held_out]))
    summary = {key: _mean_sd([f[key] for f in per_fold]) for key in per_fold[0]}
    expected = judge(served, np.tile(y, repeats), oof.reshape(-1), pooled)
    doc = served.to_dict()
    for rule in doc["limits"]:
        limit = rule["limit_ppb"]
        rule["expected"] = {name: expected[f"{name}_{limit}"] for name in
                            ("false_accept_rate", "false_reject_rate", "lab_share")}
    doc["interval"]["expected_coverage"] = expected["interval_coverage"]
    doc["interval"]["method"] = f"split-conformal, |{served.interval_transform} residual|"
    return {**doc, "method": METHOD,
            "targets": {"false_accept_rate": targets.get("alpha", FALSE_ACCEPT_TARGET),
                        "false_reject_rate": targets.get("beta", FALSE_REJECT_TARGET),
                        "interval_level": served.interval_level},
            "calibration_rows": int(len(y)), "repeats": int(repeats),
            "cv": {"protocol": "nested: thresholds and interval fitted on each outer fold's "
                               "training side (predictions of an inner CV of that side alone), "
                               "judged on the held-out side",
                   "folds": len(per_fold), "summary": summary,
                   **({"baseline": {
                       "what": "the same folds with the thresholds on the regressor's ppb",
                       "summary": {key: _mean_sd([f[key] for f in baseline])
                                   for key in baseline[0] if not key.startswith("interval")}}}
                      if baseline else {})}}


def _mean_sd(values) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v))}


def format_table(results: dict[str, dict]) -> str:
    """Per family and limit: held-out false-accept, false-reject and lab share (mean +/- SD), the
    thresholds (ppb, or the decision head's score), and the lab share of thresholds on the ppb
    (the baseline) on the same folds where the decisions use the head."""
    lines = [f"{'family':<12}{'limit':>7}{'on':>6}{'accept <':>11}{'reject >':>11}"
             f"{'false accepts':>19}{'false rejects':>19}{'lab share':>19}{'interval cover':>19}"
             f"{'lab share on ppb':>19}"]
    for name, doc in results.items():
        s = doc["cv"]["summary"]
        baseline = doc["cv"].get("baseline", {}).get("summary")
        on_head = doc.get("score", SCORE_PPB) == SCORE_HEAD
        for rule in doc["limits"]:
            limit = rule["limit_ppb"]
            cells = [_cell(s[f"{key}_{limit}"]) for key in
                     ("false_accept_rate", "false_reject_rate", "lab_share")]
            thresholds = [_threshold(rule[key], on_head)
                          for key in ("accept_below_ppb", "reject_above_ppb")]
            lines.append(f"{name:<12}{limit:>7}{'head' if on_head else 'ppb':>6}"
                         + "".join(f"{t:>11}" for t in thresholds)
                         + "".join(f"{c:>19}" for c in cells)
                         + f"{_cell(s['interval_coverage']):>19}"
                         + (f"{_cell(baseline[f'lab_share_{limit}']):>19}" if baseline else ""))
    return "\n".join(lines)


def _threshold(value, on_head: bool) -> str:
    if value is None:
        return "never"
    return f"{value:.3f}" if on_head else f"{value:,.0f}"


def _cell(stat: dict) -> str:
    return "n/a" if stat["mean"] is None else f"{stat['mean']:.3f} +/- {stat['sd']:.3f}"

