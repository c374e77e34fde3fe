"""Recorder pieces without a server: KServe pairing bounds, CSV parsing, accuracy figures."""
import json

import numpy as np
import pytest

from don_core.records import KSERVE_REQUEST_EVENT_TYPE, KSERVE_RESPONSE_EVENT_TYPE
from ops.recorder import accuracy, events, labresults


def _attrs(kind, event_id):
    return {"specversion": "1.0", "type": kind, "id": event_id, "source": "x", "inferenceservicename": "don-rf"}


def test_unpaired_kserve_halves_are_bounded_and_counted():
    dropped = []
    pairs = events.KServePairs(capacity=2, ttl=10, on_drop=dropped.append)
    body = json.dumps({"instances": np.full((1, 448), 0.5).tolist()}).encode()
    for i in range(3):
        assert pairs.add(_attrs(KSERVE_REQUEST_EVENT_TYPE, f"r{i}"), body, now=0.0) is None
    assert len(pairs) == 2 and dropped == [1]  # the oldest went
    assert pairs.add(_attrs(KSERVE_REQUEST_EVENT_TYPE, "late"), body, now=11.0) is None
    assert len(pairs) == 1 and sum(dropped) == 3  # both expired
    rows = pairs.add(_attrs(KSERVE_RESPONSE_EVENT_TYPE, "late"), b'{"predictions": [7.5]}', now=11.5)
    assert [(r["model"], r["predicted_ppb"]) for r in rows] == [("don-rf", 7.5)] and len(pairs) == 0


def test_csv_accepts_spreadsheet_saves_and_names_bad_cells():
    data = "\ufeffmeasured_at,sample_id,method,vomitoxin_ppb\r\n2026-11-30,lot-1,HPLC,12.5\r\n\r\n" \
           "2026-11-30T10:00:00+01:00,lot-2,ELISA,-3\r\n"
    parsed = labresults.parse_csv(data.encode())
    assert [r["sample_id"] for r in parsed.rows] == ["lot-1"]
    assert parsed.errors == ["row 3, column vomitoxin_ppb: '-3' is not a non-negative number"]
    with pytest.raises(labresults.LabResultsError, match="missing: \\['vomitoxin_ppb'\\]"):
        labresults.parse_csv(b"sample_id,method,measured_at\n")
    with pytest.raises(labresults.LabResultsError, match="unexpected or repeated: \\['ppb'\\]"):
        labresults.parse_csv(b"sample_id,vomitoxin_ppb,ppb\n")


def test_method_and_time_are_optional():
    """Without them: method "unspecified", measured on the import's UTC day (a re-import the same
    day is a duplicate, not a second measurement)."""
    from ops.recorder.db import utcnow
    parsed = labresults.parse_csv(b"vomitoxin_ppb,sample_id\n12.5,lot-1\nx,lot-2\n")
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    assert [(r["sample_id"], r["vomitoxin_ppb"], r["method"], r["measured_at"]) for r in parsed.rows] == \
        [("lot-1", 12.5, labresults.DEFAULT_METHOD, today)]
    assert parsed.errors == ["row 2, column vomitoxin_ppb: 'x' is not a non-negative number"]
    timed = labresults.parse_csv(b"sample_id,vomitoxin_ppb,measured_at\nlot-1,3,2026-11-30\n").rows[0]
    assert (timed["method"], timed["measured_at"].isoformat()) == (labresults.DEFAULT_METHOD, "2026-11-30T00:00:00")


def test_figures_are_undefined_not_perfect_with_one_class():
    out = accuracy.figures([10.0, 20.0], [12.0, 18.0])
    assert out["thresholds"]["1000"]["balancedAccuracy"] is None
    assert out["thresholds"]["1000"]["falseAcceptRate"] is None
    assert out["thresholds"]["1000"]["falseRejectRate"] == 0.0
    assert accuracy.figures([], [])["maeLog1p"] is None


def test_t_quantiles_of_the_paired_interval_match_scipy():
    from scipy import stats

    from ops.recorder import pairs
    for df in (*range(1, 31), 31, 40, 60, 100, 1000, 100_000):
        assert pairs.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4), df
    with pytest.raises(ValueError, match="at least 1"):
        pairs.t975(0)


def test_paired_difference_is_the_difference_of_the_log1p_maes():
    from don_core.accuracy import log1p_mae
    from ops.recorder import pairs
    rng = np.random.default_rng(7)
    truth = rng.gamma(0.5, 4000, 200)
    stable, candidate = truth * rng.lognormal(0, 0.3, 200), truth * rng.lognormal(0.2, 0.5, 200)
    doc = pairs.difference(stable, candidate, truth)
    assert doc["mean"] == pytest.approx(log1p_mae(candidate, truth) - log1p_mae(stable, truth))
    low, high = doc["ci95"]
    assert low < doc["mean"] < high and high - low == pytest.approx(2 * pairs.t975(199) * doc["sd"] / 200 ** 0.5)
    assert pairs.difference([], [], [])["mean"] is None and pairs.difference([1.0], [2.0], [1.0])["ci95"] is None
