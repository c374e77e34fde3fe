"""don_core.accuracy: the one set of accuracy formulas, on lots worked out by hand."""
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from don_core.accuracy import (balanced_accuracy, false_accept_rate, false_reject_rate,
                               log1p_errors, log1p_mae, or_none)

# limit 1000: lots 0-2 contaminated (one accepted), lots 3-6 clean (one rejected)
TRUTH = [5000.0, 1500.0, 1001.0, 1000.0, 999.0, 0.0, 40.0]
PRED = [4000.0, 900.0, 1200.0, 1000.0, 2000.0, 10.0, 0.0]


def test_rates_at_the_limit():
    assert false_accept_rate(TRUTH, PRED, 1000) == pytest.approx(1 / 3)
    assert false_reject_rate(TRUTH, PRED, 1000) == pytest.approx(1 / 4)
    assert balanced_accuracy(TRUTH, PRED, 1000) == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_balanced_accuracy_is_sklearns_to_the_bit():
    rng = np.random.default_rng(0)
    truth, pred = rng.lognormal(6, 2, 500), rng.lognormal(6, 2, 500)
    for limit in (1000, 5000):
        assert balanced_accuracy(truth, pred, limit) == balanced_accuracy_score(truth > limit, pred > limit)


def test_undefined_without_a_class():
    clean = [10.0, 20.0]
    assert math.isnan(false_accept_rate(clean, clean, 1000))
    assert math.isnan(balanced_accuracy(clean, clean, 1000))
    assert false_reject_rate(clean, clean, 1000) == 0.0
    assert math.isnan(false_reject_rate([2000.0], [0.0], 1000))
    assert or_none(false_accept_rate(clean, clean, 1000)) is None and or_none(0.25) == 0.25


def test_log1p_error_counts_negative_values_as_zero():
    assert log1p_errors([-5.0, math.e - 1], [0.0, 0.0]) == pytest.approx([0.0, 1.0])
    assert log1p_mae([-5.0, math.e - 1], [0.0, 0.0]) == pytest.approx(0.5)
