"""Served correctly: the canary must answer as its own model did at training time.

golden.json holds the native model's predictions, recorded at training time, on the golden rows
and perturbed copies of them (don_core.artifact.REFERENCE_KEY, reference_rows). The canary is sent
those rows and must reproduce the recorded predictions by the contract's ONNX agreement rule
(don_core.export_check.agreement, the rule the server applies to its ONNX copy at load time). The
stable is not involved: comparing two versions' errors on rows both were fitted on measured noise
(a same-data retrain with a new seed failed it 1 time in 5). How well a candidate generalises is
the reference set's check (reference.py), which also uses `evaluate` below.
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import requests

from don_core.artifact import GOLDEN_FILE, REFERENCE_KEY, read_golden, reference_rows
from don_core.contract import OUTPUT_NAME, VERSION_HEADER
from don_core.export_check import agreement
from don_core.accuracy import false_accept_rate, log1p_mae
from don_core.store import open_store

_cache: dict[tuple[str, str, int], dict] = {}
_lock = threading.Lock()


class GoldenError(RuntimeError):
    """The golden set cannot be read or a version cannot answer it."""


def load_golden(store_root: str, model: str, version: int) -> dict:
    """The verified golden.json of a published version (cached: versions are immutable)."""
    key = (store_root, model, version)
    with _lock:
        if key in _cache:
            return _cache[key]
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        try:
            local = open_store(store_root).fetch(model, version, Path(tmp) / "v")
            golden = read_golden(local / GOLDEN_FILE)
        except Exception as exc:  # store and artifact errors alike: name the version
            raise GoldenError(f"golden set of {model} version {version} in {store_root} is "
                              f"unreadable: {exc}") from None
    if not golden.get("instances") or len(golden["instances"]) != len(golden.get("targets_ppb", [])):
        raise GoldenError(f"golden set of {model} version {version} is empty or malformed")
    with _lock:
        _cache[key] = golden
    return golden


def _predict(base_url: str, model: str, instances: list, timeout: float,
             headers: dict | None = None) -> tuple[np.ndarray, str | None]:
    """V1 predict: (one prediction per instance, the version that answered)."""
    url = f"{base_url.rstrip('/')}/v1/models/{model}:predict"
    try:
        response = requests.post(url, json={"instances": instances}, timeout=timeout,
                                 headers=headers or {})
    except requests.RequestException as exc:
        raise GoldenError(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise GoldenError(f"{url} answered {response.status_code}: {response.text[:200]}")
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError):
        raise GoldenError(f"{url} answered without 'predictions'") from None
    if len(predictions) != len(instances):
        raise GoldenError(f"{url} returned {len(predictions)} predictions for "
                          f"{len(instances)} instances")
    try:
        values = np.asarray(predictions, dtype=float).reshape(len(predictions))
    except (TypeError, ValueError):
        raise GoldenError(f"{url} returned predictions that are not one number per row") from None
    return values, response.headers.get(VERSION_HEADER)


def evaluate(base_url: str, model: str, golden: dict, timeout: float = 10.0,
             headers: dict | None = None) -> dict:
    """V1 predict on labelled instances (a reference set): {'mae': log1p MAE, 'falseAcceptRate':
    at 1000 ppb (None without rows above it), 'rows': n, 'version': served version}."""
    if len(golden["instances"]) != len(golden["targets_ppb"]):
        raise GoldenError(f"{len(golden['instances'])} instances but "
                          f"{len(golden['targets_ppb'])} targets")
    values, version = _predict(base_url, model, golden["instances"], timeout, headers)
    far = false_accept_rate(golden["targets_ppb"], values)
    return {"mae": log1p_mae(values, golden["targets_ppb"]), "rows": len(values),
            "falseAcceptRate": None if np.isnan(far) else far, "version": version}


def recorded(golden: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, the native predictions training recorded on them), or None for a golden.json
    written before predictions were recorded; GoldenError if they are malformed."""
    doc = golden.get(REFERENCE_KEY)
    if doc is None:
        return None
    try:
        expected = np.asarray(doc[OUTPUT_NAME], dtype=float).reshape(-1)
        rows = reference_rows(golden["instances"], doc["probe"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GoldenError(f"golden.json {REFERENCE_KEY} are unreadable ({exc})") from None
    if len(rows) != len(expected):
        raise GoldenError(f"golden.json records {len(expected)} predictions for "
                          f"{len(rows)} reference rows")
    return rows, expected


def served_correctly(base_url: str, model: str, golden: dict, timeout: float = 10.0) -> dict:
    """The canary on the rows its training recorded predictions on: {'agreement': share of rows
    within the contract's tolerance, 'rows', 'maxAbsDiffPpb', 'version'}; {'unrecorded': note,
    'version': None} for a version trained before predictions were recorded."""
    found = recorded(golden)
    if found is None:
        return {"version": None, "unrecorded": (
            f"golden.json records no predictions of the trained model ({REFERENCE_KEY}); a "
            "version trained before they were recorded cannot be checked: retrain it, or set "
            "spec.analysis.goldenSet false")}
    rows, expected = found
    # Requests of the golden set's size (what this check sent before the perturbed copies were
    # added): the canary's latency figures count them, and one request of every row could be the
    # slowest request of an analysis window.
    size, parts, versions = max(1, len(golden["instances"])), [], set()
    for start in range(0, len(rows), size):
        part, version = _predict(base_url, model, rows[start:start + size].tolist(), timeout)
        parts.append(part)
        versions.add(version)
    served = np.concatenate(parts)
    # pods of two versions behind the canary endpoint: name both (the analysis waits)
    version = ",".join(sorted(str(v) for v in versions if v is not None)) or None
    share, diff = agreement(expected, served)
    worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else None
    return {"agreement": share, "rows": len(rows), "maxAbsDiffPpb": worst, "version": version}


def relative_increase(canary_mae: float, stable_mae: float) -> float:
    return (canary_mae - stable_mae) / max(stable_mae, 1e-9)
