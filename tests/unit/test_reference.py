"""The reference set: the hash split, its place in the store (filesystem and a real S3 server),
what the training job excludes, and how the operator judges stable against canary on it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from don_core import reference as ref
from don_core.artifact import utc_now
from don_core.schema import ID_COLUMN
from don_core.store import StoreError, open_store
from ops.rollout import analysis
from ops.rollout.reference import ReferenceUnavailable, load_reference
from ops.rollout.spec import parse_spec
from training_job import reference as training_reference
from training_job import synthetic
from training_job.data import Dataset

THRESHOLDS = parse_spec({"target": "don", "candidate": {"version": 2}}).analysis


# ---- the hash split -------------------------------------------------------------------------

def test_hash_split_is_stable_and_independent_of_other_rows():
    keys = [f"sample-{i}" for i in range(2000)]
    mask = ref.in_reference(keys, 0.1)
    # the same key is in or out whatever the order and whatever else the file holds
    shuffled = list(np.random.default_rng(0).permutation(keys))
    again = dict(zip(shuffled, ref.in_reference(shuffled, 0.1)))
    assert all(again[k] == m for k, m in zip(keys, mask))
    assert list(ref.in_reference(keys[:50], 0.1)) == list(mask[:50])
    # a fixed rule: this key is a reference row for every version and every machine
    assert ref.in_reference(["sample-3"], 0.1).tolist() == \
        [int(__import__("hashlib").sha256(b"sample-3").hexdigest()[:16], 16) < 0.1 * 2 ** 64]


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25])
def test_hash_split_respects_the_fraction_and_nests(fraction):
    keys = [f"HSI-{i:05d}" for i in range(20000)]
    mask = ref.in_reference(keys, fraction)
    assert abs(mask.mean() - fraction) < 0.01
    assert not (ref.in_reference(keys, fraction / 2) & ~mask).any()  # a smaller set is inside


def test_fraction_bounds():
    for bad in (0, -0.1, 0.6):
        with pytest.raises(ref.ReferenceError, match="fraction"):
            ref.in_reference(["a"], bad)


def test_rows_without_ids_are_keyed_by_their_spectrum():
    X = np.random.default_rng(1).uniform(0.2, 1.0, (5, 448))
    kind, keys = ref.row_keys(["row-2", "row-3", "row-4", "row-5", "row-6"], X, has_ids=False)
    assert kind == ref.SPECTRUM_KEY and len(set(keys)) == 5
    assert ref.row_keys(["row-9"], X[:1], has_ids=False)[1] == keys[:1]  # not the row number
    assert ref.row_keys(["a"], X[:1], has_ids=True) == (ID_COLUMN, ["a"])


def doc_for(dataset, model="don-rf", fraction=0.1) -> dict:
    _, keys = ref.row_keys(dataset.ids, dataset.X, True)
    mask = ref.in_reference(keys, fraction)
    return ref.build_reference(model=model, key=ID_COLUMN, fraction=fraction,
                               keys=[k for k, m in zip(keys, mask) if m], X=dataset.X[mask],
                               y=dataset.y[mask], source={"source": dataset.source},
                               created=utc_now())


# ---- the store: <root>/<model>/reference.json, written once ---------------------------------

@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/team/models"
    return str(tmp_path / "store")


def test_store_creates_once_reads_back_and_never_replaces(store_root):
    store = open_store(store_root)
    data = synthetic.generate(200)
    doc = doc_for(data)
    assert store.read_reference("don-rf") is None
    assert store.create_reference("don-rf", doc) is True
    assert store.reference_uri("don-rf") == f"{store_root}/don-rf/reference.json"
    assert store.read_reference("don-rf") == doc
    other = doc_for(synthetic.generate(200, seed=5))
    assert store.create_reference("don-rf", other) is False  # a second first run loses
    assert ref.fingerprint(store.read_reference("don-rf")) == ref.fingerprint(doc)
    # versions are unaffected by the file beside them
    assert store.list_versions("don-rf") == []
    with pytest.raises(ref.ReferenceError, match="not 'don-tf'"):
        store.create_reference("don-tf", doc)


def test_store_refuses_a_damaged_or_edited_reference_set(store_root):
    store = open_store(store_root)
    doc = doc_for(synthetic.generate(200))
    edited = dict(doc, keys=["not-selected-by-the-rule"] + doc["keys"][1:])
    bodies = {"garbage": b"{not json", "edited": json.dumps(edited).encode(),
              "empty rows": json.dumps(dict(doc, keys=[], instances=[], targets_ppb=[])).encode()}
    for name, body in bodies.items():
        model = f"m-{name.replace(' ', '-')}"
        if store_root.startswith("s3://"):
            from don_core.store import s3_client
            bucket, _, prefix = store_root[5:].partition("/")
            s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{model}/reference.json", Body=body)
        else:
            os.makedirs(f"{store_root}/{model}", exist_ok=True)
            with open(f"{store_root}/{model}/reference.json", "wb") as fh:
                fh.write(body)
        with pytest.raises(StoreError) as caught:
            store.read_reference(model)
        assert str(caught.value).startswith(f"{store_root}/{model}/reference.json: "), name


def test_concurrent_first_runs_keep_exactly_one_set(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    store = open_store(str(tmp_path / "store"))
    docs = [doc_for(synthetic.generate(150, seed=s)) for s in range(6)]
    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(lambda d: store.create_reference("don-rf", d), docs))
    assert won.count(True) == 1
    assert store.read_reference("don-rf") == docs[won.index(True)]
    assert sorted(p.name for p in (tmp_path / "store" / "don-rf").iterdir()) == ["reference.json"]


# ---- the training job's split ---------------------------------------------------------------

def quiet(_msg):
    pass


def test_training_split_keeps_reference_rows_out_and_reuses_the_stored_set(tmp_path):
    store = open_store(str(tmp_path / "store"))
    data = synthetic.generate(300)
    first = training_reference.split(data, store, "don-rf", None, quiet)
    stored_keys = set(first.reference["keys"])
    fit_ids = {data.ids[i] for i in first.fit_rows}
    assert first.metadata["created_by_this_run"] and first.metadata["rule"]["fraction"] == 0.1
    assert not fit_ids & stored_keys  # disjoint from every row that is fitted on
    assert len(fit_ids) + len(stored_keys) == data.rows
    assert first.metadata["excluded"]["rows"] == len(stored_keys) > 15
    assert sorted(first.metadata["excluded"]["ids"]) == sorted(stored_keys)

    # a later run on the same data: same set, not re-created, identical exclusion
    second = training_reference.split(data, store, "don-rf", None, quiet)
    assert not second.metadata["created_by_this_run"]
    assert second.metadata["sha256"] == first.metadata["sha256"]
    assert list(second.fit_rows) == list(first.fit_rows)

    # a later run on a bigger, newer export: the rule still excludes the new rows it selects,
    # the stored set stays as it was, and metadata.json says so
    newer = synthetic.generate(300, seed=1)
    bigger = Dataset(X=np.vstack([data.X, newer.X]), y=np.concatenate([data.y, newer.y]),
                     ids=data.ids + newer.ids, source="newer.csv", sha256="0" * 64)
    third = training_reference.split(bigger, store, "don-rf", None, quiet)
    assert third.reference == first.reference
    excluded = third.metadata["excluded"]
    assert excluded["selected_but_not_in_stored_set"] > 0
    assert not {bigger.ids[i] for i in third.fit_rows} & stored_keys
    assert all(ref.in_reference([bigger.ids[i] for i in third.fit_rows], 0.1) == False)  # noqa: E712

    # the target column shuffled (a broken export), accepted as a deliberate relabel (refused
    # otherwise: tests/unit/test_relabel.py): reference ids are still excluded, and the ones
    # whose rows differ from the stored set are named
    shuffled = synthetic.generate(300)
    shuffled.y = np.random.default_rng(3).permutation(shuffled.y)
    fourth = training_reference.split(shuffled, store, "don-rf", None, quiet, accept_relabel=True)
    assert list(fourth.fit_rows) == list(first.fit_rows)
    assert set(fourth.metadata["relabel"]["keys"]) <= stored_keys
    assert len(fourth.metadata["relabel"]["keys"]) > 5


def test_training_split_refuses_a_different_fraction_or_key(tmp_path):
    store = open_store(str(tmp_path / "store"))
    data = synthetic.generate(200)
    training_reference.split(data, store, "don-rf", 0.2, quiet)
    with pytest.raises(ValueError, match="differs from the fraction 0.2"):
        training_reference.split(data, store, "don-rf", 0.1, quiet)
    assert training_reference.split(data, store, "don-rf", 0.2, quiet).metadata["rule"][
        "fraction"] == 0.2
    no_ids = synthetic.generate(200)
    no_ids.has_ids = False
    with pytest.raises(ValueError, match="keyed on hsi_id"):
        training_reference.split(no_ids, store, "don-rf", None, quiet)


# ---- the operator's analysis ----------------------------------------------------------------

def figures(mae, far=0.2, version="2"):
    return {"mae": mae, "falseAcceptRate": far, "rows": 40, "version": version}


def compared(canary, stable=None, positives=20):
    stable = stable or figures(1.0, 0.2, "1")
    out = {"stable": stable, "canary": canary, "rows": 40, "positives": positives}
    if "mae" in canary and "mae" in stable:
        out["relativeIncrease"] = (canary["mae"] - stable["mae"]) / stable["mae"]
        if canary["falseAcceptRate"] is not None and stable["falseAcceptRate"] is not None:
            out["falseAcceptIncrease"] = canary["falseAcceptRate"] - stable["falseAcceptRate"]
    return out


def good_metrics():
    return {"requests": 50, "successRate": 1.0, "p99LatencyMs": 20.0}


def golden_pass(version="2"):
    return {"canary": {"agreement": 1.0, "rows": 330, "maxAbsDiffPpb": 0.0, "version": version}}


@pytest.mark.parametrize("reference,verdict,not_passed", [
    (compared(figures(1.05)), analysis.PASS, []),
    (compared(figures(1.3)), analysis.FAIL, ["referenceErrorIncrease"]),
    (compared(figures(1.0, far=0.45)), analysis.FAIL, ["referenceFalseAcceptIncrease"]),
    (compared(figures(1.0, far=None), figures(1.0, None, "1"), positives=0), analysis.PASS, []),
    (compared({"error": "http://canary answered 500"}), analysis.FAIL, ["referenceErrorIncrease"]),
    (compared(figures(1.0), {"error": "timeout"}), analysis.INCONCLUSIVE,
     ["referenceErrorIncrease"]),
    (compared(figures(1.0, version="1")), analysis.INCONCLUSIVE, ["canaryVersion"]),
    ({"unavailable": True, "error": "reference set unreadable: /mnt/store/don/reference.json: "
                                    "does not exist"}, analysis.INCONCLUSIVE, ["referenceSet"]),
])
def test_judge_reference_checks(reference, verdict, not_passed):
    result = analysis.judge(THRESHOLDS, good_metrics(), good_metrics(), golden_pass(), 2, reference)
    assert result["verdict"] == verdict, result["summary"]
    names = [c["name"] for c in result["checks"]]
    # the served-correctly (golden) check keeps its own result beside the reference checks
    assert "servedCorrectly" in names
    assert [c["name"] for c in result["checks"] if c["result"] != analysis.PASS] == not_passed
    for name in not_passed:
        assert name in result["summary"]
    if reference.get("unavailable"):
        assert "reference set unreadable: /mnt/store/don/reference.json: does not exist" in \
            result["summary"]


def test_golden_and_reference_fail_independently():
    worse_golden = {"canary": dict(golden_pass()["canary"], agreement=0.5)}
    result = analysis.judge(THRESHOLDS, good_metrics(), good_metrics(), worse_golden, 2,
                            compared(figures(1.0)))
    checks = {c["name"]: c["result"] for c in result["checks"]}
    assert checks["servedCorrectly"] == analysis.FAIL
    assert checks["referenceErrorIncrease"] == analysis.PASS
    # one canaryVersion check when both sets see the old version
    stale = analysis.judge(THRESHOLDS, good_metrics(), good_metrics(),
                           golden_pass(version="1"), 2,
                           compared(figures(1.0, version="1")))
    assert [c["name"] for c in stale["checks"]].count("canaryVersion") == 1


def test_operator_reads_the_set_or_names_path_and_error(tmp_path, monkeypatch):
    root = tmp_path / "store"
    with pytest.raises(ReferenceUnavailable) as missing:
        load_reference(str(root), "don")
    assert str(missing.value) == (f"reference set unreadable: {root}/don/reference.json: does "
                                  "not exist (no training run of don has created it)")
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "reference.json").write_text("[1, 2")
    with pytest.raises(ReferenceUnavailable, match=rf"^reference set unreadable: {root}/bad/"
                                                   r"reference.json: Expecting"):
        load_reference(str(root), "bad")
    doc = doc_for(synthetic.generate(120), model="good")
    open_store(str(root)).create_reference("good", doc)
    assert load_reference(str(root), "good") == doc
    with pytest.raises(ReferenceUnavailable, match="s3://no-such-bucket/don/reference.json: "):
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        load_reference("s3://no-such-bucket", "don")
