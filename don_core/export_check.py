"""One rule, used by the training job before publishing and by the server before trusting the
ONNX copy: the fast copy must reproduce the native model on real rows and on rows near them."""
from __future__ import annotations

import numpy as np

# Float32 trees against float64 sklearn: a split can flip for a value within float32 rounding of a
# threshold, moving one tree's leaf. Allow that on a rare row, never a systematic difference.
MIN_AGREEMENT = 0.99


def probe_rows(rows: np.ndarray, extra: int, seed: int = 0) -> np.ndarray:
    """`rows` plus `extra` copies of them scaled by ~2% noise. The copies matter: a forest trained
    without bootstrap reproduces its own training rows exactly, so forests grown from other seeds
    agree there and only differ between them."""
    rng = np.random.default_rng(seed)
    picked = rows[rng.integers(0, len(rows), extra)]
    return np.vstack([rows, picked * rng.normal(1.0, 0.02, picked.shape)])


def agreement(reference, candidate, rtol: float, atol: float) -> tuple[float, np.ndarray]:
    """Fraction of rows with |candidate - reference| <= atol + rtol * |reference|, and |diff|."""
    reference, candidate = np.asarray(reference, float), np.asarray(candidate, float)
    diff = np.abs(candidate - reference)
    return float((diff <= atol + rtol * np.abs(reference)).mean()), diff
