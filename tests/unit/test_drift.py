"""Input-drift reference: fitted at training time, scored with plain numpy at serving time."""
import json

import numpy as np
import pytest

from don_core.artifact import ArtifactError
from don_core.drift import (DRIFT_FORMAT, Q_RATIO_CLIP, DriftReference, DriftWindow, WindowLimits,
                            log_q_ratio, read_reference)
from training_job import drift, synthetic
from training_job.data import load_dataset


def test_reference_round_trip_and_scores_match_a_direct_computation(tmp_path):
    X = synthetic.generate(300).X
    summary = drift.export(X, tmp_path, seed=0)
    reference = read_reference(tmp_path / "drift.json")
    assert summary["n_components"] == reference.components.shape[1] == drift.N_COMPONENTS
    assert 0 < summary["out_of_fold_flagged_fraction"] < 0.06
    np.testing.assert_allclose(reference.components.T @ reference.components,
                               np.eye(drift.N_COMPONENTS), atol=1e-9)
    rows = X[:7] * np.linspace(0.9, 1.2, 7)[:, None]
    score, t2, q = reference.score(rows)
    z = (rows - X.mean(0)) / X.std(0, ddof=1)
    t = z @ reference.components
    np.testing.assert_allclose(t2, (t ** 2 / reference.eigenvalues).sum(1), rtol=1e-9)
    np.testing.assert_allclose(q, ((z - t @ reference.components.T) ** 2).sum(1), rtol=1e-6)
    np.testing.assert_allclose(score, np.maximum(t2 / reference.t2_limit,
                                                 q / reference.q_limit))
    # float32 input (the binary V2 path) scores the same
    np.testing.assert_allclose(reference.score(rows.astype(np.float32))[0], score, rtol=1e-4)


def test_bad_reference_is_refused_by_name(tmp_path):
    X = synthetic.generate(100).X
    drift.export(X, tmp_path)
    doc = json.loads((tmp_path / "drift.json").read_text())
    with pytest.raises(ArtifactError, match="do not fit 448 bands"):
        DriftReference.from_json({**doc, "mean": doc["mean"][:-1]})
    with pytest.raises(ArtifactError, match="non-positive"):
        DriftReference.from_json({**doc, "q_limit": 0})
    with pytest.raises(ArtifactError, match="unsupported format"):
        DriftReference.from_json({**doc, "format": 99})
    (tmp_path / "drift.json").write_text("{nope")
    with pytest.raises(ArtifactError, match="unreadable"):
        read_reference(tmp_path / "drift.json")


def test_synthetic_drift_is_flagged():
    check = drift.held_out_check(synthetic.generate(500).X, split_seed=0)
    print({k: f"{v['flagged']:.3f} windows {np.round(v['windows'], 2)}" for k, v in check.items()})
    assert check["held-out"]["flagged"] <= 0.05
    assert check["shift 5 bands"]["flagged"] >= 0.3


def test_window_is_the_mean_of_the_last_rows_whatever_the_batches():
    limits = WindowLimits(rows=7, center=-0.5, limit=0.2)
    window = DriftWindow(limits, q_limit=2.0)
    q = np.random.default_rng(3).gamma(2.0, 1.0, 40)
    added = 0
    for size in (3, 2, 1, 5, 9, 7, 13):  # around the ring, one batch longer than the window
        assert window.full == (added >= 7)
        assert (window.score() is None) == (added < 7)
        window.add(q[added:added + size])
        added += size
        last = np.log(q[max(0, added - 7):added] / 2.0)
        if added >= 7:
            assert window.shift() == pytest.approx(last.mean() + 0.5, abs=1e-12)
            assert window.score() == pytest.approx(abs(last.mean() + 0.5) / 0.2, abs=1e-12)
    status = window.status()
    assert status["rows"] == status["filled"] == 7 and status["rows_seen"] == 40
    assert status["drifted"] == (status["score"] > 1)
    # Q = 0 (a spectrum equal to the training mean) and absurd rows are clipped, never infinite
    np.testing.assert_allclose(log_q_ratio(np.array([0.0, 1e300]), 2.0),
                               [-np.log(Q_RATIO_CLIP), np.log(Q_RATIO_CLIP)])
    window.add(np.zeros(7))
    assert np.isfinite(window.score())


def test_reference_formats(tmp_path):
    """Format 2 carries the window limits; a format-1 file (before them) still loads, per-row
    scores only; anything else is refused naming the formats this code reads."""
    X = synthetic.generate(120).X
    drift.export(X, tmp_path)
    doc = json.loads((tmp_path / "drift.json").read_text())
    assert doc["format"] == DRIFT_FORMAT == 2
    reference = read_reference(tmp_path / "drift.json")
    assert reference.window.rows == drift.WINDOW_ROWS and reference.window.limit > 0
    old = {k: v for k, v in doc.items() if k != "window"} | {"format": 1}
    assert DriftReference.from_json(old).window is None
    np.testing.assert_allclose(DriftReference.from_json(old).score(X[:5])[0],
                               reference.score(X[:5])[0])
    with pytest.raises(ArtifactError, match="reads formats 1, 2"):
        DriftReference.from_json({**doc, "format": 3})
    with pytest.raises(ArtifactError, match="unreadable"):
        DriftReference.from_json({k: v for k, v in doc.items() if k != "window"})
    with pytest.raises(ArtifactError, match="positive limit"):
        DriftReference.from_json({**doc, "window": {**doc["window"], "limit": 0}})


def test_real_data_drift_rates(real_data_path):
    """The issue's check on the real data, on the reporting split seed 0 (benchmarks/drift.py
    chose on seeds 1-10): 5x5 repeated K-fold, each fold's 100 rows scored by a reference fitted
    without them, as they are and as a shifted / scaled instrument would send them.

    Per row a +-5 % gain is hard to see (the real spectra's own brightness varies by 8 %): it
    shows as a several-fold higher flag rate (+5 %) or not at all (-5 %). The window of 100 rows
    shows every scenario clearly and held-out rows not. Figures printed with -s."""
    check = drift.held_out_check(load_dataset(str(real_data_path)).X, split_seed=0, repeats=5)
    print("\nreal data, 5x5 repeated K-fold, held-out folds of 100 rows:")
    for name, v in check.items():
        w = v["windows"]
        print(f"  {name:<15} rows flagged {100 * v['flagged']:5.1f} %   window score median "
              f"{np.median(w):5.2f} (min {w.min():5.2f}, max {w.max():5.2f}), "
              f"above 1: {np.sum(w > 1)} / {len(w)}")
    base_rate = check["held-out"]["flagged"]
    assert base_rate <= 0.025
    for name in ("gain +5%", "gain +10%", "shift 5 bands", "shift -5 bands"):
        rate = check[name]["flagged"]
        assert rate >= max(2 * base_rate, 0.04), (name, rate, base_rate)
    assert check["gain +10%"]["flagged"] >= 0.25 and check["shift 5 bands"]["flagged"] >= 0.2
    windows = {name: v["windows"] for name, v in check.items()}
    assert all(len(w) == 25 for w in windows.values())
    assert np.sum(windows["held-out"] > 1) <= 1
    for name in ("gain +5%", "gain -5%", "gain +10%", "shift 5 bands", "shift -5 bands"):
        assert (windows[name] > 1).all(), (name, windows[name])
    assert np.median(windows["gain +5%"]) >= 2
    assert np.sum(windows["shift 3 bands"] > 1) >= 23
