"""Keep the model's reference rows out of training (see don_core/reference.py for the contract).

The first run of a model stores the rows the hash rule selects from its data; every later run
reads that set back (never replaces it), excludes by the stored rule and by the stored keys, and
says in metadata.json what it excluded, including rows of its own data that the rule selects but
that are not in the stored set (a newer data file) and stored keys whose rows differ here.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from don_core import reference as contract
from don_core.artifact import utc_now
from don_core.records import spectrum_sha256
from don_core.store import Store
from training_job.data import Dataset

_LISTED_IDS = 200  # excluded ids listed in metadata.json (the count is always complete)


@dataclass
class Split:
    fit_rows: np.ndarray   # indices of the rows CV, hold-out, golden set and final fit may use
    reference: dict        # the model's stored reference set
    metadata: dict         # metadata.json["reference"]


def split(dataset: Dataset, store: Store, model: str, fraction: float | None,
          say: Callable[[str], None]) -> Split:
    key, keys = contract.row_keys(dataset.ids, dataset.X, dataset.has_ids)
    stored, created = store.read_reference(model), False
    if stored is None:
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
    differing = _differing(stored, dataset, keys, excluded)
    not_stored = sorted({keys[i] for i in excluded} - stored_keys)
    say(f"[reference] {store.reference_uri(model)} ({'created by this run' if created else 'existing'}"
        f", {len(stored['keys'])} rows): {len(excluded)} of {dataset.rows} rows excluded from "
        f"fitting, {len(fit_rows)} left" + (f"; {len(differing)} stored keys have other "
                                             "spectra or targets in this data" if differing else ""))
    excluded_ids = sorted({dataset.ids[i] for i in excluded})
    return Split(fit_rows=fit_rows, reference=stored, metadata={
        "uri": store.reference_uri(model), "sha256": contract.fingerprint(stored),
        "created_by_this_run": created, "rule": rule, "rows": len(stored["keys"]),
        "excluded": {"rows": int(len(excluded)), "ids": excluded_ids[:_LISTED_IDS],
                     "ids_listed": min(len(excluded_ids), _LISTED_IDS),
                     "selected_but_not_in_stored_set": len(not_stored),
                     "stored_keys_with_other_rows_here": differing[:_LISTED_IDS]},
        "fit_rows": int(len(fit_rows))})


def _differing(stored: dict, dataset: Dataset, keys: list[str], excluded: np.ndarray) -> list[str]:
    """Stored keys whose rows in this data (spectrum or target) are not the stored ones."""
    known = defaultdict(set)
    for key, row, target in zip(stored["keys"], stored["instances"], stored["targets_ppb"]):
        known[key].add((spectrum_sha256(np.asarray(row)), round(float(target), 6)))
    return sorted({keys[i] for i in excluded if keys[i] in known and
                   (spectrum_sha256(dataset.X[i]), round(float(dataset.y[i]), 6))
                   not in known[keys[i]]})
