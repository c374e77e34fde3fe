"""The feature schema: the one definition of what a spectrum and a label look like."""
from __future__ import annotations

import hashlib
import json

N_BANDS = 448
BAND_COLUMNS: tuple[str, ...] = tuple(str(i) for i in range(N_BANDS))
ID_COLUMN = "hsi_id"
TARGET_COLUMN = "vomitoxin_ppb"
DTYPE = "float32"
TARGET_UNIT = "ppb"

# Physically plausible reflectance, the default the server refuses values outside of (400). The lab's
# spectra span 0.21-1.06; calibrated reflectance can dip below 0 (dark-current subtraction) or rise
# above 1 (specular glints), so the range is generous: it stops unit mistakes (percent, raw
# counts) and values no float32 model input can hold, never a real measurement.
REFLECTANCE_RANGE: tuple[float, float] = (-1.0, 10.0)

# Accept/reject limits a grain buyer applies (ppb); evaluation reports the decision at each.
DECISION_THRESHOLDS_PPB: tuple[int, ...] = (1000, 5000)
# Calibration targets at each limit: contaminated lots accepted / contaminated lots <= alpha,
# clean lots rejected / clean lots <= beta; the rest go to the reference lab.
FALSE_ACCEPT_TARGET = 0.05
FALSE_REJECT_TARGET = 0.10
# Coverage of the served prediction interval [ppb_lower, ppb_upper].
INTERVAL_LEVEL = 0.90

FEATURE_SCHEMA: dict = {
    "n_features": N_BANDS,
    "columns": list(BAND_COLUMNS),
    "dtype": DTYPE,
    "id_column": ID_COLUMN,
    "target": TARGET_COLUMN,
    "target_unit": TARGET_UNIT,
}


def schema_fingerprint(schema: dict = FEATURE_SCHEMA) -> str:
    """Stable hash of a schema, so a version trained on other features is refused at load."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
