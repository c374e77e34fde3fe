"""One rule, used by the training job before publishing and by the server before trusting the
ONNX copy: the fast copy must reproduce the native model on real rows and on rows near them.

A server with the native library compares the copy with the native model itself on its probe rows
(the golden rows and perturbed copies of them); the lean serving image has no native library and
compares it with the native predictions training recorded in golden.json
(don_core.artifact.REFERENCE_KEY, covered by metadata.json's sha256)."""
from __future__ import annotations

import numpy as np

from don_core.contract import ONNX_ATOL_PPB, ONNX_RTOL

# The tolerance (atol, rtol, the share of rows that must agree) is the contract's:
# don_core.contract.ONNX_*. The serving check's rows: the golden rows plus perturbed copies of them
# (~3 rows may flip a split).
SERVE_PROBE_EXTRA = 300


def probe_rows(rows: np.ndarray, extra: int, seed: int = 0) -> np.ndarray:
    """`rows` plus `extra` copies of them scaled by ~2% noise. The copies matter: a forest trained
    without bootstrap reproduces its own training rows exactly, so forests grown from other seeds
    agree there and only differ between them."""
    rng = np.random.default_rng(seed)
    picked = rows[rng.integers(0, len(rows), extra)]
    return np.vstack([rows, picked * rng.normal(1.0, 0.02, picked.shape)])


def agreement(reference, candidate, rtol: float = ONNX_RTOL,
              atol: float = ONNX_ATOL_PPB) -> tuple[float, np.ndarray]:
    """Fraction of rows with |candidate - reference| <= atol + rtol * |reference|, and |diff|."""
    reference, candidate = np.asarray(reference, float), np.asarray(candidate, float)
    diff = np.abs(candidate - reference)
    return float((diff <= atol + rtol * np.abs(reference)).mean()), diff


def serve_probe(golden_rows: np.ndarray) -> np.ndarray:
    return probe_rows(np.asarray(golden_rows, dtype=np.float64), extra=SERVE_PROBE_EXTRA)

