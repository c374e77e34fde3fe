"""RandomForest family: one sklearn Pipeline, preprocessing and target transform inside.

Only stock sklearn/numpy/scipy callables appear in the pipeline, so `model.joblib` also loads in
KServe's own sklearn server without this package installed.
"""
from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from scipy.signal import savgol_filter
from scipy.stats import zscore
from sklearn.compose import TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from don_core.artifact import NATIVE_ARTIFACT, ONNX_FILE

FAMILY = "sklearn"
DEFAULTS = {
    "spectral": "none",        # none | snv | sg1 (SNV / Savitzky-Golay 1st derivative)
    "pca_components": 10,
    "n_estimators": 300,
    "min_samples_leaf": 1,
    # Every tree sees every row and half the components at each split: the few very high samples
    # come in near-identical pairs, and a tree without its pair's twin predicts them far too low.
    "bootstrap": False,
    "max_features": 0.5,
    "criterion": "squared_error",
    "target": "sqrt",          # sqrt | log1p | raw (chosen by benchmarks/preprocessing.py)
}
_TARGETS = {"log1p": (np.log1p, np.expm1), "sqrt": (np.sqrt, np.square)}


def build(seed: int, **params) -> Pipeline:
    p = {**DEFAULTS, **params}
    steps = []
    if p["spectral"] == "snv":
        steps.append(("snv", FunctionTransformer(zscore, kw_args={"axis": 1})))
    elif p["spectral"] == "sg1":
        steps.append(("sg1", FunctionTransformer(savgol_filter, kw_args={
            "window_length": 11, "polyorder": 2, "deriv": 1, "axis": 1})))
    elif p["spectral"] != "none":
        raise ValueError(f"unknown spectral preprocessing {p['spectral']!r}")
    steps += [("scale", StandardScaler()),
              ("pca", PCA(n_components=p["pca_components"], random_state=seed))]
    forest = RandomForestRegressor(n_estimators=p["n_estimators"],
                                   min_samples_leaf=p["min_samples_leaf"],
                                   max_features=p["max_features"], bootstrap=p["bootstrap"],
                                   criterion=p["criterion"], random_state=seed, n_jobs=-1)
    if p["target"] == "raw":
        steps.append(("rf", forest))
    else:
        func, inverse = _TARGETS[p["target"]]
        steps.append(("rf", TransformedTargetRegressor(regressor=forest, func=func,
                                                       inverse_func=inverse, check_inverse=False)))
    return Pipeline(steps)


def for_serving(pipeline: Pipeline) -> Pipeline:
    """Single-threaded prediction: n_jobs>1 makes per-request latency several times worse."""
    final = pipeline.steps[-1][1]
    forest = getattr(final, "regressor_", final)
    forest.set_params(n_jobs=None)
    return pipeline


def export(pipeline: Pipeline, directory: Path) -> None:
    """Write model.joblib (the whole pipeline) and its ONNX copy."""
    from training_job import onnx_export

    joblib.dump(for_serving(pipeline), Path(directory) / NATIVE_ARTIFACT[FAMILY], compress=3)
    onnx_export.save(onnx_export.sklearn_to_onnx(pipeline), Path(directory) / ONNX_FILE)


def load_native(directory: Path):
    """Predict function of the artifact as written (used to check the export)."""
    return joblib.load(Path(directory) / NATIVE_ARTIFACT[FAMILY]).predict
