"""The ONNX Runtime backend, the only one of the lean serving image (the native ones, which need
scikit-learn or TensorFlow, live in model_server.native and are imported by the full image only).

Every backend maps a float batch [n, 448] to ppb [n]. ONNX Runtime is the fast path (microseconds
per row, one intra-op thread: more threads gain nothing served and starve the event loop); the
native artifact is the reference it is checked against and the fallback.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from don_core.contract import OUTPUT_NAME
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
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._session.run([self._output], {self._input: x})[0].reshape(-1)


# family -> the module its native artifact needs; only the full image installs them (model_server.native).
NATIVE_LIBRARY = {"sklearn": "sklearn", "tensorflow": "tensorflow"}
