"""The calibrated decision rule and prediction interval a version serves: metadata.json's
"calibration" block (written by training_job.calibration, read by the model server). numpy only:
the lean serving image loads it."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from don_core.errors import ArtifactError

CALIBRATION_KEY = "calibration"
# What a calibration's thresholds apply to: the predicted ppb, or the decision head's score per
# limit (don_core.artifact: the head's files).
SCORE_PPB, SCORE_HEAD = "ppb", "decision_head"
ACCEPT, REJECT, LAB = "accept", "reject", "lab"
# Spaces the interval half-width is measured in (residual = |f(y) - f(prediction)|).
INTERVAL_TRANSFORMS = {"log1p": (np.log1p, np.expm1),
                       "sqrt": (np.sqrt, lambda t: np.square(np.maximum(t, 0.0)))}


@dataclass(frozen=True)
class LimitRule:
    """One regulatory limit: accept below one threshold, reject above the other, else lab.

    `accept_below_ppb` None: nothing is accepted (too few contaminated calibration lots to bound
    the false-accept rate); `reject_above_ppb` None: nothing is rejected.
    """
    limit_ppb: int
    accept_below_ppb: float | None
    reject_above_ppb: float | None

    def decide(self, ppb: np.ndarray) -> np.ndarray:
        """accept | reject | lab per row. Accept wins where the thresholds cross: both bounds
        still hold, since accepts stay below the accept threshold and rejects above the other."""
        out = np.full(ppb.shape, LAB, dtype=object)
        if self.reject_above_ppb is not None:
            out[ppb > self.reject_above_ppb] = REJECT
        if self.accept_below_ppb is not None:
            out[ppb < self.accept_below_ppb] = ACCEPT
        return out


# Calibration.decide's codes 0, 1, 2
_DECISIONS = np.array([LAB, ACCEPT, REJECT], dtype=object)


@dataclass(frozen=True)
class Calibration:
    """The served part of metadata.json's calibration block (the rest is evidence for people)."""
    rules: tuple[LimitRule, ...]
    interval_level: float
    interval_transform: str
    interval_halfwidth: float   # in interval_transform units
    # What the rules' thresholds apply to: SCORE_PPB, or SCORE_HEAD (the decision head's score per
    # limit; the rules' *_ppb fields then hold score values)
    score: str = SCORE_PPB

    @property
    def limits(self) -> tuple[int, ...]:
        return tuple(rule.limit_ppb for rule in self.rules)

    def decisions(self, ppb: np.ndarray,
                  scores: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """Per limit: accept | reject | lab. `scores` (the head's, per limit) are required when
        the calibration is on the head's score."""
        if self.score == SCORE_HEAD:
            if scores is None:
                raise ValueError("this calibration decides on the decision head's scores")
            values = np.column_stack([np.asarray(scores[limit], np.float64).reshape(-1)
                                      for limit in self.limits])
        else:
            values = np.asarray(ppb, dtype=np.float64).reshape(-1, 1)
        decided = self.decide(values)
        return {limit: decided[:, j] for j, limit in enumerate(self.limits)}

    def decide(self, values: np.ndarray) -> np.ndarray:
        """accept | reject | lab for every limit at once, as LimitRule.decide: `values` [N, L]
        (column j: the score or ppb that limits[j] decides on; [N, 1]: one for all) -> [N, L].
        One pass of array operations per batch, whatever the number of limits (the served
        path); one row (most requests) by float compares, which beat numpy's per-call cost."""
        if values.shape[0] == 1:
            row = values[0].tolist()
            if len(row) == 1:  # [1, 1]: the one value every limit decides on
                row *= len(self.rules)
            return np.array([[ACCEPT if value < low else REJECT if value > high else LAB
                              for value, low, high in zip(row, *self._bound_lists)]],
                            dtype=object)
        accept, reject = self._bounds
        return _DECISIONS[np.where(values < accept, 1, (values > reject) * 2)]

    @functools.cached_property
    def _bound_lists(self) -> tuple[list[float], list[float]]:
        return tuple(bound.tolist() for bound in self._bounds)

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        # float64 arrays (compared with float32 scores, the scores are promoted, as
        # LimitRule.decide does); -inf / inf where a rule accepts / rejects nothing
        return (np.array([-np.inf if r.accept_below_ppb is None else r.accept_below_ppb
                          for r in self.rules], dtype=np.float64),
                np.array([np.inf if r.reject_above_ppb is None else r.reject_above_ppb
                          for r in self.rules], dtype=np.float64))

    def interval(self, ppb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        forward, inverse = INTERVAL_TRANSFORMS[self.interval_transform]
        if len(ppb) == 1:  # one row (most requests): the transforms on floats, no array work
            t = forward(max(float(ppb[0]), 0.0))
            return (np.array([inverse(max(t - self.interval_halfwidth, 0.0))]),
                    np.array([inverse(t + self.interval_halfwidth)]))
        t = forward(np.maximum(ppb, 0.0, dtype=np.float64))
        # both bounds in one pass ([2, N]: few numpy calls, which dominate for one row); both
        # inverses are increasing with inverse(0) = 0, so the lower bound is >= 0 as it is
        lower, upper = inverse(np.maximum(t + self._interval_offsets, 0.0))
        return lower, upper

    @functools.cached_property
    def _interval_offsets(self) -> np.ndarray:
        return np.array([[-self.interval_halfwidth], [self.interval_halfwidth]])

    def to_dict(self) -> dict:
        return {"limits": [{"limit_ppb": r.limit_ppb, "accept_below_ppb": r.accept_below_ppb,
                            "reject_above_ppb": r.reject_above_ppb} for r in self.rules],
                "score": self.score,
                "interval": {"level": self.interval_level, "transform": self.interval_transform,
                             "halfwidth": self.interval_halfwidth}}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Calibration | None":
        """None for a version trained before calibration existed; ArtifactError if malformed."""
        doc = metadata.get(CALIBRATION_KEY)
        if doc is None:
            return None
        try:
            rules = tuple(LimitRule(int(r["limit_ppb"]), _threshold(r["accept_below_ppb"]),
                                    _threshold(r["reject_above_ppb"])) for r in doc["limits"])
            interval = doc["interval"]
            made = cls(rules, float(interval["level"]), str(interval["transform"]),
                       float(interval["halfwidth"]), str(doc.get("score", SCORE_PPB)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"metadata.json calibration is malformed ({exc!r})") from None
        if made.interval_transform not in INTERVAL_TRANSFORMS or \
                not (0 < made.interval_level < 1) or not math.isfinite(made.interval_halfwidth) \
                or made.interval_halfwidth < 0 or len(set(made.limits)) != len(made.limits) \
                or any(limit <= 0 for limit in made.limits) \
                or made.score not in (SCORE_PPB, SCORE_HEAD):
            raise ArtifactError("metadata.json calibration is malformed (interval transform, "
                                "level, half-width, limits or score out of range)")
        return made


def _threshold(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"threshold {value} is not finite")
    return value
