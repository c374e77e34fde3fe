"""The prediction-record contract shared by the model server and the recorder."""
import numpy as np
import pytest

from don_core.records import (PredictionRecord, record_count, record_dicts, spectra_sha256,
                              spectrum_sha256)


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


def test_batch_hashes_match_the_row_hash():
    batch = np.random.default_rng(1).uniform(0.2, 1.1, size=(5, 448))
    expected = [spectrum_sha256(row) for row in batch]
    assert spectra_sha256(batch) == expected
    assert spectra_sha256(batch.astype(np.float32)) == expected
    assert spectra_sha256(batch[:, ::-1].T.T[:, ::-1]) == expected  # a non-contiguous view
    with pytest.raises(ValueError, match="2-D"):
        spectra_sha256(batch[0])


def _sender(keep_spectra=False):
    from model_server.metrics import ServingMetrics
    from model_server.records import RecordOptions, RecordSender
    # the thread sleeps (an hour's flush interval, a huge batch); the test calls body() itself
    return RecordSender(RecordOptions(url="http://127.0.0.1:9/records", keep_spectra=keep_spectra,
                                      flush_seconds=3600, batch_rows=10**6),
                        "don-rf", "3", ServingMetrics("don-rf", "3", "rf", "test"))


@pytest.mark.parametrize("keep_spectra", [False, True])
def test_the_server_s_column_form_reads_as_the_records_it_stands_for(keep_spectra):
    """What the sender sends, read back by the one reader, is one valid record per row: the
    request's fields on each of its rows, row indices per request, hashes per row."""
    import orjson

    from model_server.records import _Batch
    rng = np.random.default_rng(2)
    x1, x2 = rng.uniform(0.2, 1.1, (1, 448)), rng.uniform(0.2, 1.1, (3, 448)).astype(np.float32)
    when = 1796230000.1234
    batches = [_Batch(when, x1, np.array([5.0]), np.array([0.5]), np.array([False]), "req-a",
                      "0af7651916cd43dd8448eb211c80319c", "10.0.0.1", ["lot-1"]),
               _Batch(when + 1.5, x2, np.array([1.0, 2.0, 3000.0], np.float32),
                      np.array([0.1, 2.5, 0.3]), np.array([False, True, False]), None, None, None, None)]
    doc = orjson.loads(_sender(keep_spectra).body(batches))
    assert "records" not in doc and doc["requests"]["rows"] == [1, 3]
    records = [PredictionRecord.from_dict(r) for r in record_dicts(doc)]
    assert record_count(doc) == len(records) == 4
    first, *rest = records
    if keep_spectra:  # as float32 (orjson writes a float32 in its shortest form): the same hash
        assert spectrum_sha256(np.array(first.spectrum)) == first.spectrum_sha256
        assert np.array_equal(np.float32(first.spectrum), np.float32(x1[0]))
        assert np.array_equal(np.float32(rest[2].spectrum), x2[2])
    assert first == PredictionRecord(
        time="2026-12-02T16:46:40.123Z", model="don-rf", version=3, request_id="req-a", row=0,
        predicted_ppb=5.0, spectrum_sha256=spectrum_sha256(x1[0]),
        trace_id="0af7651916cd43dd8448eb211c80319c", caller="10.0.0.1", sample_id="lot-1",
        outlier_score=0.5, out_of_distribution=False, spectrum=first.spectrum)
    assert [r.row for r in rest] == [0, 1, 2]
    assert {r.time for r in rest} == {"2026-12-02T16:46:41.623Z"}
    assert len({r.request_id for r in rest}) == 1 and rest[0].request_id != "req-a"  # generated
    assert [r.predicted_ppb for r in rest] == [1.0, 2.0, 3000.0]
    assert [r.out_of_distribution for r in rest] == [False, True, False]
    assert [r.spectrum_sha256 for r in rest] == [spectrum_sha256(row) for row in x2]
    assert {r.sample_id for r in rest} == {None} and {r.caller for r in rest} == {None}
    assert {r.spectrum is None for r in records} == {not keep_spectra}


def _columns(**change):
    doc = {"model": "don-rf", "version": 3,
           "requests": {"time": ["2026-12-02T00:00:00Z"] * 2, "request_id": ["a", "b"], "rows": [1, 2]},
           "rows": {"predicted_ppb": [1.0, 2.0, 3.0], "spectrum_sha256": ["ab" * 32] * 3}}
    for path, value in change.items():
        part, _, name = path.partition("__")
        target = doc[part] if name else doc
        if value is None:
            target.pop(name or part)
        else:
            target[name or part] = value
    return doc


@pytest.mark.parametrize("change, needle", [
    ({"requests__rows": [1, 1]}, "add up to 2 rows"),
    ({"requests__rows": [True, 2]}, "row counts"),
    ({"requests__rows": [-1, 4]}, "row counts"),
    ({"requests__rows": "3"}, "row counts"),
    ({"requests__request_id": ["a"]}, "requests.request_id must be a list of 2"),
    ({"requests__time": None}, "requests.time is missing"),
    ({"requests__colour": [1, 2]}, "unknown requests column"),
    ({"rows__spectrum_sha256": None}, "rows.spectrum_sha256 is missing"),
    ({"rows__sample_id": "lot"}, "rows.sample_id must be a list of 3"),
    ({"rows__row": [0, 0, 1]}, "unknown rows column"),
    ({"requests": [1]}, '"requests" must be an object'),
    ({"extra": 1}, "unknown body field"),
    ({"rows": {"spectrum_sha256": []}}, "column form"),
])
def test_bad_column_forms_name_the_column(change, needle):
    with pytest.raises(ValueError, match=needle):
        record_dicts(_columns(**change))


def test_row_form_is_read_as_it_came():
    doc = {"records": [_record(), _record(row=1)]}
    assert record_count(doc) == 2 and record_dicts(doc) == doc["records"]
    assert len(record_dicts(_columns())) == 3


def test_a_backlog_goes_out_in_larger_events():
    """Up to batch_rows per event normally; with a backlog of two batches or more, up to
    BACKLOG_BATCH_FACTOR batches' rows (fewer round trips while catching up)."""
    from model_server.metrics import ServingMetrics
    from model_server.records import BACKLOG_BATCH_FACTOR, RecordOptions, RecordSender
    sender = RecordSender(RecordOptions(url="http://127.0.0.1:9/records", batch_rows=10),
                          "don-rf", "3", ServingMetrics("don-rf", "3", "rf", "test"))
    sender.close()  # the thread stops (nothing queued yet); the test takes batches itself
    x, ppb = np.zeros((1, 448), np.float32), np.array([1.0])
    for _ in range(55):
        sender.submit(x, ppb, None, None, None, None, None)
    assert sender._take()[1] == 10 * BACKLOG_BATCH_FACTOR  # 55 queued: a backlog
    assert sender._take()[1] == 10  # 15 left: below two batches, one batch
    assert sender._take()[1] == 5 and sender.queued_rows == 0
