"""Evaluation figures for DON regression, in the units a grain lab reads them."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from don_core.accuracy import balanced_accuracy, false_accept_rate
from don_core.schema import DECISION_THRESHOLDS_PPB

LIMIT = DECISION_THRESHOLDS_PPB[0]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All figures for one set of predictions (a CV fold or a hold-out split)."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    out = {
        "r2": r2_score(y_true, y_pred),
        "rmse_ppb": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae_ppb": mean_absolute_error(y_true, y_pred),
        "r2_log1p": r2_score(np.log1p(y_true), np.log1p(np.maximum(y_pred, 0))),
        "spearman": _spearman(y_true, y_pred),
    }
    for limit in DECISION_THRESHOLDS_PPB:
        out[f"balanced_accuracy_{limit}"] = balanced_accuracy(y_true, y_pred, limit)
    truth = y_true > LIMIT
    out[f"auc_{LIMIT}"] = roc_auc_score(truth, y_pred) if 0 < truth.sum() < len(truth) else \
        float("nan")
    # The grain buyer's risk: contaminated lots (true > limit) that would be accepted.
    out[f"false_accept_rate_{LIMIT}"] = false_accept_rate(y_true, y_pred, LIMIT)
    return {k: float(v) for k, v in out.items()}


def summarise(folds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, SD, median, min and max of every figure across folds (NaN folds left out)."""
    summary = {}
    for key in folds[0]:
        values = np.array([f[key] for f in folds], dtype=float)
        values = values[np.isfinite(values)]
        if not len(values):
            summary[key] = {"mean": None, "sd": None, "median": None, "min": None, "max": None,
                            "n": 0}
            continue
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1))
                        if len(values) > 1 else 0.0, "median": float(np.median(values)),
                        "min": float(values.min()), "max": float(values.max()),
                        "n": int(len(values))}
    return summary


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
