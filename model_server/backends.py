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


def _session(path: Path):
    """An ONNX Runtime session on one thread, and the name of its one [None, 448] input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BackendError(f"{path.name}: ONNX Runtime cannot load it ({exc})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].shape[-1] != N_BANDS:
        raise BackendError(f"{path.name}: expected one input [None, {N_BANDS}], got "
                           f"{[(i.name, i.shape) for i in inputs]}")
    return session, inputs[0].name


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path):
        self._session, self._input = _session(path)
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._session.run([self._output], {self._input: x})[0].reshape(-1)


class OnnxScores:
    """Named [N] outputs of ONNX models as one [N, k] matrix, columns in the order asked for:
    the decision head. `columns`: (file, output name) per column; the columns of one file come
    from one session run (today's versions: one file for every limit)."""

    def __init__(self, columns: list[tuple[Path, str]]):
        files: dict[Path, list[str]] = {}
        for path, output in columns:
            files.setdefault(Path(path), []).append(output)
        self._runs = []
        for path, outputs in files.items():
            session, input_name = _session(path)
            missing = sorted(set(outputs) - {o.name for o in session.get_outputs()})
            if missing:
                raise BackendError(f"{path.name}: has no output(s) {missing}")
            self._runs.append((session, outputs, input_name))
        order = [(Path(path), output) for path, output in columns]
        got = [(path, output) for path, outputs in files.items() for output in outputs]
        # columns come back grouped by file; None: already in the order asked for
        self._order = None if got == order else [got.index(c) for c in order]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(self._runs) == 1:
            session, outputs, input_name = self._runs[0]
            columns = session.run(outputs, {input_name: x})
        else:
            columns = [c for session, outputs, input_name in self._runs
                       for c in session.run(outputs, {input_name: x})]
        scores = np.empty((len(x), len(columns)), dtype=np.float32)
        for j, column in enumerate(columns):
            scores[:, j] = column.reshape(-1)
        return scores if self._order is None else scores[:, self._order]


# family -> the module its native artifact needs; only the full image installs them (model_server.native).
NATIVE_LIBRARY = {"sklearn": "sklearn", "tensorflow": "tensorflow"}
