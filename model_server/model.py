"""The served model: a kserve.Model that loads one verified version directory of either family."""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from don_core.artifact import (DECISION_FILE, GOLDEN_FILE, LEGACY_DECISION_SCORE,
                               NATIVE_ARTIFACT, ONNX_FILE, REFERENCE_KEY, ArtifactError,
                               decision_score, read_golden, reference_rows, verify_version_dir)
from don_core.calibration import SCORE_HEAD, Calibration
from don_core.drift import SCORE_LIMIT, DriftReference, DriftWindow, read_reference
from don_core.contract import (CLIENT_ERROR, INPUT_NAME, MAX_BATCH_ROWS, ONNX_ATOL_PPB,
                               ONNX_MIN_AGREEMENT, ONNX_RTOL, OUT_OF_DISTRIBUTION_OUTPUT,
                               OUTLIER_SCORE_OUTPUT, OUTPUT_NAME, PPB_LOWER_OUTPUT,
                               PPB_UPPER_OUTPUT, REQUEST_ID_HEADER, SUCCESS, decision_output)
from don_core.export_check import agreement, serve_probe
from don_core.schema import N_BANDS, REFLECTANCE_RANGE
from model_server import codec
from model_server.backends import NATIVE_LIBRARY, BackendError, OnnxBackend, OnnxScores
from model_server.metrics import ServingMetrics
from model_server.mirror import MirrorOptions
from model_server.records import RecordOptions, RecordSender
from model_server.security import process_guard

log = logging.getLogger("model_server")
QUIET_LOGGERS = ("uvicorn.access", "kserve.trace")  # one line per request costs ~15% throughput


def release_free_memory() -> None:
    """Hand the heap pages freed since start back to the kernel (glibc's malloc_trim). ONNX
    Runtime parses a model into buffers it frees once the session is built; glibc keeps them, so a
    forest's 5 MB model.onnx would hold about 40 MB more RSS for the life of the process. A no-op
    on another C library."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class ServeOptions:
    max_batch_rows: int = MAX_BATCH_ROWS
    use_onnx: bool = True
    # ONNX vs native on the golden rows and rows near them (don_core.export_check).
    onnx_rtol: float = ONNX_RTOL
    onnx_atol: float = ONNX_ATOL_PPB
    reflectance_range: tuple[float, float] = REFLECTANCE_RANGE  # other values: 400
    records: RecordOptions | None = None  # where prediction records go; None: off
    mirror: MirrorOptions | None = None  # copies of requests to a shadow (routes send them)
    # Fall back to the native artifact (sklearn / TensorFlow) when the ONNX copy is unusable:
    # True (full image), False (lean image: refuse instead) or None: when the family's library is
    # installed. Looked up without importing it.
    native_fallback: bool | None = None

    def resolve_native_fallback(self, family: str) -> bool:
        if self.native_fallback is not None:
            return self.native_fallback
        return importlib.util.find_spec(NATIVE_LIBRARY[family]) is not None


class DonModel(Model):
    def __init__(self, name: str, model_dir: str | Path, options: ServeOptions = ServeOptions()):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.options = options
        self.state = "loading"
        self.reason: str | None = None
        self.metadata: dict = {}
        self.version = "unknown"
        self.family = "unknown"
        self.backend = None
        self.backend_name = "none"
        self.onnx_check: dict = {}
        self.native_fallback: bool | None = None
        self.load_seconds: float | None = None
        # Seconds per load phase (verify, golden, backend, warm_up): where start-to-ready goes.
        self.load_phases: dict[str, float] = {}
        self.loaded_at: float | None = None
        self.metrics: ServingMetrics | None = None
        self.calibration: Calibration | None = None
        self.decision_head: OnnxScores | None = None  # scores [N, limits] of the calibration
        self._decision_names: tuple[str, ...] = ()    # decision_<limit>, calibration order
        # output name -> V2 datatype; a request may name any of them, ppb alone is the default
        self.output_types: dict[str, str] = {OUTPUT_NAME: "FP32"}
        self.drift: DriftReference | None = None
        # The last rows' mean ln(Q / Q_limit) (None: no reference, or a format-1 one without it)
        self.drift_window: DriftWindow | None = None
        self.records: RecordSender | None = None

    # KServe copies the model into each worker process (--workers N); an ONNX Runtime session
    # cannot be pickled, so a worker gets the recipe (model_server.workers loads it there).
    def __getstate__(self):
        return {"name": self.name, "model_dir": str(self.model_dir), "options": self.options}

    def __setstate__(self, state):
        self.__init__(state["name"], state["model_dir"], state["options"])

    def wait(self, reason: str) -> None:
        """Not loadable yet (model_server.wait_for_version): live, not ready, `reason` on /status."""
        self.state, self.reason, self.ready = "waiting", reason, False

    def load(self) -> bool:
        started = time.perf_counter()
        self.state, self.reason = "loading", None
        try:
            problem = process_guard().problem  # serving without the Secret would be worse
            if problem:
                raise ValueError(problem)
            self._load()
        except (ArtifactError, BackendError, OSError, ValueError) as exc:
            self.state, self.reason, self.ready = "refused", str(exc), False
            log.error("refusing to serve %s: %s", self.model_dir, exc,
                      extra={"model": self.name, "model_dir": str(self.model_dir)})
            return False
        self.load_seconds = round(time.perf_counter() - started, 3)
        self.loaded_at = time.time()
        self.state, self.ready = "ready", True
        self.metrics.set_ready(True)
        log.info("serving %s version %s (%s) via %s, loaded in %.2f s", self.name, self.version,
                 self.family, self.backend_name, self.load_seconds,
                 extra={"model": self.name, "version": self.version, "family": self.family,
                        "backend": self.backend_name, "onnx_check": self.onnx_check,
                        "load_phases": self.load_phases})
        return True

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.load_phases[name] = round(now - since, 4)
        return now

    def _load(self) -> None:
        self.load_phases = {}
        mark = time.perf_counter()
        metadata = verify_version_dir(self.model_dir)
        mark = self._phase("verify", mark)
        self.metadata = metadata
        self.version = str(metadata["version"])
        self.family = metadata["family"]
        self.calibration = Calibration.from_metadata(metadata)
        artifacts = metadata.get("artifacts") or {}
        golden_path = self.model_dir / artifacts.get("golden", GOLDEN_FILE)
        golden = read_golden(golden_path)
        rows = np.asarray(golden["instances"], dtype=np.float64).reshape(-1, N_BANDS)
        if len(rows) == 0:
            raise ArtifactError(f"{self.model_dir}: golden set is empty; nothing to check against")
        mark = self._phase("golden", mark)
        onnx_path = self.model_dir / artifacts.get("onnx", ONNX_FILE)
        self.native_fallback = self.options.resolve_native_fallback(self.family)
        if self.native_fallback:
            from model_server.native import NATIVE_BACKENDS  # sklearn / TensorFlow: the full image only

            native_path = self.model_dir / artifacts.get("native", NATIVE_ARTIFACT[self.family])
            native = NATIVE_BACKENDS[self.family](native_path)
            if not np.isfinite(native.predict(rows)).all():
                raise ArtifactError(f"{self.model_dir}: native model predicts non-finite values on "
                                    "its own golden rows")
            self._check_reference(native, golden)
            self.backend, self.backend_name = native, native.name
            if self.options.use_onnx:
                self._try_onnx(onnx_path, native.predict, rows)
        else:
            self._onnx_only(onnx_path, golden)
        self.drift = self._drift_reference(artifacts)
        self.drift_window = (DriftWindow(self.drift.window, self.drift.q_limit)
                             if self.drift is not None and self.drift.window is not None else None)
        self.decision_head = self._decision_head(artifacts)
        self._decision_names = () if self.calibration is None else tuple(
            decision_output(limit) for limit in self.calibration.limits)
        self.output_types = self._output_types()
        mark = self._phase("backend", mark)  # load, ONNX agreement check, drift reference
        self._warm_up(rows)
        del golden, rows
        release_free_memory()
        self._phase("warm_up", mark)
        if self.metrics is None:
            self.metrics = ServingMetrics(self.name, self.version, self.family, self.backend_name)
        if self.options.records is not None and self.records is None:
            self.records = RecordSender(self.options.records, self.name, self.version,
                                        self.metrics)

    def _drift_reference(self, artifacts: dict) -> DriftReference | None:
        name = artifacts.get("drift")
        if name is None:  # published before versions carried one
            log.warning("version has no drift reference; outlier scores are off",
                        extra={"model": self.name, "version": self.version})
            return None
        return read_reference(self.model_dir / name)

    def _decision_head(self, artifacts: dict) -> OnnxScores | None:
        """The decision head's ONNX model(s) when the calibration decides on their score: scores
        [N, limits] in calibration order. Versions from before the one-file head hold one file a
        limit, whose output is LEGACY_DECISION_SCORE."""
        if self.calibration is None or self.calibration.score != SCORE_HEAD:
            return None
        files = artifacts.get("decision") or {}
        missing = [limit for limit in self.calibration.limits if str(limit) not in files]
        if missing:
            raise ArtifactError(f"{self.model_dir}: the calibration decides on the decision "
                                f"head, but metadata.json lists none for limit(s) {missing}")
        return OnnxScores([(self.model_dir / files[str(limit)],
                            decision_score(limit) if files[str(limit)] == DECISION_FILE
                            else LEGACY_DECISION_SCORE)
                           for limit in self.calibration.limits])

    def _output_types(self) -> dict[str, str]:
        types = {OUTPUT_NAME: "FP32"}
        if self.calibration is not None:
            types.update({decision_output(limit): "BYTES"
                          for limit in self.calibration.limits})
            types.update({PPB_LOWER_OUTPUT: "FP32", PPB_UPPER_OUTPUT: "FP32"})
        if self.drift is not None:
            types.update({OUTLIER_SCORE_OUTPUT: "FP32", OUT_OF_DISTRIBUTION_OUTPUT: "BOOL"})
        return types

    def outputs(self, x: np.ndarray, ppb: np.ndarray, names,
                outliers: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The named outputs (checked by codec.check_outputs) for a batch and its ppb; only
        what is asked for is computed (`outliers`: this batch's `self.outliers(x)`, if known)."""
        out = {OUTPUT_NAME: ppb}
        wanted = set(names)
        if not wanted.isdisjoint(codec.DRIFT_OUTPUTS):
            out[OUTLIER_SCORE_OUTPUT], out[OUT_OF_DISTRIBUTION_OUTPUT] = \
                outliers if outliers is not None else self.outliers(x)
        if PPB_LOWER_OUTPUT in wanted or PPB_UPPER_OUTPUT in wanted:
            out[PPB_LOWER_OUTPUT], out[PPB_UPPER_OUTPUT] = self.calibration.interval(ppb)
        if not wanted.isdisjoint(self._decision_names):
            # one head run and one pass over every limit, whichever limits are named
            decided = self.calibration.decide(
                ppb.reshape(-1, 1) if self.decision_head is None else self.decision_head.predict(x))
            out.update(zip(self._decision_names, decided.T))
        return {name: out[name] for name in names}

    def _recorded_reference(self, golden: dict) -> tuple[np.ndarray, np.ndarray]:
        """The reference rows and the native predictions training recorded on them."""
        recorded = golden.get(REFERENCE_KEY)
        if not isinstance(recorded, dict) or OUTPUT_NAME not in recorded:
            raise ArtifactError(f"{self.model_dir}: golden.json records no reference predictions "
                                "of the trained model; retrain it with this release")
        try:
            expected = np.asarray(recorded[OUTPUT_NAME], dtype=np.float64).reshape(-1)
            rows = reference_rows(golden["instances"], recorded["probe"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{self.model_dir}: golden.json reference predictions are "
                                f"unreadable ({exc})") from None
        if len(rows) != len(expected):
            raise ArtifactError(f"{self.model_dir}: {len(expected)} reference predictions "
                                f"recorded, {len(rows)} reference rows")
        return rows, expected

    def _check_reference(self, native, golden: dict) -> None:
        """The model must still make the predictions training recorded for this version."""
        rows, expected = self._recorded_reference(golden)
        served = native.predict(rows)
        agreed, diff = agreement(expected, served, self.options.onnx_rtol, self.options.onnx_atol)
        if agreed < ONNX_MIN_AGREEMENT:
            raise ArtifactError(
                f"{self.model_dir}: the model's predictions differ from those recorded at training "
                f"time on {100 * (1 - agreed):.0f}% of the reference rows (max |diff| "
                f"{float(np.nanmax(diff)):.1f} ppb): its files are not this version's model")

    def _onnx_only(self, path: Path, golden: dict) -> None:
        """Lean image: ONNX Runtime or nothing. The copy must make the native predictions training
        recorded; otherwise the version is refused (never served silently wrong)."""
        lean = "this server has no native fallback (the lean image; the full image serves it natively)"
        if not self.options.use_onnx:
            raise ArtifactError(f"ONNX is turned off and {lean}")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; {lean}")
        rows, expected = self._recorded_reference(golden)
        try:
            onnx = OnnxBackend(path)
        except BackendError as exc:
            raise ArtifactError(f"{self.model_dir}/{exc}; {lean}") from None
        if not self._check_onnx(onnx, expected, rows, "recorded native predictions"):
            raise ArtifactError(f"{path}: {self.onnx_check['reason']} ({100 * self.onnx_check['agreement']:.1f}% "
                                f"of {len(rows)} reference rows agree, max |diff| "
                                f"{self.onnx_check['max_abs_diff_ppb']} ppb); {lean}")
        self.backend, self.backend_name = onnx, onnx.name

    def _try_onnx(self, path: Path, native_predict, golden: np.ndarray) -> None:
        """Use ONNX Runtime if the file loads and matches the native model near the golden rows."""
        if not path.is_file():
            self.onnx_check = {"used": False, "reason": f"{path.name} is absent"}
            log.warning("no %s in %s; serving the native model", path.name, self.model_dir)
            return
        rows = serve_probe(golden)
        try:
            onnx = OnnxBackend(path)
        except BackendError as exc:
            self.onnx_check = {"used": False, "reason": str(exc)}
            log.warning("ONNX fast path unavailable, serving the native model: %s", exc)
            return
        if self._check_onnx(onnx, native_predict(rows), rows, "native model"):
            self.backend, self.backend_name = onnx, onnx.name
        else:
            log.warning("ONNX copy agrees with the native model on only %.1f%% of probe rows (max "
                        "|diff| %s ppb); serving the native model", 100 * self.onnx_check["agreement"],
                        self.onnx_check["max_abs_diff_ppb"], extra={"onnx_check": self.onnx_check})

    def _check_onnx(self, onnx: OnnxBackend, reference: np.ndarray, rows: np.ndarray, against: str) -> bool:
        """The one agreement rule (don_core.export_check); records the outcome in onnx_check."""
        try:
            fast = onnx.predict(rows)
        except Exception as exc:  # onnxruntime raises its own types for a graph that cannot run
            fast = np.full(reference.shape, np.nan)
            log.warning("ONNX Runtime fails on the probe rows: %s", exc)
        if fast.shape != reference.shape:  # a wrong graph; broadcasting must not hide it
            fast = np.full(reference.shape, np.nan)
        agreed, diff = agreement(reference, fast, self.options.onnx_rtol, self.options.onnx_atol)
        worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else None
        self.onnx_check = {"rows": int(len(rows)), "against": against, "agreement": agreed,
                           "max_abs_diff_ppb": worst, "rtol": self.options.onnx_rtol,
                           "atol_ppb": self.options.onnx_atol, "used": agreed >= ONNX_MIN_AGREEMENT}
        if not self.onnx_check["used"]:
            self.onnx_check["reason"] = f"ONNX predictions differ from the {against} beyond tolerance"
        return self.onnx_check["used"]

    def _warm_up(self, rows: np.ndarray) -> None:
        """First calls allocate and compile; do them before reporting ready."""
        batch = np.resize(rows, (100, N_BANDS))
        for _ in range(3):
            self.backend.predict(rows[:1])
            self.backend.predict(batch)
            if self.drift is not None:
                self.drift.score(batch)

    def stop(self):
        """Server shutdown (KServe unloads the model; each worker's app at its lifespan end):
        the records still queued go out first. Safe to call more than once."""
        super().stop()
        if self.records is not None:
            self.records.close()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """ppb for a validated batch; never negative (the target is a concentration)."""
        ppb = self.backend.predict(x)
        if not np.isfinite(ppb).all():  # a model fault: answer 5xx, keep it out of the metrics
            raise BackendError(f"{self.backend_name} predicted non-finite values")
        ppb = np.maximum(ppb, 0.0, out=ppb if ppb.flags.writeable else None)
        self.metrics.batch(ppb)
        return ppb

    def outliers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(outlier score, out-of-distribution flag) per row, counted in the metrics; None when
        the version has no drift reference."""
        if self.drift is None:
            return None
        score, _, q = self.drift.score(x)
        flagged = score > SCORE_LIMIT
        self.metrics.outliers(score, int(np.count_nonzero(flagged)))
        if self.drift_window is not None:
            self.drift_window.add(q)
            self.metrics.drift_window(self.drift_window.score())
        return score, flagged

    def answer(self, req: codec.Request, request_id: str | None, trace_id: str | None = None,
               caller: str | None = None, shadow: bool = False
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """ppb and the outputs a decoded request names (REST and gRPC alike), recorded if records
        are on (`shadow`: a mirrored copy this server answers as a shadow)."""
        codec.check_outputs(req.outputs, self.output_types)
        x = req.x
        ppb = self.infer(x)
        outliers = self.outliers(x)  # every batch: the drift metrics and records count it
        values = self.outputs(x, ppb, [o.name for o in req.outputs], outliers)
        if self.records is not None:
            self.records.submit(x, ppb, outliers, req.id or request_id, trace_id, caller,
                                req.sample_ids, shadow)
        return ppb, values

    # --- KServe's own data plane: only gRPC reaches it (our REST routes replace KServe's) ---
    def predict(self, payload, headers=None):
        started = time.perf_counter()
        try:
            if not isinstance(payload, InferRequest):
                raise codec.ClientError(400, f"unsupported payload {type(payload).__name__}")
            req = codec.decode_infer_request(payload, self.options.max_batch_rows,
                                             self.options.reflectance_range)
            _, outputs = self.answer(req, (headers or {}).get(REQUEST_ID_HEADER.lower()))
        except codec.ClientError as exc:
            self.metrics.request("grpc", CLIENT_ERROR, time.perf_counter() - started)
            raise InvalidInput(exc.message) from None
        response = codec.encode_infer_response(outputs, self.output_types, payload.id or "",
                                               self.name, self.version)
        self.metrics.request("grpc", SUCCESS, time.perf_counter() - started)
        return response

    def get_input_types(self):
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_BANDS]}]

    def get_output_types(self):
        return [{"name": name, "datatype": datatype, "shape": [-1]}
                for name, datatype in self.output_types.items()]

    def status(self) -> dict:
        return {
            "model": self.name,
            "version": self.version,
            "family": self.family,
            "state": self.state,
            "ready": self.ready,
            "reason": self.reason,
            "backend": self.backend_name,
            "onnx_check": self.onnx_check,
            "native_fallback": self.native_fallback,
            "model_dir": str(self.model_dir),
            "trained_model": self.metadata.get("model"),
            "created": self.metadata.get("created"),
            "load_seconds": self.load_seconds,
            "load_phases": self.load_phases,
            "loaded_at": self.loaded_at,
            "pid": os.getpid(),
            "max_batch_rows": self.options.max_batch_rows,
            "drift": None if self.drift is None else {
                "t2_limit": self.drift.t2_limit, "q_limit": self.drift.q_limit, **self.drift.info,
                "window": None if self.drift_window is None else self.drift_window.status()},
        }
