"""Every kind of bad input is refused before training, naming file, row and column."""
from __future__ import annotations

import numpy as np
import pytest

from don_core.schema import BAND_COLUMNS, N_BANDS
from training_job.data import DataError, SourceError, check_trainable, load_dataset, parse_csv
from training_job.synthetic import generate, to_csv

HEADER = ["hsi_id", *BAND_COLUMNS, "vomitoxin_ppb"]


def rows_csv(rows: list[list[str]], header: list[str] = HEADER, newline: str = "\n") -> bytes:
    return newline.join(",".join(r) for r in [header, *rows]).encode() + newline.encode()


def good_row(i: int = 0, target: str = "120") -> list[str]:
    return [f"id{i}", *("0.5" for _ in range(N_BANDS)), target]


def check_error(raw: bytes, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        parse_csv(raw, name="lab.csv")
    message = str(info.value)
    assert message.startswith("lab.csv"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_good_file_loads_with_lf_and_crlf():
    raw = rows_csv([good_row(0), good_row(1, "0")])
    for data in (raw, raw.replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + raw):
        ds = parse_csv(data, name="lab.csv")
        assert ds.X.shape == (2, N_BANDS) and ds.y.tolist() == [120.0, 0.0]
        assert ds.ids == ["id0", "id1"]
        assert not ds.warnings


def test_id_column_is_optional_and_columns_may_be_reordered():
    header = ["vomitoxin_ppb", *reversed(BAND_COLUMNS)]
    row = ["7", *(str(i / 1000) for i in reversed(range(N_BANDS)))]
    ds = parse_csv(rows_csv([row], header=header), name="lab.csv")
    assert ds.y.tolist() == [7.0]
    assert ds.X[0, 5] == pytest.approx(0.005)


def test_empty_file():
    check_error(b"", "file is empty")
    check_error(b"\r\n\r\n", "file is empty")


def test_header_only():
    check_error(rows_csv([]), "no data rows")


def test_wrong_header_numbers_in_first_row():
    check_error(rows_csv([good_row()], header=good_row()), "row 1", "wrong header")


def test_missing_target_column():
    header = ["hsi_id", *BAND_COLUMNS, "don"]
    check_error(rows_csv([good_row()], header=header), "row 1", "vomitoxin_ppb")


def test_missing_band_columns_are_named():
    header = [c for c in HEADER if c not in ("17", "300")]
    row = good_row()[:len(header)]
    check_error(rows_csv([row], header=header), "row 1", "'17'", "'300'", "2 of 448")


def test_extra_column_is_named():
    header = [*HEADER, "notes"]
    check_error(rows_csv([[*good_row(), "x"]], header=header), "row 1", "'notes'")


def test_duplicate_column():
    header = [*HEADER[:-1], "5", "vomitoxin_ppb"]
    check_error(rows_csv([[*good_row()[:-1], "0.5", "1"]], header=header), "'5' appears twice")


def test_non_numeric_cell_names_row_and_column():
    row = good_row()
    row[1 + 42] = "abc"
    check_error(rows_csv([good_row(), row]), "row 3", "column '42'", "'abc' is not a number")


def test_empty_cell():
    row = good_row()
    row[-1] = ""
    check_error(rows_csv([row]), "row 2", "column 'vomitoxin_ppb'", "empty cell")


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_and_inf(bad):
    row = good_row()
    row[10] = bad
    check_error(rows_csv([row]), "row 2", "column '9'", "not a finite number")


def test_negative_target():
    check_error(rows_csv([good_row(0, "-5")]), "row 2", "vomitoxin_ppb", "negative")


def test_short_row():
    check_error(rows_csv([good_row()[:-3]]), "row 2", "cells")


def test_several_problems_are_counted():
    rows = [good_row(i, "-1") for i in range(4)]
    message = check_error(rows_csv(rows), "row 2")
    assert "3 more problems" in message


def test_duplicate_ids_warn_but_load():
    ds = parse_csv(rows_csv([good_row(1), good_row(1), good_row(2)]), name="lab.csv")
    assert ds.rows == 3
    assert len(ds.warnings) == 1 and "'id1'" in ds.warnings[0]


def test_missing_local_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "absent.csv"))


def test_synthetic_round_trips_through_the_lab_format():
    ds = generate(50, seed=3)
    again = parse_csv(to_csv(ds.X, ds.y, ds.ids), name="synthetic.csv")
    assert np.allclose(again.X, ds.X, atol=1e-9) and np.array_equal(again.y, ds.y)


def test_synthetic_is_seeded_realistic_and_heavy_tailed():
    a, b, c = generate(400, seed=1), generate(400, seed=1), generate(400, seed=2)
    assert np.array_equal(a.X, b.X) and a.sha256 == b.sha256
    assert not np.array_equal(a.X, c.X)
    assert 0.2 <= a.X.min() and a.X.max() <= 1.1
    assert 0.10 < np.mean(a.y == 0) < 0.25          # a point mass at zero, like the lab data
    assert a.y.max() > 10 * np.median(a.y)          # heavy right tail
    # DON is linked to the spectra: some band correlates clearly with log1p(ppb).
    corr = [abs(np.corrcoef(a.X[:, i], np.log1p(a.y))[0, 1]) for i in range(0, N_BANDS, 8)]
    assert max(corr) > 0.2


def test_real_files_lf_and_spreadsheet_crlf_agree(real_data_path):
    lf = load_dataset(str(real_data_path))
    crlf = load_dataset(str(real_data_path.with_name("corn_hsi_don_excel_crlf.csv")))
    assert lf.X.shape == crlf.X.shape == (500, N_BANDS)
    assert np.allclose(lf.X, crlf.X, atol=1e-8) and np.array_equal(lf.y, crlf.y)
    assert lf.sha256 != crlf.sha256                  # different bytes, same data
    assert any("duplicated hsi_id" in w for w in lf.warnings)


def test_data_from_s3(s3_bucket):
    from don_core.store import s3_client
    ds = generate(20, seed=0)
    s3_client().put_object(Bucket=s3_bucket, Key="data/lab.csv", Body=to_csv(ds.X, ds.y, ds.ids))
    loaded = load_dataset(f"s3://{s3_bucket}/data/lab.csv")
    assert loaded.rows == 20 and loaded.sha256 == ds.sha256
    # a --data value that names nothing is bad input (exit 2), like a missing local file
    with pytest.raises(DataError, match="no such object"):
        load_dataset(f"s3://{s3_bucket}/data/absent.csv")


def test_s3_read_failure_is_infrastructure_naming_endpoint_and_cause(s3_env, monkeypatch):
    from tests.net import free_port
    endpoint = f"http://127.0.0.1:{free_port()}"       # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(SourceError) as info:            # not DataError: the CLI exits 1, not 2
        load_dataset("s3://lab/data/corn.csv")
    message = str(info.value)
    assert "s3://lab/data/corn.csv" in message and f"endpoint {endpoint}" in message
    assert "Connection refused" in message and "\n" not in message


# --- what a valid file can still lack for training, and files that are not what they seem ---

def dataset_with_targets(targets: list[str]):
    return parse_csv(rows_csv([good_row(i, t) for i, t in enumerate(targets)]), name="lab.csv")


@pytest.mark.parametrize("value", ["0", "120"])
def test_target_without_variation_is_refused(value):
    ds = dataset_with_targets([value] * 40)
    with pytest.raises(DataError) as info:
        check_trainable(ds, folds=5)
    assert "lab.csv" in str(info.value) and "same value" in str(info.value)
    assert f"({value})" in str(info.value) and "all 40 rows" in str(info.value)


@pytest.mark.parametrize("rows", [1, 2, 3, 24])
def test_too_few_rows_for_the_evaluation_is_one_clear_line(rows):
    ds = dataset_with_targets([str(10 * i) for i in range(rows)])
    with pytest.raises(DataError) as info:
        check_trainable(ds, folds=3)
    message = str(info.value)
    assert message.startswith(f"lab.csv: {rows} data row") and "too few" in message
    assert "at least 25" in message and "\n" not in message


def test_enough_varied_rows_pass_the_training_checks():
    check_trainable(generate(25, seed=0), folds=5)
    check_trainable(dataset_with_targets([str(i) for i in range(25)]), folds=5)


@pytest.mark.parametrize("sep, word", [(";", "semicolons"), ("\t", "tabs")])
def test_other_separator_gets_a_hint(sep, word):
    raw = rows_csv([good_row()]).decode().replace(",", sep).encode()
    check_error(raw, "row 1", "no 'vomitoxin_ppb' column", word, repr(sep), "comma-separated")


def test_directory_as_data_is_named(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path))


def test_row_length_problems_are_capped(tmp_path):
    # 100,000 short rows: read stops after the first few problems instead of collecting all.
    path = tmp_path / "junk.csv"
    path.write_bytes(rows_csv([["1", "2"]] * 100_000))
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert str(info.value) == (f"{path}: row 2: 2 cells, header has {len(HEADER)} "
                               "(and at least 10 more problems)")


def test_lines_split_across_read_blocks(monkeypatch):
    # Tiny blocks put CR|LF pairs, multi-byte characters and rows across block edges.
    import don_core.labcsv as data
    raw = rows_csv([good_row(i, str(i)) for i in range(30)], newline="\r\n")
    raw = raw.replace(b"id1,", "id\u00e9,".encode())
    monkeypatch.setattr(data, "_BLOCK", 7)
    ds = parse_csv(raw, name="lab.csv")
    assert ds.rows == 30 and ds.ids[1] == "id\u00e9" and ds.y[-1] == 29.0


def test_loading_memory_stays_near_the_parsed_matrix(tmp_path):
    """Peak traced memory while loading a 6 MB file stays below 1.3x its size (the float64
    matrix alone is ~0.6x): no whole-file copies (bytes, text, per-row lists, stacked copy)."""
    import tracemalloc
    ds = generate(1000, seed=0)
    path = tmp_path / "lab.csv"
    path.write_bytes(to_csv(ds.X, ds.y, ds.ids))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        loaded = load_dataset(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.rows == 1000 and loaded.sha256 == ds.sha256
    assert peak < 1.3 * size, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
