"""The prediction-record contract shared by the model server and the recorder."""
import numpy as np
import pytest

from don_core.records import PredictionRecord, spectrum_sha256


def _record(**extra):
    return {"time": "2026-12-02T00:00:00Z", "model": "don-rf", "version": 2, "request_id": "r1",
            "row": 0, "predicted_ppb": 812.5, "spectrum_sha256": "ab" * 32, **extra}


def test_round_trip_drops_unset_optionals():
    rec = PredictionRecord.from_dict(_record(sample_id="lot-7"))
    assert rec.sample_id == "lot-7"
    assert PredictionRecord.from_dict(rec.to_dict()) == rec
    assert "spectrum" not in rec.to_dict()


def test_bad_records_name_the_field():
    with pytest.raises(ValueError, match="missing field.*predicted_ppb"):
        PredictionRecord.from_dict({k: v for k, v in _record().items() if k != "predicted_ppb"})
    with pytest.raises(ValueError, match="unknown record field.*colour"):
        PredictionRecord.from_dict(_record(colour="red"))
    with pytest.raises(ValueError, match="JSON object"):
        PredictionRecord.from_dict([1, 2])


def test_spectrum_hash_is_dtype_independent():
    row = np.linspace(0.2, 1.1, 448)
    assert spectrum_sha256(row) == spectrum_sha256(row.astype(np.float32))
    assert spectrum_sha256(row) != spectrum_sha256(row[::-1])
