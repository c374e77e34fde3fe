"""Native backends (the full serving image only): the family's own artifact, the reference the ONNX
copy is checked against and the fallback when it is unusable. Imported lazily: the lean image
installs neither scikit-learn nor TensorFlow."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from don_core.contract import INPUT_NAME, OUTPUT_NAME
from model_server.backends import BackendError


class SklearnBackend:
    name = "sklearn"

    def __init__(self, path: Path):
        import joblib

        # Only called after verify_version_dir matched the file's sha256 against metadata.json:
        # unpickling is safe exactly because the file is the one training published.
        try:
            self._pipeline = joblib.load(path)
        except Exception as exc:
            raise BackendError(f"{path.name}: cannot unpickle the sklearn pipeline ({exc})") from None
        _single_threaded(self._pipeline)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._pipeline.predict(np.asarray(x, dtype=np.float64))).reshape(-1)


def _single_threaded(estimator) -> None:
    """n_jobs > 1 makes served predictions several times slower (a thread pool per call)."""
    for part in _fitted_parts(estimator):
        if getattr(part, "n_jobs", None) not in (None, 1):
            part.n_jobs = None


def _fitted_parts(estimator):
    yield estimator
    for _, step in getattr(estimator, "steps", None) or ():
        yield from _fitted_parts(step)
    inner = getattr(estimator, "regressor_", None)  # TransformedTargetRegressor
    if inner is not None:
        yield from _fitted_parts(inner)


class TensorflowBackend:
    name = "tensorflow"

    def __init__(self, path: Path):
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process (a second load)
            pass
        try:
            self._loaded = tf.saved_model.load(str(path))
            self._fn = self._loaded.signatures["serving_default"]
        except Exception as exc:
            raise BackendError(f"{path.name}: cannot load the SavedModel ({exc})") from None
        self._tf = tf

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self._fn(**{INPUT_NAME: self._tf.constant(np.asarray(x, dtype=np.float32))})
        return out[OUTPUT_NAME].numpy().reshape(-1)


NATIVE_BACKENDS = {"sklearn": SklearnBackend, "tensorflow": TensorflowBackend}
