"""The paired lab gate: is a candidate version non-inferior to the stable one on lab-matched lots?

Each lot the candidate answered in shadow and the lab has since measured gives a pair: the
stable's prediction, the candidate's, the lab's truth (ppb). Its score is the candidate's extra
error, in the scale the models are trained on, plus a charge for each false accept it adds:

    score = |L(candidate) - L(truth)| - |L(stable) - L(truth)|, L(x) = log1p(max(x, floor_ppb))
            + false_accept_weight * (candidate accepts - stable accepts), on lots above the limit

(a lot is accepted when its served decision is "accept", or without decisions when its
prediction is at or below the limit, as don_core.accuracy.false_accept_rate counts it). The gate
bounds the mean score: Fail when its lower bound is above `margin` (the candidate is worse by more
than the margin), Pass when its upper bound is at or below it (worse by at most the margin),
otherwise Hold; below `min_pairs` pairs it always holds.

Why this test (benchmarks/gates.py, real data; settings chosen on split seed 1, figures reported
on split seed 0; tables in benchmarks/README.md): the operator looks again after every new pair
and stops at the first Pass or Fail, so what counts is the share of candidates failed by n pairs
under that use. Of 90 settings (bound fixed or sequential, margin 0-0.05, false-accept weight 0 or
0.5, floor 0, 100 or 300 ppb, horizon 50 or 100) the one-sided normal bound on the mean
(z * sd / sqrt(n)) with margin 0.02, floor 300 ppb and no false-accept charge failed the most bad
candidates while failing at most 5 % of good retrains. The floor is the variance reduction that
counted: most of the log1p noise is clean lots read as 0 or 40 ppb. The margin, not alpha, is what
keeps repeated looks from failing good retrains (at margin 0 the same bound failed 7-34 % of them
by 30-200 pairs). The sequential bound (an asymptotic confidence sequence: the normal-mixture
boundary with the running standard deviation, Waudby-Smith et al. 2021), valid at any number of
looks, failed at most 5 % of good retrains at every margin but caught bad ones far later (mean
fail share over the bad kinds at most 42 % against 64 %); the false-accept charge added more noise than
signal (a weak candidate's extra error already shows in the log differences). Both stay
selectable. The mean of log differences rather than ranks (Wilcoxon) keeps the error's size.

Pure numpy and the standard library (the lean serving image has no scipy); no I/O.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from don_core.accuracy import FALSE_ACCEPT_LIMIT_PPB, log1p_errors
from don_core.calibration import ACCEPT, LAB, REJECT
from don_core.contract import LAB_GATE_ALPHA, LAB_GATE_MARGIN, LAB_GATE_MIN_PAIRS

PASS, FAIL, HOLD = "Pass", "Fail", "Hold"
SEQUENTIAL, FIXED = "sequential", "fixed"
# Defaults chosen by benchmarks/gates.py on its selection seeds (its README section says how).
# (margin, alpha and minPairs live in don_core.contract: the ModelRollout's labGate defaults too)
DEFAULT_MARGIN = LAB_GATE_MARGIN
DEFAULT_ALPHA = LAB_GATE_ALPHA
DEFAULT_MIN_PAIRS = LAB_GATE_MIN_PAIRS
DEFAULT_FALSE_ACCEPT_WEIGHT = 0.0  # a false accept's extra charge, in log1p units: off (measured)
# Below the floor every value counts as the floor: whether a clean lot reads 0 or 40 ppb changes
# no decision, yet in log1p it is the largest error there is, and the noisiest.
DEFAULT_FLOOR_PPB = 300.0
DEFAULT_HORIZON = 100  # the sequential bound is tightest near this many pairs
DEFAULT_METHOD = FIXED


@dataclass(frozen=True)
class GateResult:
    verdict: str            # Pass | Fail | Hold
    pairs: int
    statistic: float        # mean score (NaN with no pairs)
    lower: float            # the bound's two sides on the mean score
    upper: float
    reason: str             # one line
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def lot_scores(stable, candidate, truth, *, limit_ppb: float = FALSE_ACCEPT_LIMIT_PPB,
               false_accept_weight: float = DEFAULT_FALSE_ACCEPT_WEIGHT,
               floor_ppb: float = DEFAULT_FLOOR_PPB,
               stable_decisions=None, candidate_decisions=None) -> np.ndarray:
    """One score per lot (see the module docstring); ValueError naming any bad input."""
    s, c, t = (_ppb(v, name) for v, name in ((stable, "stable"), (candidate, "candidate"),
                                            (truth, "truth")))
    if not len(s) == len(c) == len(t):
        raise ValueError(f"length mismatch: {len(s)} stable, {len(c)} candidate and {len(t)} "
                         "truth values")
    if not (math.isfinite(false_accept_weight) and false_accept_weight >= 0):
        raise ValueError(f"false_accept_weight {false_accept_weight} must be a number >= 0")
    if not (math.isfinite(floor_ppb) and floor_ppb >= 0):
        raise ValueError(f"floor_ppb {floor_ppb} must be a number >= 0")
    if (stable_decisions is None) != (candidate_decisions is None):
        raise ValueError("decisions must be given for both stable and candidate, or for neither")
    if stable_decisions is None:
        s_acc, c_acc = s <= limit_ppb, c <= limit_ppb
    else:
        s_acc, c_acc = (_accepts(d, name, len(t)) for d, name in
                        ((stable_decisions, "stable"), (candidate_decisions, "candidate")))
    floored = np.maximum(t, floor_ppb)
    extra = (log1p_errors(np.maximum(c, floor_ppb), floored)
             - log1p_errors(np.maximum(s, floor_ppb), floored))
    added = (t > limit_ppb) * (c_acc.astype(float) - s_acc.astype(float))
    return extra + false_accept_weight * added


def half_width(sd, n, alpha: float, method: str = DEFAULT_METHOD,
               horizon: int = DEFAULT_HORIZON):
    """One-sided bound's distance from the mean at level alpha (numpy arrays welcome).
    fixed: z * sd / sqrt(n), valid at one pre-planned n. sequential: the normal-mixture boundary
    (the two-sided one at 2 * alpha), valid at every n at once."""
    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    if method == FIXED:
        return NormalDist().inv_cdf(1 - alpha) * sd / np.sqrt(n)
    if method != SEQUENTIAL:
        raise ValueError(f"unknown method {method!r} (expected {SEQUENTIAL} or {FIXED})")
    a = 2 * alpha
    rho2 = (-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / horizon
    v = n * rho2 + 1
    return sd * np.sqrt(2 * v / (n * n * rho2) * np.log(np.sqrt(v) / a))


def judge(stable, candidate, truth, *, margin: float = DEFAULT_MARGIN,
          alpha: float = DEFAULT_ALPHA, min_pairs: int = DEFAULT_MIN_PAIRS,
          limit_ppb: float = FALSE_ACCEPT_LIMIT_PPB,
          false_accept_weight: float = DEFAULT_FALSE_ACCEPT_WEIGHT,
          floor_ppb: float = DEFAULT_FLOOR_PPB,
          stable_decisions=None, candidate_decisions=None, method: str = DEFAULT_METHOD,
          horizon: int = DEFAULT_HORIZON) -> GateResult:
    """The verdict on the pairs so far (arrays per lab-matched lot, ppb)."""
    _check_settings(margin, alpha, min_pairs, horizon, method)
    scores = lot_scores(stable, candidate, truth, limit_ppb=limit_ppb,
                        false_accept_weight=false_accept_weight, floor_ppb=floor_ppb,
                        stable_decisions=stable_decisions, candidate_decisions=candidate_decisions)
    n = len(scores)
    t = np.asarray(truth, dtype=float)
    contaminated = t > limit_ppb
    s_acc = _accepted(stable, stable_decisions, limit_ppb)
    c_acc = _accepted(candidate, candidate_decisions, limit_ppb)
    figures = {"margin": margin, "alpha": alpha, "minPairs": min_pairs, "method": method,
               "horizon": horizon, "limitPpb": limit_ppb, "falseAcceptWeight": false_accept_weight,
               "floorPpb": floor_ppb,
               "contaminatedLots": int(contaminated.sum()),
               "stableFalseAccepts": int((s_acc & contaminated).sum()),
               "candidateFalseAccepts": int((c_acc & contaminated).sum())}
    if n == 0:
        return GateResult(HOLD, 0, math.nan, math.nan, math.nan,
                          f"no pairs yet; {min_pairs} needed", figures)
    mean = float(scores.mean())
    sd = float(scores.std(ddof=1)) if n > 1 else 0.0
    width = float(half_width(sd, n, alpha, method, horizon))
    lower, upper = mean - width, mean + width
    figures["meanExtraLog1pError"] = float(np.mean(log1p_errors(candidate, t)
                                                   - log1p_errors(stable, t)))
    bound = f"mean score {mean:+.4f} (bounds {lower:+.4f} .. {upper:+.4f}) on {n} pairs"
    if n < min_pairs:
        return GateResult(HOLD, n, mean, lower, upper,
                          f"{n} pairs, {min_pairs} needed before a verdict; {bound}", figures)
    if lower > margin:
        return GateResult(FAIL, n, mean, lower, upper,
                          f"candidate worse than stable by more than {margin}: {bound}", figures)
    if upper <= margin:
        return GateResult(PASS, n, mean, lower, upper,
                          f"candidate non-inferior within {margin}: {bound}", figures)
    return GateResult(HOLD, n, mean, lower, upper,
                      f"undecided, more pairs needed: {bound} straddle the margin {margin}",
                      figures)


def _check_settings(margin, alpha, min_pairs, horizon, method) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin {margin!r} must be a number >= 0")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise ValueError(f"alpha {alpha!r} must be above 0 and below 0.5")
    if isinstance(min_pairs, bool) or not isinstance(min_pairs, int) or min_pairs < 2:
        raise ValueError(f"min_pairs {min_pairs!r} must be an integer >= 2")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon {horizon!r} must be an integer >= 1")
    if method not in (SEQUENTIAL, FIXED):
        raise ValueError(f"unknown method {method!r} (expected {SEQUENTIAL} or {FIXED})")


def _ppb(values, name: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: not numbers") from None
    if a.ndim != 1:
        raise ValueError(f"{name}: expected one value per lot, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: NaN or infinite value at lot {int(np.argmin(np.isfinite(a)))}")
    if np.any(a < 0):
        raise ValueError(f"{name}: negative ppb {a[a < 0][0]:g} at lot {int(np.argmax(a < 0))}")
    return a


def _accepts(decisions, name: str, n: int) -> np.ndarray:
    d = np.asarray(decisions, dtype=object)
    if d.shape != (n,):
        raise ValueError(f"{name} decisions: expected {n} values, got shape {d.shape}")
    unknown = [v for v in d if v not in (ACCEPT, REJECT, LAB)]
    if unknown:
        raise ValueError(f"{name} decisions: unknown decision {unknown[0]!r} (expected "
                         f"{ACCEPT}, {REJECT} or {LAB})")
    return d == ACCEPT


def _accepted(predictions, decisions, limit_ppb) -> np.ndarray:
    if decisions is not None:
        return np.asarray(decisions, dtype=object) == ACCEPT
    return np.asarray(predictions, dtype=float) <= limit_ppb
