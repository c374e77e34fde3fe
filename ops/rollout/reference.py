"""Reference-set quality: stable and canary answer the model's reference rows, which no version
was fitted on (don_core/reference.py); a candidate that generalises worse than the stable fails.

Two figures per version: the mean absolute error in log1p(ppb) and the false-accept rate at
1000 ppb (contaminated samples predicted at or below the limit). The set is read from
`<root>/<model>/reference.json` of the store (cached once read: it is written once and never
changed); an unreadable set makes the analysis Inconclusive with the path and the error.
"""
from __future__ import annotations

import threading

from don_core.accuracy import FALSE_ACCEPT_LIMIT_PPB
from don_core.store import open_store
from ops.rollout import golden as golden_mod

_cache: dict[tuple[str, str], dict] = {}
_lock = threading.Lock()


class ReferenceUnavailable(RuntimeError):
    """The reference set cannot be read; the message names the path and the error."""


def load_reference(store_root: str, model: str) -> dict:
    key = (store_root, model)
    with _lock:
        if key in _cache:
            return _cache[key]
    location = f"{store_root.rstrip('/')}/{model}/reference.json"
    try:
        store = open_store(store_root)
        location = store.reference_uri(model)
        doc = store.read_reference(model)
    except Exception as exc:  # store errors, bad names, unreachable endpoints: all say where
        message = str(exc)
        if message.startswith(location):
            message = message[len(location):].lstrip(": ")
        raise ReferenceUnavailable(f"reference set unreadable: {location}: {message}") from None
    if doc is None:
        raise ReferenceUnavailable(f"reference set unreadable: {location}: does not exist (no "
                                   f"training run of {model} has created it)")
    with _lock:
        _cache[key] = doc
    return doc


def compare(stable_url: str, canary_url: str, model_name: str, doc: dict,
            timeout: float) -> dict:
    """{'stable': figures|{'error'}, 'canary': figures|{'error'}, 'rows', 'positives',
    'relativeIncrease' and 'falseAcceptIncrease' when both answered}."""
    result = {"rows": len(doc["targets_ppb"]),
              "positives": sum(t > FALSE_ACCEPT_LIMIT_PPB for t in doc["targets_ppb"])}
    for side, url in (("stable", stable_url), ("canary", canary_url)):
        try:
            result[side] = golden_mod.evaluate(url, model_name, doc, timeout)
        except golden_mod.GoldenError as exc:
            result[side] = {"error": str(exc)[:300]}
    stable, canary = result["stable"], result["canary"]
    if "mae" in stable and "mae" in canary:
        result["relativeIncrease"] = golden_mod.relative_increase(canary["mae"], stable["mae"])
        if stable["falseAcceptRate"] is not None and canary["falseAcceptRate"] is not None:
            result["falseAcceptIncrease"] = canary["falseAcceptRate"] - stable["falseAcceptRate"]
    return result
