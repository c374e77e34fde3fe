"""The reference set: per model, labelled rows that no version ever fits on.

A row belongs to the reference set when a stable hash of its key (the `hsi_id`; the spectrum's
sha256 when the data has no id column) falls below `fraction` of the hash range. The rule depends
on nothing but the key, so every later run, on this data file or another, excludes the same
samples. The first training run of a model stores the rows it found as
`<root>/<model>/reference.json` with a write that never replaces an existing file; later runs
verify and reuse that file. The rollout operator sends the stored rows to the stable and the
canary version and compares their errors: figures on data neither version has seen.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from don_core.records import spectrum_sha256
from don_core.schema import ID_COLUMN, N_BANDS

REFERENCE_FILE = "reference.json"
FORMAT_VERSION = 1
DEFAULT_FRACTION = 0.10
MAX_FRACTION = 0.5
HASH = "sha256"
SPECTRUM_KEY = "spectrum_sha256"  # the key of rows without an id column
_SCALE = float(1 << 64)


class ReferenceError(ValueError):
    """A reference document that must not be used; the message says what is wrong."""


def check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction <= MAX_FRACTION:
        raise ReferenceError(f"reference fraction {fraction} must be above 0 and at most "
                             f"{MAX_FRACTION}")
    return fraction


def row_keys(ids: list[str], X: np.ndarray, has_ids: bool) -> tuple[str, list[str]]:
    """(key kind, one key per row): the hsi_id, or the spectrum hash when there are no ids."""
    if has_ids:
        return ID_COLUMN, [str(i) for i in ids]
    return SPECTRUM_KEY, [spectrum_sha256(row) for row in X]


def in_reference(keys: list[str], fraction: float) -> np.ndarray:
    """Boolean mask: first 64 bits of sha256(key), read as a fraction of 2**64, below `fraction`.
    A larger fraction holds every row of a smaller one."""
    fraction = check_fraction(fraction)
    return np.array([int(hashlib.sha256(k.encode()).hexdigest()[:16], 16) / _SCALE < fraction
                     for k in keys], dtype=bool)


def rule(key: str, fraction: float) -> dict:
    return {"key": key, "hash": HASH, "fraction": check_fraction(fraction),
            "description": f"a row is a reference row when the first 64 bits of "
                           f"{HASH}(utf-8 {key}), as a fraction of 2**64, are below {fraction}"}


def build_reference(*, model: str, key: str, fraction: float, keys: list[str], X, y,
                    source: dict, created: str) -> dict:
    doc = {"format_version": FORMAT_VERSION, "model": model, "created": created,
           "rule": rule(key, fraction), "source": source,
           "keys": [str(k) for k in keys],
           "instances": [[float(v) for v in row] for row in np.asarray(X, dtype=float)],
           "targets_ppb": [float(t) for t in y]}
    check_reference(doc, model)
    return doc


def check_reference(doc, model: str | None = None) -> dict:
    """Structural check of a reference document; raises ReferenceError naming the problem."""
    if not isinstance(doc, dict):
        raise ReferenceError("not a JSON object")
    missing = [k for k in ("format_version", "model", "rule", "keys", "instances", "targets_ppb")
               if k not in doc]
    if missing:
        raise ReferenceError(f"lacks {', '.join(missing)}")
    if doc["format_version"] != FORMAT_VERSION:
        raise ReferenceError(f"format_version {doc['format_version']!r} is not {FORMAT_VERSION}")
    if model is not None and doc["model"] != model:
        raise ReferenceError(f"belongs to model {doc['model']!r}, not {model!r}")
    spec = doc["rule"]
    if not isinstance(spec, dict) or spec.get("hash") != HASH or \
            spec.get("key") not in (ID_COLUMN, SPECTRUM_KEY):
        raise ReferenceError(f"unknown rule {spec!r}")
    check_fraction(spec.get("fraction", 0))
    keys, instances, targets = doc["keys"], doc["instances"], doc["targets_ppb"]
    if not keys:
        raise ReferenceError("holds no rows")
    if not len(keys) == len(instances) == len(targets):
        raise ReferenceError(f"{len(keys)} keys, {len(instances)} instances and {len(targets)} "
                             "targets differ in number")
    if any(not isinstance(row, list) or len(row) != N_BANDS for row in instances):
        raise ReferenceError(f"an instance is not a list of {N_BANDS} numbers")
    if not all(in_reference([str(k) for k in keys], spec["fraction"])):
        raise ReferenceError("holds rows its own rule does not select (edited by hand?)")
    return doc


def fingerprint(doc: dict) -> str:
    """sha256 of the document's canonical JSON: what metadata.json of each version records."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def dump_reference(doc: dict) -> bytes:
    return (json.dumps(doc) + "\n").encode()

