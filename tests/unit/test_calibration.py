"""The calibrated decisions: the conformal bounds hold on fresh lots, and the served structure."""
from __future__ import annotations

import numpy as np
import pytest

from don_core.artifact import ArtifactError
from don_core.calibration import ACCEPT, LAB, REJECT, Calibration, LimitRule
from training_job import calibration


def _lots(n, rng):
    """A heavy-tailed ppb target and a noisy prediction of it, exchangeable lots."""
    y = np.expm1(rng.normal(6.5, 1.8, n)).clip(0)
    return y, y * np.exp(rng.normal(0, 0.8, n))


def test_bounds_hold_on_fresh_lots():
    rng = np.random.default_rng(3)
    far, frr, cover = [], [], []
    for _ in range(200):
        y, p = _lots(300, rng)
        fitted = calibration.fit(y, p, limits=(1000,), alpha=0.05, beta=0.10)
        y_new, p_new = _lots(300, rng)
        judged = calibration.judge(fitted, y_new, p_new)
        far.append(judged["false_accept_rate_1000"])
        frr.append(judged["false_reject_rate_1000"])
        cover.append(judged["interval_coverage"])
    # split-conformal: expected rates at or below the targets, coverage at or above the level
    assert np.mean(far) <= 0.05 + 0.005 and np.mean(frr) <= 0.10 + 0.01
    assert 0.89 <= np.mean(cover) <= 0.95
    assert np.mean(far) > 0.02  # tight, not trivially conservative


def test_pooled_repeats_give_the_single_copy_thresholds():
    rng = np.random.default_rng(1)
    y, p = _lots(400, rng)
    single = calibration.fit(y, p)
    pooled = calibration.fit(np.tile(y, 5), np.tile(p, 5), rows=len(y))
    assert pooled == single


def test_too_few_contaminated_lots_accept_nothing():
    y = np.array([0, 10, 20, 30, 2000, 3000, 50, 60.0])
    fitted = calibration.fit(y, y, limits=(1000,))
    assert fitted.rules[0].accept_below_ppb is None   # floor(0.05 * 3) = 0: no bound possible
    assert set(fitted.decisions(np.array([0.0, 5000]))[1000]) <= {LAB, REJECT}


def test_decisions_intervals_and_crossing_thresholds():
    rule = LimitRule(1000, accept_below_ppb=400, reject_above_ppb=1500)
    assert list(rule.decide(np.array([0, 399.9, 400, 1500, 1500.1]))) == \
        [ACCEPT, ACCEPT, LAB, LAB, REJECT]
    crossed = LimitRule(1000, accept_below_ppb=900, reject_above_ppb=700)
    assert list(crossed.decide(np.array([600, 800, 950]))) == [ACCEPT, ACCEPT, REJECT]
    cal = Calibration((rule,), 0.9, "sqrt", 10.0)
    lower, upper = cal.interval(np.array([0.0, 400.0]))
    assert lower.tolist() == [0.0, 100.0] and upper.tolist() == [100.0, 900.0]


def test_all_limits_at_once_decide_as_each_rule_does():
    rules = (LimitRule(1000, 0.2, 0.4), LimitRule(5000, None, 0.3), LimitRule(20000, 0.1, None),
             LimitRule(30000, 0.5, 0.2))               # crossed: accept wins
    cal = Calibration(rules, 0.9, "sqrt", 10.0, "decision_head")
    rng = np.random.default_rng(7)
    scores = rng.uniform(0, 0.6, (50, 4)).astype(np.float32)
    scores[0] = [0.2, 0.3, 0.1, np.nan]                # on the thresholds, and NaN
    decided = cal.decide(scores)
    for j, rule in enumerate(rules):
        assert decided[:, j].tolist() == rule.decide(scores[:, j].astype(np.float64)).tolist()
    by_limit = cal.decisions(None, {rule.limit_ppb: scores[:, j] for j, rule in enumerate(rules)})
    assert [by_limit[r.limit_ppb].tolist() for r in rules] == decided.T.tolist()
    on_ppb = Calibration(rules[:2], 0.9, "sqrt", 10.0)
    ppb = np.array([0.1, 0.25, 0.35, 0.5])
    assert on_ppb.decide(ppb.reshape(-1, 1)).T.tolist() == [r.decide(ppb).tolist() for r in rules[:2]]


@pytest.mark.parametrize("transform", ["sqrt", "log1p"])
def test_one_row_decides_and_intervals_as_the_batch_does(transform):
    """A 1-row batch is decided by plain float compares (the served hot path): exactly as the
    array path, on the thresholds, NaN and crossed rules included; and a row's interval is
    exactly its interval in the batch."""
    rules = (LimitRule(1000, 0.2, 0.4), LimitRule(5000, None, 0.3), LimitRule(20000, 0.1, None),
             LimitRule(30000, 0.5, 0.2))
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 0.6, (40, 4)).astype(np.float32)
    scores[0] = [0.2, 0.3, 0.1, np.nan]
    for score_kind, values in (("decision_head", scores), ("ppb", scores[:, :1])):
        cal = Calibration(rules, 0.9, transform, 0.7, score_kind)
        batch = cal.decide(values)
        assert [cal.decide(values[i:i + 1])[0].tolist() for i in range(len(values))] == \
            batch.tolist()
    ppb = np.concatenate([[0.0, -1.0], rng.uniform(0, 30000, 30)]).astype(np.float32)
    lower, upper = cal.interval(ppb)
    for i in range(len(ppb)):
        one = cal.interval(ppb[i:i + 1])
        assert (one[0].tolist(), one[1].tolist()) == ([lower[i]], [upper[i]])


def test_calibrate_reports_honest_folds_and_metadata_round_trip():
    rng = np.random.default_rng(2)
    y, _ = _lots(200, rng)
    oof = np.stack([y * np.exp(rng.normal(0, 0.8, 200)) for _ in range(2)])
    fold = np.stack([rng.permutation(np.arange(200) % 5) for _ in range(2)])
    inner = _inner(y, fold, rng)
    doc = calibration.calibrate(y, {"oof": oof, "fold": fold, "inner": inner})
    assert doc["cv"]["folds"] == 10 and doc["repeats"] == 2
    served = Calibration.from_metadata({"calibration": doc})
    assert served.limits == (1000, 5000) and served.interval_transform == "sqrt"
    assert "floor(alpha" in doc["method"]
    assert "lab share" in calibration.format_table({"sklearn": doc})
    assert doc["cv"]["protocol"].startswith("nested")
    with pytest.raises(ValueError, match="nested"):   # never the leaky outer OOF scores
        calibration.calibrate(y, {"oof": oof, "fold": fold})


def _inner(y, fold, rng, sd=0.8, score=None):
    """Inner-CV scores [r, k, i] shaped like evaluate.inner_scores: NaN on outer fold k."""
    repeats, folds = fold.shape[0], int(fold.max()) + 1
    base = (lambda: y * np.exp(rng.normal(0, sd, len(y)))) if score is None else score
    inner = np.stack([np.stack([base() for _ in range(folds)]) for _ in range(repeats)])
    inner[fold[:, None, :] == np.arange(folds)[None, :, None]] = np.nan
    return inner


def test_thresholds_come_from_the_inner_scores_only():
    """Per outer fold the thresholds are fitted on inner[r, k] of its training side: change the
    outer out-of-fold scores of the training side and the held-out figures stay the same."""
    rng = np.random.default_rng(5)
    y, p = _lots(200, rng)
    fold = np.stack([rng.permutation(np.arange(200) % 5)])
    inner = _inner(y, fold, rng)
    doc = calibration.calibrate(y, {"oof": p[None], "fold": fold, "inner": inner})
    figures = []
    for k in range(5):
        held_out = fold[0] == k
        fitted = calibration.fit(y[~held_out], inner[0, k, ~held_out])
        figures.append(calibration.judge(fitted, y[held_out], p[held_out]))
    assert doc["cv"]["summary"]["lab_share_1000"]["mean"] == pytest.approx(
        np.mean([f["lab_share_1000"] for f in figures]))
    assert doc["cv"]["summary"]["interval_coverage"]["mean"] == pytest.approx(
        np.mean([f["interval_coverage"] for f in figures]))


def test_thresholds_on_the_decision_head_score():
    """With a head score per limit, the bounds hold on it; the interval stays on ppb, and the
    same folds' thresholds on ppb are reported beside it as the baseline."""
    rng = np.random.default_rng(4)
    far, frr = [], []
    for _ in range(200):
        y, p = _lots(300, rng)
        score = (y > 1000) + rng.normal(0, 0.6, len(y))
        fitted = calibration.fit(y, p, limits=(1000,), head={1000: score})
        assert fitted.score == "decision_head"
        y_new, p_new = _lots(300, rng)
        judged = calibration.judge(fitted, y_new, p_new,
                                   {1000: (y_new > 1000) + rng.normal(0, 0.6, len(y_new))})
        far.append(judged["false_accept_rate_1000"])
        frr.append(judged["false_reject_rate_1000"])
    assert 0.02 < np.mean(far) <= 0.055 and np.mean(frr) <= 0.11
    with pytest.raises(ValueError, match="decision head"):
        fitted.decisions(p)                   # a head calibration cannot decide on ppb
    assert fitted.interval(p)[0].shape == p.shape

    y, p = _lots(200, rng)
    oof = np.stack([p, p * np.exp(rng.normal(0, 0.3, 200))])
    fold = np.stack([rng.permutation(np.arange(200) % 5) for _ in range(2)])
    head = {"oof": {limit: np.stack([(y > limit) + rng.normal(0, 0.3, 200) for _ in range(2)])
                    for limit in (1000, 5000)},
            "inner": {limit: _inner(y, fold, rng,
                                    score=lambda limit=limit: (y > limit) + rng.normal(0, 0.3, 200))
                      for limit in (1000, 5000)}}
    predictions = {"oof": oof, "fold": fold, "inner": _inner(y, fold, rng, sd=0.3)}
    doc = calibration.calibrate(y, predictions, head)
    served = Calibration.from_metadata({"calibration": doc})
    assert served.score == "decision_head" and doc["score"] == "decision_head"
    # a score this sharp sends fewer lots to the lab than the noisy ppb does
    base = doc["cv"]["baseline"]["summary"]
    assert doc["cv"]["summary"]["lab_share_1000"]["mean"] < base["lab_share_1000"]["mean"]
    table = calibration.format_table({"sklearn": doc})
    assert "head" in table and "lab share on ppb" in table
    plain = calibration.calibrate(y, predictions)
    assert plain["score"] == "ppb" and "baseline" not in plain["cv"]


@pytest.mark.parametrize("broken", [
    {"limits": [], "interval": {"level": 0.9, "transform": "sqrt", "halfwidth": 1},
     "score": "tea leaves"},
    {"limits": [{"limit_ppb": 1000}], "interval": {"level": 0.9, "transform": "sqrt",
                                                   "halfwidth": 1}},
    {"limits": [], "interval": {"level": 0.9, "transform": "cube", "halfwidth": 1}},
    {"limits": [], "interval": {"level": 1.5, "transform": "sqrt", "halfwidth": 1}},
    {"limits": [{"limit_ppb": 1000, "accept_below_ppb": "x", "reject_above_ppb": None}],
     "interval": {"level": 0.9, "transform": "sqrt", "halfwidth": 1}},
])
def test_malformed_calibration_is_refused(broken):
    with pytest.raises(ArtifactError, match="calibration is malformed"):
        Calibration.from_metadata({"calibration": broken})
    assert Calibration.from_metadata({}) is None   # versions from before calibration


class _SeenRows:
    """Predicts, for every row, the sum of the row numbers it was fitted on (X holds them)."""

    def __init__(self, as_dict=False):
        self.as_dict = as_dict

    def fit(self, X, y):
        self.seen = float(X[:, 0].sum())
        return self

    def predict(self, X):
        score = np.full(len(X), self.seen)
        return {1000: score, 5000: -score} if self.as_dict else score


def test_inner_scores_come_from_models_that_never_saw_the_outer_fold():
    from training_job import evaluate
    rng = np.random.default_rng(6)
    y, _ = _lots(60, rng)
    X = np.arange(len(y), dtype=float)[:, None]
    cv = evaluate.cross_validate(_SeenRows, X, y, folds=4, repeats=2, seed=1,
                                 progress=lambda _: None, nested=True)
    fold, inner = cv["predictions"]["fold"], cv["predictions"]["inner"]
    total = X[:, 0].sum()
    for r in range(2):
        for k in range(4):
            assert np.isnan(inner[r, k, fold[r] == k]).all()
            for i in np.flatnonzero(fold[r] != k):   # fitted on the folds other than k and i's
                unseen = np.isin(fold[r], (k, fold[r, i]))
                assert inner[r, k, i] == total - X[unseen, 0].sum()
    heads = evaluate.out_of_fold_scores(lambda: _SeenRows(as_dict=True), X, y, folds=4,
                                        repeats=2, seed=1)
    assert np.array_equal(heads["inner"][1000], inner, equal_nan=True)
    assert np.array_equal(heads["inner"][5000], -inner, equal_nan=True)
    assert np.array_equal(heads["oof"][1000], cv["predictions"]["oof"])
