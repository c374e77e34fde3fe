"""Input drift: how far a spectrum lies from the training data (PCA Hotelling T2 and Q residual).

Training writes a reference (`drift.json` in the version directory, see don_core.artifact) and the
server scores every row with it: standardise with the training mean and SD, project on the
training PCA components (one matrix product), T2 = sum(t^2 / eigenvalue) inside the PCA space and
Q = squared residual outside it. Each is divided by its limit (the training data's 99th
percentile, computed out of fold) and the outlier score is the larger ratio: above 1 the row is
out of distribution. Plain numpy: the lean serving image has nothing else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from don_core.artifact import ArtifactError
from don_core.schema import N_BANDS

DRIFT_FORMAT = 1
METHOD = "pca-t2-q"
# An outlier score above this is out of distribution (score = max(T2/T2_limit, Q/Q_limit)).
SCORE_LIMIT = 1.0


@dataclass(frozen=True)
class DriftReference:
    mean: np.ndarray          # [448]
    scale: np.ndarray         # [448] training SD per band (floored)
    components: np.ndarray    # [448, k] orthonormal columns
    eigenvalues: np.ndarray   # [k] variance of the training scores on each component
    t2_limit: float
    q_limit: float
    info: dict                # how the limits were computed (for people; not used to score)

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
            if doc.get("format") != DRIFT_FORMAT or doc.get("method") != METHOD:
                raise ValueError(f"unsupported format {doc.get('format')!r} / method "
                                 f"{doc.get('method')!r}")
            mean = np.asarray(doc["mean"], dtype=np.float64)
            scale = np.asarray(doc["scale"], dtype=np.float64)
            components = np.asarray(doc["components"], dtype=np.float64).T
            eigenvalues = np.asarray(doc["eigenvalues"], dtype=np.float64)
            t2_limit, q_limit = float(doc["t2_limit"]), float(doc["q_limit"])
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
        return cls(mean, scale, components, eigenvalues, t2_limit, q_limit,
                   dict(doc.get("info") or {}))


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
