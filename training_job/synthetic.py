"""Synthetic corn spectra with a DON label: the embedded default and the data of tests without the
real file. SYNTHETIC: the spectra and labels are generated, not measured. They mimic the real
data's shape (reflectance 0.2-1.1 rising from the visible to a plateau, multiplicative brightness
changes, 17-18% zero labels, a heavy right tail up to ~10^5 ppb) and tie DON to two absorption
features, so a model has something real to learn and evaluation figures mean something.
"""
from __future__ import annotations

import hashlib

import numpy as np

from don_core.schema import BAND_COLUMNS, ID_COLUMN, N_BANDS, TARGET_COLUMN
from training_job.data import Dataset

DEFAULT_ROWS = 500
ZERO_FRACTION = 0.176


def is_source(src: str) -> bool:
    """Whether a --data value names the embedded default (`synthetic` or `synthetic:ROWS`)."""
    return src == "synthetic" or src.startswith("synthetic:")


def generate(rows: int = DEFAULT_ROWS, seed: int = 0) -> Dataset:
    if rows < 10:
        raise ValueError("synthetic data needs at least 10 rows")
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, N_BANDS)

    # Heavy-tailed target: a point mass at zero and a log-normal body (median ~550 ppb).
    log_ppb = rng.normal(6.3, 1.6, rows)
    ppb = np.round(np.expm1(np.clip(log_ppb, 0.0, np.log1p(150_000))), -1)
    ppb[rng.random(rows) < ZERO_FRACTION] = 0.0
    severity = np.log1p(ppb) / np.log1p(150_000)          # 0..1

    base = 0.34 + 0.47 / (1 + np.exp(-(t - 0.22) / 0.06)) + 0.10 * np.exp(-(t / 0.05) ** 2) \
        - 0.03 * t
    brightness = rng.normal(1.0, 0.075, (rows, 1)) * (1 - 0.06 * severity[:, None])
    slope = rng.normal(0.0, 0.02, (rows, 1)) * (t - 0.5)
    bumps = sum(rng.normal(0, 0.012, (rows, 1))
                * np.exp(-((t - rng.uniform(0, 1, (rows, 1))) / rng.uniform(0.05, 0.2, (rows, 1)))
                         ** 2) for _ in range(3))
    # DON signal: two absorption features whose depth grows with contamination.
    absorption = severity[:, None] * (0.05 * np.exp(-((t - 0.35) / 0.05) ** 2)
                                      + 0.03 * np.exp(-((t - 0.62) / 0.08) ** 2))
    X = base * brightness + slope + bumps - absorption + rng.normal(0, 0.003, (rows, N_BANDS))
    X = np.clip(X, 0.2, 1.1)

    ids = [f"synthetic_{seed}_{i}" for i in range(rows)]
    csv_bytes = to_csv(X, ppb, ids)
    return Dataset(X=X, y=ppb, ids=ids, source=f"synthetic:{rows}:seed={seed}",
                   sha256=hashlib.sha256(csv_bytes).hexdigest())


def to_csv(X: np.ndarray, y: np.ndarray, ids: list[str]) -> bytes:
    """The lab's CSV format, for writing synthetic data to disk or a bucket."""
    lines = [",".join([ID_COLUMN, *BAND_COLUMNS, TARGET_COLUMN])]
    for row_id, row, target in zip(ids, X, y):
        lines.append(",".join([row_id, *(f"{v:.10g}" for v in row), f"{target:g}"]))
    return ("\n".join(lines) + "\n").encode()
