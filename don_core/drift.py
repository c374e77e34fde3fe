"""Input drift: how far a spectrum lies from the training data (PCA Hotelling T2 and Q residual).

Training writes a reference (`drift.json` in the version directory, see don_core.artifact) and the
server scores every row with it: standardise with the training mean and SD, project on the
training PCA components (one matrix product), T2 = sum(t^2 / eigenvalue) inside the PCA space and
Q = squared residual outside it. Each is divided by its limit (the training data's 99th
percentile, computed out of fold) and the outlier score is the larger ratio: above 1 the row is
out of distribution. Plain numpy: the lean serving image has nothing else.

Per row a small gain or shift hides in the real spectra's own scatter (their overall brightness
varies by 8 %, so a +5 % gain flags only a few percent of rows). A population shows it: the
window statistic (format 2) is the mean of ln(Q / Q_limit) over the last `rows` spectra, compared
with its sampling distribution under the training data (centre and limit from out-of-fold
scores, bootstrapped at training time); above 1 the recent inputs as a whole have moved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from don_core.artifact import ArtifactError
from don_core.schema import N_BANDS

DRIFT_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1 (before the window statistic): per-row scores only
METHOD = "pca-t2-q"
# An outlier score above this is out of distribution (score = max(T2/T2_limit, Q/Q_limit)); the
# window score likewise.
SCORE_LIMIT = 1.0
# ln(Q / Q_limit) is clipped to +-ln(this): a constant input (Q = 0) must not make the window
# infinite, and one absurd row must not move a window of ~100 on its own.
Q_RATIO_CLIP = 1e3


def log_q_ratio(q: np.ndarray, q_limit: float) -> np.ndarray:
    """The per-row quantity the window averages (training and serving share this one definition)."""
    ratio = np.asarray(q, dtype=np.float64) / q_limit  # a new array: clipped in place below
    np.maximum(ratio, 1.0 / Q_RATIO_CLIP, out=ratio)  # (np.clip costs twice as much per batch)
    np.minimum(ratio, Q_RATIO_CLIP, out=ratio)
    return np.log(ratio, out=ratio)


@dataclass(frozen=True)
class WindowLimits:
    rows: int        # spectra in the window
    center: float    # mean of ln(Q / Q_limit) over out-of-fold training rows
    limit: float     # |window mean - center| above this is drift (bootstrapped 99th percentile)

    def to_json(self) -> dict:
        return {"rows": self.rows, "center": self.center, "limit": self.limit}


@dataclass(frozen=True)
class DriftReference:
    mean: np.ndarray          # [448]
    scale: np.ndarray         # [448] training SD per band (floored)
    components: np.ndarray    # [448, k] orthonormal columns
    eigenvalues: np.ndarray   # [k] variance of the training scores on each component
    t2_limit: float
    q_limit: float
    info: dict                # how the limits were computed (for people; not used to score)
    window: WindowLimits | None = None  # None: a format-1 reference (per-row scores only)

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(outlier score, T2, Q) per row of a [n, 448] batch."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        t = z @ self.components
        t_sq = t * t
        t2 = t_sq @ (1.0 / self.eigenvalues)
        # |z|^2 - |t|^2 is the squared residual because the components are orthonormal.
        q = np.maximum(np.einsum("ij,ij->i", z, z) - t_sq.sum(axis=1), 0.0)
        return np.maximum(t2 / self.t2_limit, q / self.q_limit), t2, q

    def to_json(self) -> dict:
        return {"format": DRIFT_FORMAT, "method": METHOD, "score_limit": SCORE_LIMIT,
                "window": None if self.window is None else self.window.to_json(),
                "n_components": int(self.components.shape[1]),
                "t2_limit": float(self.t2_limit), "q_limit": float(self.q_limit),
                "info": self.info,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "eigenvalues": self.eigenvalues.tolist(),
                "components": self.components.T.tolist()}  # one list per component

    @classmethod
    def from_json(cls, doc: dict, name: str = "drift reference") -> DriftReference:
        """Build and check a reference; ArtifactError names what is wrong."""
        try:
            if doc.get("format") not in READABLE_FORMATS or doc.get("method") != METHOD:
                raise ValueError(f"unsupported format {doc.get('format')!r} / method "
                                 f"{doc.get('method')!r} (this server reads formats "
                                 f"{', '.join(map(str, READABLE_FORMATS))} of {METHOD})")
            mean = np.asarray(doc["mean"], dtype=np.float64)
            scale = np.asarray(doc["scale"], dtype=np.float64)
            components = np.asarray(doc["components"], dtype=np.float64).T
            eigenvalues = np.asarray(doc["eigenvalues"], dtype=np.float64)
            t2_limit, q_limit = float(doc["t2_limit"]), float(doc["q_limit"])
            window = None
            if doc["format"] >= 2:
                w = doc["window"]
                window = WindowLimits(int(w["rows"]), float(w["center"]), float(w["limit"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{name}: unreadable ({exc})") from None
        k = eigenvalues.shape[0] if eigenvalues.ndim == 1 else -1
        if mean.shape != (N_BANDS,) or scale.shape != (N_BANDS,) or k < 1 \
                or components.shape != (N_BANDS, k):
            raise ArtifactError(f"{name}: arrays do not fit {N_BANDS} bands "
                                f"(mean {mean.shape}, components {components.shape})")
        arrays = (mean, scale, components, eigenvalues, np.array([t2_limit, q_limit]))
        if not all(np.isfinite(a).all() for a in arrays) or (scale <= 0).any() \
                or (eigenvalues <= 0).any() or t2_limit <= 0 or q_limit <= 0:
            raise ArtifactError(f"{name}: non-finite or non-positive scale, eigenvalue or limit")
        if window is not None and not (window.rows >= 1 and np.isfinite(window.center)
                                       and np.isfinite(window.limit) and window.limit > 0):
            raise ArtifactError(f"{name}: window needs rows >= 1, a finite centre and a positive "
                                f"limit ({window})")
        return cls(mean, scale, components, eigenvalues, t2_limit, q_limit,
                   dict(doc.get("info") or {}), window)


class DriftWindow:
    """The last `rows` spectra's ln(Q / Q_limit) in a ring buffer; score() compares their mean
    with the training data's (above SCORE_LIMIT: the inputs have moved). O(batch) per add plus
    one mean over the window. Not locked: the server calls it from its event loop only (REST and
    KServe's gRPC predict alike run there), one window per worker process."""

    def __init__(self, limits: WindowLimits, q_limit: float):
        self.limits, self._q_limit = limits, q_limit
        self._values = np.zeros(limits.rows)
        self._next = 0   # where the next row goes
        self.seen = 0    # rows added since start (the window is full once seen >= rows)

    def add(self, q: np.ndarray) -> None:
        """Add a batch's Q residuals (as DriftReference.score returns them)."""
        values = log_q_ratio(q, self._q_limit)[-self.limits.rows:]  # a batch longer than the window
        n, size = len(values), self.limits.rows
        end = self._next + n
        if end <= size:
            self._values[self._next:end] = values
        else:  # wraps around
            self._values[self._next:] = values[:size - self._next]
            self._values[:end - size] = values[size - self._next:]
        self._next = end % size
        self.seen += len(q)

    @property
    def full(self) -> bool:
        return self.seen >= self.limits.rows

    def shift(self) -> float | None:
        """Window mean of ln(Q / Q_limit) minus the training centre; None until full."""
        if not self.full:
            return None
        return float(self._values.sum()) / self.limits.rows - self.limits.center  # sum: < mean()

    def score(self) -> float | None:
        """|shift| / limit; None until the window is full."""
        shift = self.shift()
        return None if shift is None else abs(shift) / self.limits.limit

    def status(self) -> dict:
        score, shift = self.score(), self.shift()
        return {"rows": self.limits.rows, "filled": int(min(self.seen, self.limits.rows)),
                "score": score, "drifted": None if score is None else bool(score > SCORE_LIMIT),
                "mean_log_q_ratio_shift": shift, "limit": self.limits.limit,
                "rows_seen": int(self.seen)}


def write_reference(path: Path, reference: DriftReference) -> None:
    Path(path).write_text(json.dumps(reference.to_json()))


def read_reference(path: Path) -> DriftReference:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    return DriftReference.from_json(doc, str(path))
