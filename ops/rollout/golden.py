"""Golden-set quality: both versions answer the candidate's labelled spectra; compare their error.

The golden rows are in the candidate's own training set, so this checks that the candidate is
served correctly; how well it generalises is the reference set's check (reference.py). Error is
the mean absolute error in log1p(ppb) space, the scale the models are trained on, so low-DON
samples count as much as the rare high ones.
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import requests

from don_core.artifact import GOLDEN_FILE, read_golden
from don_core.contract import VERSION_HEADER
from don_core.reference import false_accept_rate, log1p_mae
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


def evaluate(base_url: str, model: str, golden: dict, timeout: float = 10.0,
             headers: dict | None = None) -> dict:
    """V1 predict on labelled instances (a golden or reference set): {'mae': log1p MAE,
    'falseAcceptRate': at 1000 ppb (None without rows above it), 'rows': n, 'version': served
    version}."""
    url = f"{base_url.rstrip('/')}/v1/models/{model}:predict"
    try:
        response = requests.post(url, json={"instances": golden["instances"]}, timeout=timeout,
                                 headers=headers or {})
    except requests.RequestException as exc:
        raise GoldenError(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise GoldenError(f"{url} answered {response.status_code}: {response.text[:200]}")
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError):
        raise GoldenError(f"{url} answered without 'predictions'") from None
    if len(predictions) != len(golden["targets_ppb"]):
        raise GoldenError(f"{url} returned {len(predictions)} predictions for "
                          f"{len(golden['targets_ppb'])} instances")
    try:
        values = np.asarray(predictions, dtype=float).reshape(len(predictions))
    except (TypeError, ValueError):
        raise GoldenError(f"{url} returned predictions that are not one number per row") from None
    far = false_accept_rate(golden["targets_ppb"], values)
    return {"mae": log1p_mae(values, golden["targets_ppb"]), "rows": len(predictions),
            "falseAcceptRate": None if np.isnan(far) else far,
            "version": response.headers.get(VERSION_HEADER)}


def relative_increase(canary_mae: float, stable_mae: float) -> float:
    return (canary_mae - stable_mae) / max(stable_mae, 1e-9)
