"""The input-drift reference stored with every version (both families): PCA of the standardised
training spectra with Hotelling T2 and Q limits (scored by don_core.drift at serving time).

Honest limits: the 99th percentiles are taken over out-of-fold scores (each fold's rows scored by
a PCA fitted without them), so a new spectrum from the training distribution exceeds a limit
about as often as promised; in-sample scores would be too small and flag too much. The final
projection is then fitted on all rows. The number of components is fixed (10, as the forest's
PCA), not tuned against any drift scenario; `benchmarks/drift.py` compared other numbers,
preprocessings (SNV, first derivative, log, an overall-level score) and limit combinations on
split seeds 1-10 and none flagged a +5 % gain more often at a held-out false-flag rate <= 2 %.

The window statistic's limits (don_core.drift.WindowLimits) come from the same out-of-fold Q:
the centre is the mean of ln(Q / Q_limit), the limit the 99th percentile of |window mean -
centre| over bootstrapped windows of WINDOW_ROWS rows, widened by sqrt(1 + rows / n) because the
centre itself is estimated from n rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from don_core.artifact import DRIFT_FILE
from don_core.drift import DriftReference, WindowLimits, log_q_ratio, write_reference

N_COMPONENTS = 10
FOLDS = 5
PERCENTILE = 99.0
WINDOW_ROWS = 100
WINDOW_BOOTSTRAPS = 4000
_SCALE_FLOOR = 1e-9  # a constant band must not divide by zero


def _fit(X: np.ndarray, n_components: int, t2_limit: float = 1.0,
         q_limit: float = 1.0) -> DriftReference:
    mean = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0, ddof=1), _SCALE_FLOOR)
    z = (X - mean) / scale
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    k = min(n_components, len(X) - 1, vt.shape[0])
    eigenvalues = singular[:k] ** 2 / (len(X) - 1)
    explained = float(eigenvalues.sum() / (singular ** 2 / (len(X) - 1)).sum())
    return DriftReference(mean, scale, vt[:k].T.copy(), eigenvalues, t2_limit, q_limit,
                          {"explained_variance": round(explained, 5)})


def fit_reference(X: np.ndarray, seed: int = 0, n_components: int = N_COMPONENTS,
                  folds: int = FOLDS) -> DriftReference:
    X = np.asarray(X, dtype=np.float64)
    if len(X) < 2 * folds:
        raise ValueError(f"drift reference needs at least {2 * folds} rows, got {len(X)}")
    # A few small SVDs: BLAS threads only contend (20x slower on a busy 2-core machine).
    with threadpool_limits(1):
        return _fit_reference(X, seed, n_components, folds)


def _fit_reference(X: np.ndarray, seed: int, n_components: int, folds: int) -> DriftReference:
    order = np.random.default_rng(seed).permutation(len(X))
    t2 = np.empty(len(X))
    q = np.empty(len(X))
    for held_out in np.array_split(order, folds):
        fitted_on = np.setdiff1d(order, held_out)
        _, t2[held_out], q[held_out] = _fit(X[fitted_on], n_components).score(X[held_out])
    t2_limit = float(np.percentile(t2, PERCENTILE))
    q_limit = float(np.percentile(q, PERCENTILE))
    final = _fit(X, n_components, t2_limit, q_limit)
    flagged = float(np.mean((t2 > t2_limit) | (q > q_limit)))
    window = window_limits(log_q_ratio(q, q_limit), seed)
    info = {**final.info, "rows": int(len(X)), "n_components": int(final.eigenvalues.shape[0]),
            "limits": f"{PERCENTILE:g}th percentile of out-of-fold T2 and Q "
                      f"({folds}-fold, seed {seed})",
            "out_of_fold_flagged_fraction": round(flagged, 4),
            "window": f"mean of ln(Q / Q_limit) over {window.rows} rows; limit the "
                      f"{PERCENTILE:g}th percentile of {WINDOW_BOOTSTRAPS} bootstrapped "
                      f"out-of-fold windows x sqrt(1 + {window.rows} / {len(X)})"}
    return DriftReference(final.mean, final.scale, final.components, final.eigenvalues,
                          t2_limit, q_limit, info, window)


def window_limits(log_q: np.ndarray, seed: int, rows: int = WINDOW_ROWS,
                  bootstraps: int = WINDOW_BOOTSTRAPS) -> WindowLimits:
    """Centre and limit of the window mean of out-of-fold ln(Q / Q_limit) (see the docstring)."""
    center = float(log_q.mean())
    draws = np.random.default_rng(seed).integers(0, len(log_q), (bootstraps, rows))
    spread = np.abs(log_q[draws].mean(axis=1) - center)
    limit = float(np.percentile(spread, PERCENTILE) * np.sqrt(1.0 + rows / len(log_q)))
    return WindowLimits(rows, center, limit)


def export(X: np.ndarray, directory: Path, seed: int = 0) -> dict:
    """Write drift.json into a version directory; returns the summary for metadata.json."""
    reference = fit_reference(X, seed)
    write_reference(Path(directory) / DRIFT_FILE, reference)
    return {"file": DRIFT_FILE, "t2_limit": reference.t2_limit, "q_limit": reference.q_limit,
            **reference.info}


def shift_bands(X: np.ndarray, bands: int) -> np.ndarray:
    """A miscalibrated wavelength axis: band j reads what band j - `bands` should (edge held)."""
    out = np.empty_like(X)
    if bands > 0:
        out[:, bands:], out[:, :bands] = X[:, :-bands], X[:, :1]
    else:
        out[:, :bands], out[:, bands:] = X[:, -bands:], X[:, -1:]
    return out


# What a miscalibrated or replaced instrument does to the real spectra (the check).
SCENARIOS = {"held-out": lambda a: a, "gain +5%": lambda a: a * 1.05,
             "gain -5%": lambda a: a * 0.95, "gain +10%": lambda a: a * 1.10,
             "shift 3 bands": lambda a: shift_bands(a, 3),
             "shift 5 bands": lambda a: shift_bands(a, 5),
             "shift -5 bands": lambda a: shift_bands(a, -5)}


def held_out_check(X: np.ndarray, split_seed: int, repeats: int = 1,
                   folds: int = FOLDS) -> dict[str, dict]:
    """Per scenario: the fraction of held-out rows flagged, and the window scores of the
    held-out folds. Repeated K-fold: each fold's rows (as they are or changed by the scenario)
    are scored by a reference fitted, limits and all, on the other folds only; the fold's rows,
    in order, fill one window (a fold must hold at least WINDOW_ROWS rows to give a score)."""
    from don_core.drift import DriftWindow
    X = np.asarray(X, dtype=np.float64)
    flagged = {name: [] for name in SCENARIOS}
    windows = {name: [] for name in SCENARIOS}
    rng = np.random.default_rng(split_seed)
    for _ in range(repeats):
        order = rng.permutation(len(X))
        for rows in np.array_split(order, folds):
            reference = fit_reference(X[np.setdiff1d(order, rows)], seed=int(rng.integers(1 << 31)))
            for name, change in SCENARIOS.items():
                score, _, q = reference.score(change(X[rows]))
                flagged[name].append(score > 1.0)
                window = DriftWindow(reference.window, reference.q_limit)
                window.add(q)
                if window.full:
                    windows[name].append(window.score())
    return {name: {"flagged": float(np.mean(np.concatenate(flagged[name]))),
                   "windows": np.asarray(windows[name])} for name in SCENARIOS}
