"""The artifact contract: what a published model version directory holds and how it is checked.

A version directory `<root>/<model>/<N>/` holds the native artifact of its family, an ONNX copy of
the same model for fast serving, a small labelled golden set, and `metadata.json` (written last),
which lists the sha256 of every other file.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import numpy as np

from don_core.calibration import CALIBRATION_KEY, Calibration
from don_core.contract import OUTPUT_NAME
from don_core.errors import ArtifactError
from don_core.schema import FEATURE_SCHEMA, schema_fingerprint

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
GOLDEN_FILE = "golden.json"
# Input-drift reference (PCA T2/Q of the training spectra; format in don_core.drift). Versions
# published before it existed lack it and are served without an outlier score.
DRIFT_FILE = "drift.json"
# The decision head (training_job.decision): one ONNX model, DECISION_FILE, input `spectra`, one
# output per limit, decision_score(limit) [N] (one session run scores every limit), listed in
# metadata.json under artifacts.decision {"<limit>": file}. Versions published before it hold one
# file per limit (decision_<limit>.onnx) whose one output is LEGACY_DECISION_SCORE; they still
# load. A calibration whose `score` is SCORE_HEAD (don_core.calibration) sets its thresholds on
# that score; SCORE_PPB (and versions published before the head existed) on the predicted ppb.
DECISION_FILE = "decision.onnx"
LEGACY_DECISION_SCORE = "score"


def decision_score(limit: int) -> str:
    """The decision head's output for one limit, e.g. score_1000."""
    return f"score_{int(limit)}"


# What people look at (the console's Models and Predict pages): the cross-validation's out-of-fold
# predictions and the band-wise range of the training spectra. Versions published before it
# existed lack it; nothing served reads it.
EVALUATION_FILE = "evaluation.json"

# family -> its native artifact (a file for sklearn, a SavedModel directory for tensorflow)
NATIVE_ARTIFACT = {"sklearn": "model.joblib", "tensorflow": "saved_model"}
# CLI short names of the families
FAMILY_ALIASES = {"rf": "sklearn", "tf": "tensorflow"}

REQUIRED_KEYS = (
    "format_version", "model", "version", "family", "created", "feature_schema",
    "feature_schema_sha256", "training_data", "hyperparameters", "libraries", "metrics", "files",
)
_TRACKED_LIBRARIES = ("numpy", "scikit-learn", "tensorflow-cpu", "tensorflow", "keras", "onnx",
                      "onnxruntime", "skl2onnx", "joblib")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every regular file below `directory` except metadata.json and dot-files."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != METADATA_FILE and not _hidden(rel):
            files[rel] = file_sha256(path)
    return files


def _hidden(rel: str) -> bool:
    # Dot-files are store bookkeeping (e.g. the s3 version claim), never part of a model.
    return any(part.startswith(".") for part in rel.split("/"))


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_metadata(*, model: str, family: str, training_data: dict, hyperparameters: dict,
                   metrics: dict, target_range_ppb: tuple[float, float],
                   calibration: dict | None = None, decision: dict[str, str] | None = None,
                   version: int | None = None, files: dict[str, str] | None = None,
                   created: str | None = None) -> dict:
    """The metadata document; the store fills in `version` and `files` when it publishes."""
    if family not in NATIVE_ARTIFACT:
        raise ValueError(f"unknown model family {family!r}")
    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "version": version,
        "family": family,
        "created": created or utc_now(),
        "artifacts": {"native": NATIVE_ARTIFACT[family], "onnx": ONNX_FILE, "golden": GOLDEN_FILE,
                      "drift": DRIFT_FILE, "evaluation": EVALUATION_FILE,
                      **({"decision": decision} if decision else {})},
        "feature_schema": FEATURE_SCHEMA,
        "feature_schema_sha256": schema_fingerprint(),
        "training_data": training_data,
        "target_range_ppb": [float(target_range_ppb[0]), float(target_range_ppb[1])],
        "hyperparameters": hyperparameters,
        "libraries": library_versions(),
        "metrics": metrics,
        **({CALIBRATION_KEY: calibration} if calibration is not None else {}),
        "files": dict(sorted((files or {}).items())),
    }


def dump_metadata(metadata: dict) -> bytes:
    return (json.dumps(metadata, indent=2, sort_keys=False) + "\n").encode()


def check_metadata(metadata: dict) -> None:
    """Structural check of a metadata document; raises ArtifactError naming what is wrong."""
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"metadata.json lacks {', '.join(missing)}")
    if metadata["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"metadata format_version {metadata['format_version']!r} is not "
                            f"{FORMAT_VERSION}; this release cannot read it")
    if metadata["family"] not in NATIVE_ARTIFACT:
        raise ArtifactError(f"unknown model family {metadata['family']!r}")
    if not isinstance(metadata["version"], int) or metadata["version"] < 1:
        raise ArtifactError(f"version {metadata['version']!r} is not a positive integer")
    if metadata["feature_schema_sha256"] != schema_fingerprint() or \
            metadata["feature_schema"] != FEATURE_SCHEMA:
        raise ArtifactError("feature schema of this version does not match this release's "
                            f"({FEATURE_SCHEMA['n_features']} bands, {FEATURE_SCHEMA['dtype']})")
    Calibration.from_metadata(metadata)  # a malformed calibration block is refused at load


def read_metadata(version_dir: Path) -> dict:
    path = Path(version_dir) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; not a published model version") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    check_metadata(metadata)
    return metadata


def verify_version_dir(version_dir: Path, expected_model: str | None = None) -> dict:
    """Check metadata, feature schema and every file's sha256; return the metadata.

    Refuses missing, altered and unlisted files: what is served is exactly what was trained.
    """
    version_dir = Path(version_dir)
    metadata = read_metadata(version_dir)
    if expected_model and metadata["model"] != expected_model:
        raise ArtifactError(f"{version_dir} holds model {metadata['model']!r}, "
                            f"not {expected_model!r}")
    actual = hash_tree(version_dir)
    listed = metadata["files"]
    for rel, digest in listed.items():
        if rel not in actual:
            raise ArtifactError(f"{version_dir}: file {rel} listed in metadata.json is missing")
        if actual[rel] != digest:
            raise ArtifactError(f"{version_dir}: file {rel} fails its sha256 check "
                                f"(expected {digest[:12]}..., found {actual[rel][:12]}...)")
    unlisted = sorted(set(actual) - set(listed))
    if unlisted:
        raise ArtifactError(f"{version_dir}: files not listed in metadata.json: "
                            f"{', '.join(unlisted[:5])}")
    native = Path(version_dir) / NATIVE_ARTIFACT[metadata["family"]]
    if not native.exists():
        raise ArtifactError(f"{version_dir}: native artifact {native.name} is missing")
    return metadata


# The native model's predictions at training time on the golden rows and on rows near them (the
# copies tell apart forests that reproduce their shared training rows alike), kept in golden.json.
# The server refuses a version whose model no longer makes them: files swapped with another
# version's and re-hashed pass every sha256 check, not this one.
REFERENCE_KEY = "reference_predictions"
# 300 perturbed rows: a float32 ONNX forest may flip a split on ~1 of them, and the lean serving image
# checks its ONNX copy against these predictions (99% must agree).
REFERENCE_PROBE = {"extra": 300, "seed": 20250}


def reference_rows(golden_rows, probe: dict = REFERENCE_PROBE):
    """The rows the reference predictions are made on, from the golden rows (deterministic)."""
    import numpy as np

    from don_core.export_check import probe_rows

    rows = np.asarray(golden_rows, dtype=np.float64).reshape(len(golden_rows), -1)
    return probe_rows(rows, extra=int(probe["extra"]), seed=int(probe["seed"]))


def write_golden(path: Path, spectra, targets_ppb, ids, reference_ppb=None) -> None:
    """The labelled spectra kept with a version, for load-time checks and canary analysis;
    `reference_ppb`: the native model's predictions on reference_rows(spectra)."""
    doc = {
        "description": "labelled spectra (ppb) from the hold-out split; the final model is fitted "
                       "on them too, so they check serving, not generalisation",
        "ids": [str(i) for i in ids],
        "instances": [[float(v) for v in row] for row in spectra],
        "targets_ppb": [float(t) for t in targets_ppb],
    }
    if reference_ppb is not None:
        doc[REFERENCE_KEY] = {"probe": REFERENCE_PROBE,
                              OUTPUT_NAME: [float(v) for v in reference_ppb]}
    Path(path).write_text(json.dumps(doc))


def read_golden(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_evaluation(path: Path, ids, measured_ppb, oof_ppb, spectra) -> None:
    """`oof_ppb[r, i]`: repeat r's out-of-fold prediction of row i (NaN where it had none); kept
    as the per-row mean over repeats, one point per sample. `spectra`: the rows fitted on."""
    oof = np.asarray(oof_ppb, dtype=np.float64).reshape(-1, len(measured_ppb))
    X = np.asarray(spectra, dtype=np.float64)
    doc = {"format": 1,
           "out_of_fold": {"ids": [str(i) for i in ids],
                           "measured_ppb": [float(v) for v in measured_ppb],
                           "predicted_ppb": [round(float(v), 3) for v in np.nanmean(oof, axis=0)],
                           "repeats": int(oof.shape[0])},
           "bands": {"rows": int(len(X)),
                     **{name: [round(float(v), 6) for v in fn(X, axis=0)]
                        for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean))}}}
    Path(path).write_text(json.dumps(doc))


def parse_evaluation(body: bytes, name: str = EVALUATION_FILE) -> dict:
    """The checked evaluation document; ArtifactError names what is wrong."""
    try:
        doc = json.loads(body)
        oof, bands = doc["out_of_fold"], doc["bands"]
        n = len(oof["measured_ppb"])
        if doc.get("format") != 1 or len(oof["predicted_ppb"]) != n or len(oof["ids"]) != n or \
                any(len(bands[k]) != FEATURE_SCHEMA["n_features"] for k in ("min", "max", "mean")):
            raise ValueError("arrays of the wrong length or an unknown format")
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{name}: unreadable ({exc})") from None
    return doc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
