"""Inference backends: the native artifact of each family and its ONNX copy.

Every backend maps a float batch [n, 448] to ppb [n]. ONNX Runtime is the fast path (microseconds
per row, one intra-op thread: more threads gain nothing served and starve the event loop); the
native artifact is the reference it is checked against and the fallback.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from don_core.schema import N_BANDS


class BackendError(Exception):
    """A backend that cannot be loaded or run."""


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"{path.name}: ONNX Runtime cannot load it ({exc})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] != N_BANDS:
            raise BackendError(f"{path.name}: expected one input [None, {N_BANDS}], got "
                               f"{[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "ppb" if "ppb" in outputs else outputs[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._session.run([self._output], {self._input: x})[0].reshape(-1)


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
        out = self._fn(spectra=self._tf.constant(np.asarray(x, dtype=np.float32)))
        return out["ppb"].numpy().reshape(-1)


NATIVE_BACKENDS = {"sklearn": SklearnBackend, "tensorflow": TensorflowBackend}
