"""The input-drift reference stored with every version (both families): PCA of the standardised
training spectra with Hotelling T2 and Q limits (scored by don_core.drift at serving time).

Honest limits: the 99th percentiles are taken over out-of-fold scores (each fold's rows scored by
a PCA fitted without them), so a new spectrum from the training distribution exceeds a limit
about as often as promised; in-sample scores would be too small and flag too much. The final
projection is then fitted on all rows. The number of components is fixed (10, as the forest's
PCA), not tuned against any drift scenario.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from don_core.artifact import DRIFT_FILE
from don_core.drift import DriftReference, write_reference

N_COMPONENTS = 10
FOLDS = 5
PERCENTILE = 99.0
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
    info = {**final.info, "rows": int(len(X)), "n_components": int(final.eigenvalues.shape[0]),
            "limits": f"{PERCENTILE:g}th percentile of out-of-fold T2 and Q "
                      f"({folds}-fold, seed {seed})",
            "out_of_fold_flagged_fraction": round(flagged, 4)}
    return DriftReference(final.mean, final.scale, final.components, final.eigenvalues,
                          t2_limit, q_limit, info)


def export(X: np.ndarray, directory: Path, seed: int = 0) -> dict:
    """Write drift.json into a version directory; returns the summary for metadata.json."""
    reference = fit_reference(X, seed)
    write_reference(Path(directory) / DRIFT_FILE, reference)
    return {"file": DRIFT_FILE, "t2_limit": reference.t2_limit, "q_limit": reference.q_limit,
            **reference.info}
