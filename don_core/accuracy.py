"""Accuracy against the lab's truth, one set of formulas for training's evaluation, the rollout
gates, the recorder's live and paired figures and the paired lab gate.

Errors are in log1p(ppb), the scale the models are trained on, with negative values counted as
0 ppb. At a decision limit a lot is contaminated when the lab measured more than the limit, and
a prediction accepts it when at or below the limit: a false accept is a contaminated lot
accepted (a share of the contaminated lots), a false reject a clean lot rejected (a share of the
clean ones). A rate is NaN while its class has not been seen; balanced accuracy is NaN until
both have.
"""
from __future__ import annotations

import numpy as np

from don_core.schema import DECISION_THRESHOLDS_PPB

FALSE_ACCEPT_LIMIT_PPB = DECISION_THRESHOLDS_PPB[0]


def log1p_errors(predictions, targets) -> np.ndarray:
    """|log1p(prediction) - log1p(target)| per sample."""
    p = np.clip(np.asarray(predictions, dtype=float), 0.0, None)
    t = np.clip(np.asarray(targets, dtype=float), 0.0, None)
    return np.abs(np.log1p(p) - np.log1p(t))


def log1p_mae(predictions, targets) -> float:
    """Mean absolute error in log1p(ppb)."""
    return float(np.mean(log1p_errors(predictions, targets)))


def _classes(targets, predictions, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """(contaminated, rejected) per lot."""
    return np.asarray(targets, dtype=float) > limit, np.asarray(predictions, dtype=float) > limit


def false_accept_rate(targets, predictions, limit: float = FALSE_ACCEPT_LIMIT_PPB) -> float:
    """Share of contaminated lots (true above `limit`) predicted at or below it."""
    contaminated, rejected = _classes(targets, predictions, limit)
    return float(np.mean(~rejected[contaminated])) if contaminated.any() else float("nan")


def false_reject_rate(targets, predictions, limit: float = FALSE_ACCEPT_LIMIT_PPB) -> float:
    """Share of clean lots (true at or below `limit`) predicted above it."""
    contaminated, rejected = _classes(targets, predictions, limit)
    return float(np.mean(rejected[~contaminated])) if (~contaminated).any() else float("nan")


def balanced_accuracy(targets, predictions, limit: float = FALSE_ACCEPT_LIMIT_PPB) -> float:
    """Mean of the two classes' recall (contaminated lots rejected, clean lots accepted)."""
    contaminated, rejected = _classes(targets, predictions, limit)
    if contaminated.all() or not contaminated.any():
        return float("nan")  # one class only: undefined, not a perfect score
    return float((np.mean(rejected[contaminated]) + np.mean(~rejected[~contaminated])) / 2)


def or_none(value: float | None) -> float | None:
    """An undefined (NaN) figure as None, the way JSON documents show it."""
    return None if value is None or np.isnan(value) else float(value)
