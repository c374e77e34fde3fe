"""Keep the model's reference rows out of training (see don_core/reference.py for the contract).

The first run of a model stores the rows the hash rule selects from its data; every later run
reads that set back (never replaces it), refuses data that contradicts it (training_job/relabel.py),
excludes by the stored rule and by the stored keys, and says in metadata.json what it excluded,
including rows of its own data that the rule selects but that are not in the stored set (a newer
data file) and stored keys whose rows differ here.

`--reference-fraction 0` keeps no reference set: no file is written, every row may be fitted on,
and metadata.json says so. Like any fraction it is fixed by the model's first run: with no stored
file, the latest version's metadata tells whether the model chose none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from don_core import reference as contract
from don_core.artifact import utc_now
from don_core.store import Store
from training_job import relabel
from training_job.data import Dataset

_LISTED_IDS = 200  # excluded ids listed in metadata.json (the count is always complete)
NO_SET = 0.0       # --reference-fraction 0: the model keeps no reference set
NO_SET_NOTE = ("no reference set (--reference-fraction 0): every row may be fitted on; the "
               "rollout's reference gate reports it unavailable and training cannot check new "
               "data against stored rows")


@dataclass
class Split:
    fit_rows: np.ndarray   # indices of the rows CV, hold-out, golden set and final fit may use
    reference: dict | None  # the model's stored reference set; None: the model keeps none
    metadata: dict         # metadata.json["training_data"]["reference"]


def split(dataset: Dataset, store: Store, model: str, fraction: float | None,
          say: Callable[[str], None], accept_relabel: bool = False) -> Split:
    key, keys = contract.row_keys(dataset.ids, dataset.X, dataset.has_ids)
    stored, created = store.read_reference(model), False
    if stored is None:
        chosen = _recorded_fraction(store, model)
        if chosen == NO_SET or (chosen is None and fraction is not None
                                and float(fraction) == NO_SET):
            return _without_set(dataset, store, model, fraction, chosen)
        if chosen is not None and fraction is not None and float(fraction) != chosen:
            raise ValueError(f"--reference-fraction {fraction} differs from the fraction {chosen} "
                             f"of {model} version {store.latest(model)}, whose reference set "
                             f"{store.reference_uri(model)} is missing; the set is fixed across "
                             "versions")
        fraction = chosen if fraction is None else fraction
        mask = contract.in_reference(keys, contract.DEFAULT_FRACTION if fraction is None
                                     else fraction)
        if not mask.any():
            raise ValueError(f"{dataset.source}: no row falls in the reference set "
                             f"(fraction {fraction or contract.DEFAULT_FRACTION} of "
                             f"{dataset.rows} rows); use more rows or a larger "
                             "--reference-fraction")
        doc = contract.build_reference(
            model=model, key=key, fraction=contract.DEFAULT_FRACTION if fraction is None
            else fraction, keys=[keys[i] for i in np.flatnonzero(mask)], X=dataset.X[mask],
            y=dataset.y[mask], created=utc_now(),
            source={"source": dataset.source, "sha256": dataset.sha256, "rows": dataset.rows})
        created = store.create_reference(model, doc)
        # Lost a race with a concurrent first run: use (and verify against) the winner's set.
        stored = doc if created else store.read_reference(model)
    rule = stored["rule"]
    if fraction is not None and float(fraction) != rule["fraction"]:
        raise ValueError(f"--reference-fraction {fraction} differs from the fraction "
                         f"{rule['fraction']} of the stored reference set "
                         f"{store.reference_uri(model)}; the set is fixed across versions")
    if rule["key"] != key:
        raise ValueError(f"the stored reference set {store.reference_uri(model)} is keyed on "
                         f"{rule['key']}, but {dataset.source} gives {key}")
    stored_keys = set(stored["keys"])
    mask = contract.in_reference(keys, rule["fraction"]) | np.isin(keys, list(stored_keys))
    fit_rows = np.flatnonzero(~mask)
    excluded = np.flatnonzero(mask)
    relabelled = relabel.check(stored, store.reference_uri(model), dataset, keys,
                               accept_relabel, say)
    not_stored = sorted({keys[i] for i in excluded} - stored_keys)
    say(f"[reference] {store.reference_uri(model)} ({'created by this run' if created else 'existing'}"
        f", {len(stored['keys'])} rows): {len(excluded)} of {dataset.rows} rows excluded from "
        f"fitting, {len(fit_rows)} left" + (f"; {relabelled['rows']} stored keys have other "
                                             "spectra or targets in this data"
                                             if relabelled["rows"] else ""))
    excluded_ids = sorted({dataset.ids[i] for i in excluded})
    return Split(fit_rows=fit_rows, reference=stored, metadata={
        "uri": store.reference_uri(model), "sha256": contract.fingerprint(stored),
        "created_by_this_run": created, "rule": rule, "rows": len(stored["keys"]),
        "excluded": {"rows": int(len(excluded)), "ids": excluded_ids[:_LISTED_IDS],
                     "ids_listed": min(len(excluded_ids), _LISTED_IDS),
                     "selected_but_not_in_stored_set": len(not_stored)},
        "relabel": relabelled, "fit_rows": int(len(fit_rows))})


def _recorded_fraction(store: Store, model: str) -> float | None:
    """The fraction the latest version of `model` recorded (0: it keeps no set); None for a new
    model."""
    latest = store.latest(model)
    if latest is None:
        return None
    held = store.read_metadata(model, latest)["training_data"].get("reference") or {}
    fraction = held.get("fraction", (held.get("rule") or {}).get("fraction"))
    return None if fraction is None else float(fraction)


def _without_set(dataset: Dataset, store: Store, model: str, fraction: float | None,
                 chosen: float | None) -> Split:
    if fraction is not None and float(fraction) != NO_SET:
        raise ValueError(f"--reference-fraction {fraction}: {model} keeps no reference set (its "
                         f"first run chose 0, see version {store.latest(model)}); the choice is "
                         "fixed across versions")
    return Split(fit_rows=np.arange(dataset.rows), reference=None, metadata={
        "fraction": NO_SET, "uri": None, "rows": 0, "chosen_by_this_run": chosen is None,
        "fit_rows": dataset.rows, "note": NO_SET_NOTE})
