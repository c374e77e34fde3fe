"""Training refuses data that contradicts the model's stored reference set (training_job/relabel.py),
before any fitting: a real store on disk, the training job's own split."""
from __future__ import annotations

import numpy as np
import pytest

from don_core.store import open_store
from training_job import reference as training_reference
from training_job import relabel, synthetic
from training_job.relabel import RelabelError

ROWS = 500


@pytest.fixture
def stored(tmp_path):
    """A store whose model don-rf has its reference set from synthetic data (62 of 500 rows)."""
    store = open_store(str(tmp_path / "store"))
    first = training_reference.split(synthetic.generate(ROWS), store, "don-rf", None, _quiet)
    assert first.metadata["relabel"]["verdict"] == "same"
    return store, first.reference


def _quiet(_msg):
    pass


def _refused(store, data) -> list[str]:
    with pytest.raises(RelabelError) as caught:
        training_reference.split(data, store, "don-rf", None, _quiet)
    return str(caught.value).splitlines()


def _scaled(factor: float, seed: int = 0):
    data = synthetic.generate(ROWS, seed=seed)
    data.y = data.y * factor
    return data


def test_a_ppm_export_is_refused_naming_count_example_and_cause(stored):
    store, ref = stored
    keys = set(ref["keys"])
    positive = sum(t > 0 for t in ref["targets_ppb"])   # zeros stay zeros in ppm
    lines = _refused(store, _scaled(1 / 1000))
    assert lines[0] == (f"{positive} of the {len(keys)} keys of the reference set "
                        f"{store.reference_uri('don-rf')} have other targets or spectra in "
                        f"synthetic:{ROWS}:seed=0 (at most {relabel.tolerated(len(keys))} tolerated)")
    key, was, here = lines[1].split(" ")[2].rstrip(":"), lines[1].split(" ")[4], \
        lines[1].split(" ")[-1]
    assert key in keys and float(here) == pytest.approx(float(was) / 1000)
    assert lines[1].startswith("example: hsi_id ") and " ppb, here " in lines[1]
    assert lines[2] == ("targets here are 1000x smaller than the reference set's: median ratio "
                        "0.001 on the rows with the same key")
    assert lines[3] == "likely cause: targets 1000x smaller: ppm instead of ppb?"
    assert "--accept-relabel" in lines[4] and "DON_ACCEPT_RELABEL=1" in lines[4]
    assert store.read_reference("don-rf") == ref       # the stored set is untouched


def test_targets_1000x_larger_are_refused(stored):
    lines = _refused(stored[0], _scaled(1000))
    assert "likely cause: targets 1000x larger: ppt (ng/kg) instead of ppb, or ppm converted " \
           "twice?" in lines
    assert any(line.startswith("targets here are 1000x larger") for line in lines)


def test_another_file_in_ppm_is_refused_by_the_medians(stored):
    """No key in common with the stored set: the medians of the positive targets compare."""
    other = _scaled(1 / 1000, seed=3)
    other.ids = [f"later-{i}" for i in range(ROWS)]
    lines = _refused(stored[0], other)
    assert lines[0].startswith("targets here are ") and "smaller than the reference set's: " \
        "median of positive targets" in lines[0]
    assert lines[1] == "likely cause: targets 1000x smaller: ppm instead of ppb?"
    # the same kind of file on the stored scale trains (a new harvest with other medians)
    fine = synthetic.generate(ROWS, seed=3)
    fine.ids = other.ids
    kept = training_reference.split(fine, stored[0], "don-rf", None, _quiet)
    assert kept.metadata["relabel"]["verdict"] == "same"
    assert 1 / relabel.SCALE_FACTOR < kept.metadata["relabel"]["target_ratio"][
        "positive_medians"] < relabel.SCALE_FACTOR


def test_a_shuffled_target_column_is_refused_at_the_same_scale(stored):
    data = synthetic.generate(ROWS)
    data.y = np.random.default_rng(3).permutation(data.y)
    lines = _refused(stored[0], data)
    assert lines[-2] == ("likely cause: other targets at the same scale: a shuffled or mis-joined "
                         "target column, or a re-measured batch?")
    assert not any(line.startswith("targets here are") for line in lines)


def test_other_spectra_under_the_same_ids_are_refused(stored):
    data = synthetic.generate(ROWS, seed=4)         # other spectra, the same ids (seed in ids)
    data.ids = synthetic.generate(ROWS).ids
    data.y = synthetic.generate(ROWS).y
    lines = _refused(stored[0], data)
    assert lines[1].endswith(" and another spectrum"), lines[1]
    assert "likely cause: other spectra under the same ids" in lines[-2]


def _relabel(ref: dict, count: int, change=lambda y: y * 2 + 10):
    """The stored data with `count` reference rows re-measured."""
    data = synthetic.generate(ROWS)
    rows = [data.ids.index(k) for k in ref["keys"][:count]]
    data.y[rows] = change(data.y[rows])
    return data, [data.ids[i] for i in rows]


def test_a_few_relabelled_rows_train_with_a_warning(stored):
    store, ref = stored
    limit = relabel.tolerated(len(ref["keys"]))
    assert limit == max(relabel.TOLERATED_ROWS, int(relabel.TOLERATED_SHARE * 62)) == 3
    for count in (1, 2, limit):
        data, keys = _relabel(ref, count)
        said = []
        held = training_reference.split(data, store, "don-rf", None, said.append)
        record = held.metadata["relabel"]
        assert record["verdict"] == "tolerated" and record["rows"] == count
        assert sorted(record["keys"]) == sorted(keys) and not record["findings"]
        warning = next(m for m in said if m.startswith("warning: "))
        assert f"{count} of the 62 keys of the reference set have other targets" in warning
        assert f"{keys[0]}: stored " in warning
        assert not {data.ids[i] for i in held.fit_rows} & set(keys)   # still never fitted on
    data, _ = _relabel(ref, limit + 1)
    assert _refused(store, data)[0].startswith(f"{limit + 1} of the 62 keys")


def test_the_same_rows_exported_with_fewer_digits_are_the_same(stored):
    data = synthetic.generate(ROWS)
    data.X = np.round(data.X, 7)
    record = training_reference.split(data, stored[0], "don-rf", None, _quiet).metadata["relabel"]
    assert record["verdict"] == "same" and record["rows"] == 0


def test_the_flag_accepts_a_relabel_and_records_it(stored):
    store, ref = stored
    said = []
    held = training_reference.split(_scaled(1 / 1000), store, "don-rf", None, said.append,
                                    accept_relabel=True)
    record = held.metadata["relabel"]
    changed = sorted(k for k, t in zip(ref["keys"], ref["targets_ppb"]) if t > 0)
    assert record["verdict"] == "accepted" and record["accept_relabel"] is True
    assert record["keys"] == changed and record["rows"] == len(changed)
    assert record["likely_cause"] == "targets 1000x smaller: ppm instead of ppb?"
    assert record["target_ratio"]["matched_median"] == pytest.approx(0.001)
    assert record["examples"][0]["here_ppb"] == pytest.approx(record["examples"][0]["stored_ppb"]
                                                               / 1000)
    assert [m for m in said if m.startswith("warning: accepted by --accept-relabel: ")] == \
        [f"warning: accepted by --accept-relabel: {line}" for line in record["findings"]]
    assert store.read_reference("don-rf") == ref      # the set is never replaced


def test_fraction_zero_keeps_no_set(tmp_path):
    store = open_store(str(tmp_path / "store"))
    data = synthetic.generate(200)
    held = training_reference.split(data, store, "don-rf", 0.0, _quiet)
    assert held.reference is None and list(held.fit_rows) == list(range(200))
    assert held.metadata["fraction"] == 0 and held.metadata["uri"] is None
    assert held.metadata["rows"] == 0 and held.metadata["chosen_by_this_run"]
    assert store.read_reference("don-rf") is None and not (tmp_path / "store").exists()
    # a model with a stored set cannot switch to none
    training_reference.split(data, store, "don-tf", None, _quiet)
    with pytest.raises(ValueError, match="--reference-fraction 0.0 differs from the fraction 0.1"):
        training_reference.split(data, store, "don-tf", 0.0, _quiet)
