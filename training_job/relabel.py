"""Refuse, before any fitting, data that contradicts the model's stored reference set.

The stored set holds rows (key, spectrum, ppb) of an earlier export. A later file that gives many
of them other targets or spectra, or targets on another scale, is most likely a unit slip (ppm for
ppb), a shuffled or mis-joined column or another instrument: a version trained on it looks fine on
its own rows and is wrong. `--accept-relabel` lets a deliberate relabel through; metadata.json
(`training_data.reference.relabel`) records what differed and the verdict either way.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from training_job.data import DataError, Dataset

# A lab re-measuring a lot or two between exports is normal; a unit change or a shuffled or
# mis-joined column touches most rows. More than max(2, 5 % of the set) changed keys is refused:
# 2 of the real data's 48 reference keys (the ppm export changed 38 of them), 5 % of a larger set.
TOLERATED_ROWS = 2
TOLERATED_SHARE = 0.05
# Targets whose median moved by more than this factor changed scale. DON medians of different
# harvests can differ several-fold; a ppb/ppm slip is 1000x: 30x leaves room on both sides.
SCALE_FACTOR = 30.0
UNIT_STEP = 1000.0      # ppt -> ppb -> ppm
# A row exported again with fewer digits is the same row (reflectance 0.2..1.1, ppb).
SPECTRUM_ATOL = 1e-6
TARGET_RTOL, TARGET_ATOL_PPB = 1e-6, 1e-6
_LISTED = 200           # changed keys listed in metadata.json (the count is always complete)
_EXAMPLES = 5
FLAG_HINT = ("pass --accept-relabel (DON_ACCEPT_RELABEL=1; chart: training.acceptRelabel=true) "
             "only if the relabel is deliberate")


class RelabelError(DataError):
    """The data contradicts the stored reference set; one fact per line of the message."""
    one_line_per_fact = True


@dataclass
class Changed:
    key: str
    stored_ppb: float
    here_ppb: float
    spectrum_differs: bool


def tolerated(stored_keys: int) -> int:
    return max(TOLERATED_ROWS, int(TOLERATED_SHARE * stored_keys))


def check(stored: dict, uri: str, dataset: Dataset, keys: list[str], accept: bool,
          say) -> dict:
    """Compare the data with the stored set; raise RelabelError when it contradicts the set and
    `accept` is off, else warn. Returns metadata.json["training_data"]["reference"]["relabel"]."""
    changed, pairs = _compare(stored, dataset, keys)
    n_keys = len(set(stored["keys"]))
    limit = tolerated(n_keys)
    changed_keys = sorted({c.key for c in changed})
    matched = _pair_ratio(pairs)
    medians = _median_ratio(dataset.y, stored["targets_ppb"])
    facts = []
    if len(changed_keys) > limit:
        # an example whose target changed says most (a unit slip leaves zeros alone)
        first = next((c for c in changed if c.stored_ppb != c.here_ppb), changed[0])
        facts += [f"{len(changed_keys)} of the {n_keys} keys of the reference set {uri} have other "
                  f"targets or spectra in {dataset.source} (at most {limit} tolerated)",
                  f"example: {stored['rule']['key']} {first.key}: stored {first.stored_ppb:g} ppb, "
                  f"here {first.here_ppb:g}"
                  + (" and another spectrum" if first.spectrum_differs else "")]
    # Rows with the same key compare directly; without enough of them, the two medians.
    ratio = matched if matched is not None else medians
    scale_changed = ratio is not None and _fold(ratio) > SCALE_FACTOR
    if scale_changed:
        facts.append(f"targets here are {_direction(ratio)} the reference set's: " + (
            f"median ratio {matched:.4g} on the rows with the same key" if matched is not None
            else f"median of positive targets {_median(dataset.y):g} here, "
                 f"{_median(stored['targets_ppb']):g} ppb in the set"))
    cause = _cause(ratio if scale_changed else None, changed) if facts else None
    if facts and not accept:
        raise RelabelError("\n".join([*facts, f"likely cause: {cause}",
                                      f"refused before fitting: correct the data, or {FLAG_HINT}"]))
    if facts:
        for line in facts:
            say(f"warning: accepted by --accept-relabel: {line}")
    elif changed_keys:
        shown = "; ".join(f"{c.key}: stored {c.stored_ppb:g} ppb, here {c.here_ppb:g}"
                          + (" (other spectrum)" if c.spectrum_differs else "") for c in changed)
        say(f"warning: {len(changed_keys)} of the {n_keys} keys of the reference set have other "
            f"targets or spectra here (up to {limit} tolerated: re-measured lots?): {shown}")
    return {"verdict": "accepted" if facts else "tolerated" if changed_keys else "same",
            "accept_relabel": bool(accept), "tolerated_rows": limit,
            "rows": len(changed_keys), "keys": changed_keys[:_LISTED],
            "examples": [vars(c) for c in changed[:_EXAMPLES]],
            "target_ratio": {"matched_median": matched, "matched_rows": len(pairs),
                             "positive_medians": medians},
            "findings": facts, "likely_cause": cause}


def _compare(stored: dict, dataset: Dataset, keys: list[str]
             ) -> tuple[list[Changed], list[tuple[float, float]]]:
    """(data rows of stored keys that match no stored row of their key, (stored, here) target
    pairs of every data row of a stored key)."""
    known = defaultdict(list)
    for key, row, target in zip(stored["keys"], stored["instances"], stored["targets_ppb"]):
        known[key].append((np.asarray(row, dtype=float), float(target)))
    changed, pairs = [], []
    for i, key in enumerate(keys):
        if key not in known:
            continue
        here = float(dataset.y[i])
        same_spectrum = [t for row, t in known[key]
                         if np.max(np.abs(row - dataset.X[i])) <= SPECTRUM_ATOL]
        was = (same_spectrum or [known[key][0][1]])[0]
        pairs.append((was, here))
        if not any(math.isclose(here, t, rel_tol=TARGET_RTOL, abs_tol=TARGET_ATOL_PPB)
                   for t in same_spectrum):
            changed.append(Changed(key, was, here, not same_spectrum))
    return changed, pairs


def _median(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.median(values[values > 0]))


def _pair_ratio(pairs: list[tuple[float, float]]) -> float | None:
    """Median of here/stored over the matched rows with both targets positive; None with no more
    such rows than a re-measurement may touch (too few to speak of a scale)."""
    ratios = [here / was for was, here in pairs if was > 0 and here > 0]
    return float(np.median(ratios)) if len(ratios) > TOLERATED_ROWS else None


def _median_ratio(here, stored) -> float | None:
    """Median of the positive targets here over that of the stored set (files without common
    keys); None when either side has too few positive targets."""
    here, stored = np.asarray(here, dtype=float), np.asarray(stored, dtype=float)
    if min((here > 0).sum(), (stored > 0).sum()) <= TOLERATED_ROWS:
        return None
    return _median(here) / _median(stored)


def _fold(ratio: float) -> float:
    """How many times larger or smaller (>= 1)."""
    return max(ratio, 1 / ratio)


def _times(ratio: float) -> str:
    fold = _fold(ratio)
    return f"{fold:.0f}x" if fold >= 10 else f"{fold:.2g}x"


def _direction(ratio: float) -> str:
    return f"{_times(ratio)} {'smaller than' if ratio < 1 else 'larger than'}"


def _cause(ratio: float | None, changed: list[Changed]) -> str:
    if ratio is not None:
        if _fold(ratio * UNIT_STEP) < 2:
            return "targets 1000x smaller: ppm instead of ppb?"
        if _fold(ratio / UNIT_STEP) < 2:
            return "targets 1000x larger: ppt (ng/kg) instead of ppb, or ppm converted twice?"
        return f"targets {_direction(ratio)} before: another unit or another lab's scale?"
    if sum(c.spectrum_differs for c in changed) > len(changed) / 2:
        return ("other spectra under the same ids: another instrument or preprocessing, or ids "
                "joined to the wrong rows?")
    return ("other targets at the same scale: a shuffled or mis-joined target column, or a "
            "re-measured batch?")
