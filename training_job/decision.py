"""The decision head: per limit, a score for "this lot is above the limit", shared by both families.

The calibrated accept/reject thresholds (training_job.calibration) are set on this score rather
than on the regressor's ppb: an extra-trees regressor on the 0/1 target "ppb > limit" (the share of
similar training lots above the limit) on in-fold PCA scores of standardised spectra. Chosen with
benchmarks/decisions.py on split seeds 1-3 (never the reporting seed 0), 5-fold x 2, limit 1000 ppb:
lab share 0.473 against 0.57 for the forest's ppb at the same false-accept and false-reject targets.

Each limit's head is exported as its own ONNX model (input `spectra` [N,448], output `score` [N]),
so the lean serving image, which has onnxruntime and numpy only, computes it for both families.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from don_core.artifact import DECISION_SCORE, decision_file

# 100 trees, not 300: 300 sent 0.457 of the lots to the lab on the selection seeds, 100 0.473,
# 50 0.482, but each 300-tree head costs about as much per served row as the model itself
# (~65 us on the real data), and decisions may cost at most 10 % of 1-row throughput.
DEFAULTS = {"pca_components": 10, "n_estimators": 100, "min_samples_leaf": 2,
            "max_features": 0.5, "target": "above", "width": 1.0,
            "scale": True}
METHOD = ("decision score: extra-trees regressor on the 0/1 target ppb > limit (PCA(10) of "
          "standardised spectra, 100 trees, leaves >= 2), one per limit, fitted inside each fold")


def target(y: np.ndarray, limit: int, kind: str = "above", width: float = 1.0) -> np.ndarray:
    """What the head regresses on: `above` 1[y > limit]; `graded` the mean of 1[y > cut] over five
    cuts spaced evenly in log2 from limit / 2**width to limit * 2**width; `logistic`
    1 / (1 + (limit / y)**(1 / width)) (a sigmoid in log2(y / limit) of scale `width`)."""
    y = np.asarray(y, dtype=float)
    if kind == "above":
        return (y > limit).astype(float)
    if kind == "graded":
        cuts = limit * 2.0 ** (width * np.linspace(-1, 1, 5))
        return (y[:, None] > cuts[None, :]).mean(axis=1)
    if kind == "logistic":
        return 1.0 / (1.0 + (limit / np.maximum(y, 1e-9)) ** (1.0 / width))
    raise ValueError(f"unknown decision head target {kind!r}")


def build_one(seed: int, **params) -> Pipeline:
    p = {**DEFAULTS, **params}
    if p.get("model") == "gb":
        from sklearn.ensemble import HistGradientBoostingRegressor
        return Pipeline([("scale", StandardScaler()),
                         ("pca", PCA(n_components=p["pca_components"], random_state=seed)),
                         ("gb", HistGradientBoostingRegressor(
                             max_depth=3, learning_rate=0.05, max_iter=p["n_estimators"],
                             random_state=seed))])
    return Pipeline([("scale", StandardScaler(with_std=bool(p["scale"]))),
                     ("pca", PCA(n_components=p["pca_components"], random_state=seed)),
                     ("trees", ExtraTreesRegressor(
                         n_estimators=p["n_estimators"], min_samples_leaf=p["min_samples_leaf"],
                         max_features=p["max_features"], random_state=seed, n_jobs=-1))])


class DecisionHead:
    """fit(X, y) -> self; predict(X) -> {limit: score in [0, 1]}, one pipeline per limit."""

    def __init__(self, seed: int, limits, **params):
        self.seed, self.limits, self.params = seed, tuple(int(x) for x in limits), params
        self.models_: dict[int, Pipeline] = {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> "DecisionHead":
        y = np.asarray(y, dtype=float)
        p = {**DEFAULTS, **self.params}
        self.models_ = {limit: build_one(self.seed, **self.params).fit(
                            X, target(y, limit, p["target"], p["width"]))
                        for limit in self.limits}
        return self

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]:
        return {limit: np.asarray(model.predict(X), dtype=float).reshape(-1)
                for limit, model in self.models_.items()}

    def export(self, directory: Path) -> dict[str, str]:
        """Write one ONNX model per limit; returns {limit: file name} for metadata.json."""
        from training_job import onnx_export

        files = {}
        for limit, model in self.models_.items():
            for _, step in model.steps:        # single-threaded, as the served forest
                if hasattr(step, "n_jobs"):
                    step.set_params(n_jobs=None)
            name = decision_file(limit)
            onnx_export.save(onnx_export.sklearn_to_onnx(model, output=DECISION_SCORE),
                             Path(directory) / name)
            files[str(limit)] = name
        return files


def build(seed: int, limits, **params) -> DecisionHead:
    return DecisionHead(seed, limits, **params)
