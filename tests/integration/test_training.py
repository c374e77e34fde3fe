"""The training job as users and the Kubernetes Job run it: the CLI, in subprocesses."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from don_core.artifact import read_golden, verify_version_dir
from don_core.calibration import Calibration
from don_core.schema import (DECISION_THRESHOLDS_PPB, FALSE_ACCEPT_TARGET, INTERVAL_LEVEL,
                             N_BANDS)
from tests.conftest import REPO, run_training
from training_job import onnx_export
from training_job.synthetic import generate, to_csv


def test_both_families_publish_complete_versions(model_store, model_store_trained_at):
    for model, family, versions in (("don-rf", "sklearn", [1, 2]), ("don-tf", "tensorflow", [1])):
        listed = sorted(int(p.name) for p in (model_store / model).iterdir() if p.name.isdigit())
        assert listed == versions
        meta = verify_version_dir(model_store / model / "1", expected_model=model)
        assert meta["family"] == family
        assert meta["training_data"]["rows"] == 300
        assert len(meta["training_data"]["sha256"]) == 64
        # the model's reference rows are never fitted on: CV, hold-out and golden use the rest
        held = meta["training_data"]["reference"]
        assert held["uri"] == str(model_store_trained_at / model / "reference.json")
        assert (model_store / model / "reference.json").is_file()
        assert held["fit_rows"] + held["excluded"]["rows"] == 300 and held["excluded"]["rows"] > 15
        assert meta["metrics"]["reference"]["rows"] == held["rows"]
        cv = meta["metrics"]["cv"]
        assert cv["folds"] * cv["repeats"] == len(cv["per_fold"]) == 3     # --quick
        for figure in ("r2", "rmse_ppb", "mae_ppb", "r2_log1p", "spearman",
                       "balanced_accuracy_1000", "balanced_accuracy_5000", "auc_1000",
                       "false_accept_rate_1000"):
            assert {"mean", "sd", "median"} <= set(cv["summary"][figure]), figure
        holdout_rows = meta["metrics"]["holdout"]["rows"]
        assert holdout_rows == math.ceil(0.2 * held["fit_rows"])  # train_test_split rounds up
        assert meta["libraries"]["scikit-learn"] and meta["libraries"]["onnxruntime"]
        assert meta["hyperparameters"]["seed"] in (1, 2)
        golden = read_golden(model_store / model / "1" / "golden.json")
        assert len(golden["instances"]) == holdout_rows and len(golden["instances"][0]) == N_BANDS
        assert not set(golden["ids"]) & set(held["excluded"]["ids"])
        calibration = Calibration.from_metadata(meta)
        assert calibration.limits == DECISION_THRESHOLDS_PPB
        assert calibration.interval_level == INTERVAL_LEVEL
        doc = meta["calibration"]
        assert doc["targets"]["false_accept_rate"] == FALSE_ACCEPT_TARGET and doc["method"]
        for rule in doc["limits"]:
            assert 0 <= rule["expected"]["lab_share"] <= 1
            for key in ("false_accept_rate", "false_reject_rate", "lab_share"):
                assert doc["cv"]["summary"][f"{key}_{rule['limit_ppb']}"]["n"] >= 1, key
        assert 0.5 < doc["cv"]["summary"]["interval_coverage"]["mean"] <= 1
        # decisions on the decision head's score (one ONNX model, an output per limit, checked
        # at export), with the thresholds-on-ppb baseline of the same folds beside them
        assert calibration.score == "decision_head" and doc["score_method"]
        assert meta["artifacts"]["decision"] == {str(limit): "decision.onnx"
                                                 for limit in DECISION_THRESHOLDS_PPB}
        assert min(meta["metrics"]["export_check"]["decision_head"]["agreement"].values()) >= 0.99
        assert doc["cv"]["baseline"]["summary"]["lab_share_1000"]["n"] == 3


def test_decisions_do_not_depend_on_the_family(model_store):
    """The decision head scores the spectra alone: on the same data, seed and folds both families
    get the same thresholds and decision figures; only the interval (on their ppb) differs."""
    rf, tf = (verify_version_dir(model_store / model / "1")["calibration"]
              for model in ("don-rf", "don-tf"))
    # approx: the trees' parallel averaging may differ in the last bit between runs
    for key in ("accept_below_ppb", "reject_above_ppb"):
        assert [r[key] for r in rf["limits"]] == pytest.approx([r[key] for r in tf["limits"]])
    decided = [key for key in rf["cv"]["summary"] if not key.startswith("interval")]
    assert decided
    for key in decided:
        assert rf["cv"]["summary"][key]["mean"] == pytest.approx(tf["cv"]["summary"][key]["mean"])
    assert rf["interval"]["halfwidth"] != tf["interval"]["halfwidth"]


def test_sklearn_artifact_loads_without_this_project(model_store, tmp_path):
    """model.joblib must load where only sklearn is installed (KServe's sklearn server)."""
    version = model_store / "don-rf" / "1"
    script = f"""
import sys, json, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('don_core', 'training_job', 'model_server', 'ops'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import joblib, numpy as np
model = joblib.load({str(version / 'model.joblib')!r})
golden = json.load(open({str(version / 'golden.json')!r}))
print(json.dumps(model.predict(np.array(golden['instances'])).tolist()))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    predictions = np.array(json.loads(out.stdout))
    rows = len(read_golden(version / "golden.json")["instances"])
    assert predictions.shape == (rows,) and (predictions >= 0).all()
    onnx = onnx_export.onnx_predict(version / "model.onnx",
                                    np.array(read_golden(version / "golden.json")["instances"]))
    assert np.allclose(onnx, predictions, rtol=1e-3, atol=1.0)


def test_tensorflow_saved_model_has_the_serving_signature(model_store):
    import tensorflow as tf
    version = model_store / "don-tf" / "1"
    loaded = tf.saved_model.load(str(version / "saved_model"))
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["spectra"]
    assert spec.shape.as_list() == [None, N_BANDS] and spec.dtype == tf.float32
    golden = np.array(read_golden(version / "golden.json")["instances"], dtype=np.float32)
    ppb = signature(spectra=tf.constant(golden))["ppb"].numpy()
    assert ppb.shape == (len(golden),) and (ppb >= 0).all()
    meta = verify_version_dir(version)
    low, high = meta["target_range_ppb"]
    assert ppb.max() <= high * 1.001          # clipped to the training range: no wild extrapolation
    # even absurd inputs stay inside the training range
    absurd = signature(spectra=tf.constant(np.full((2, N_BANDS), 50.0, np.float32)))["ppb"]
    assert float(tf.reduce_max(absurd)) <= high * 1.001
    assert np.allclose(onnx_export.onnx_predict(version / "model.onnx", golden), ppb,
                       rtol=1e-3, atol=1.0)


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(model_store, tmp_path):
    for model, family in (("don-rf", "rf"), ("don-tf", "tf")):
        run_training("train", "--data", "synthetic:300", "--store", str(tmp_path), "--model", model,
                     "--family", family, "--seed", "1", "--quick")
        first = verify_version_dir(model_store / model / "1")
        again = verify_version_dir(tmp_path / model / "1")
        # Same folds, same models; only the last bits of multi-threaded tree sums may differ.
        for a, b in zip(again["metrics"]["cv"]["per_fold"], first["metrics"]["cv"]["per_fold"]):
            assert a == pytest.approx(b, rel=1e-9), family
        golden = np.array(read_golden(model_store / model / "1" / "golden.json")["instances"])
        assert np.allclose(onnx_export.onnx_predict(model_store / model / "1" / "model.onnx",
                                                       golden),
                              onnx_export.onnx_predict(tmp_path / model / "1" / "model.onnx",
                                                       golden), rtol=1e-6), family


def test_cli_lists_and_shows_versions(model_store):
    table = run_training("versions", "--store", str(model_store), "--model", "don-rf").stdout
    assert "VERSION" in table and str(model_store / "don-rf" / "2") in table
    rows = json.loads(run_training("versions", "--store", str(model_store), "--model", "don-rf",
                                   "--json").stdout)
    assert [r["version"] for r in rows] == [1, 2]
    shown = json.loads(run_training("show", "--store", str(model_store), "--model", "don-rf").stdout)
    assert shown["version"] == 2
    shown = run_training("show", "--store", str(model_store), "--model", "don-rf",
                         "--version", "1")
    one = json.loads(shown.stdout)
    assert one["version"] == 1
    # the decision figures for people, per limit, on stderr beside the JSON
    for limit in DECISION_THRESHOLDS_PPB:
        line = next(x for x in shown.stderr.splitlines() if x.split()[:2] == ["sklearn",
                                                                             str(limit)])
        assert "+/-" in line


def test_cli_versions_of_an_unknown_model_fails_with_one_line(model_store):
    for args in ([], ["--json"]):
        out = run_training("versions", "--store", str(model_store), "--model", "don-x", *args,
                           check=False)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip() == f"error: no published versions of don-x in {model_store}"


def test_cli_shows_both_family_names_and_a_schema_summary(model_store):
    table = run_training("versions", "--store", str(model_store), "--model", "don-rf").stdout
    assert "rf (sklearn)" in table
    rows = json.loads(run_training("versions", "--store", str(model_store), "--model", "don-tf",
                                   "--json").stdout)
    assert rows[0]["family"] == "tensorflow" and rows[0]["family_option"] == "tf"
    out = run_training("show", "--store", str(model_store), "--model", "don-rf").stdout
    shown = json.loads(out)
    assert shown["feature_schema"]["columns"].startswith("448 bands '0'..'447'")
    assert shown["family"] == "sklearn" and shown["family_option"] == "rf"
    band_lines = [line for line in out.splitlines() if line.strip().rstrip(",") == '"447"']
    assert not band_lines, "show printed band names one per line"
    full = json.loads(run_training("show", "--store", str(model_store), "--model", "don-rf",
                                   "--full").stdout)
    assert full == verify_version_dir(model_store / "don-rf" / "2")
    assert len(full["feature_schema"]["columns"]) == N_BANDS


def test_cli_reads_every_option_from_the_environment(tmp_path):
    env = {"DON_DATA": "synthetic:120", "DON_STORE": str(tmp_path), "DON_MODEL": "env-model",
           "DON_FAMILY": "rf", "DON_SEED": "7", "DON_QUICK": "true", "DON_LIMITS": "800",
           "DON_FALSE_ACCEPT_TARGET": "0.1", "DON_FALSE_REJECT_TARGET": "0.2"}
    out = run_training("train", env=env)
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "env-model" / "1")
    assert "fold 3/3" in out.stderr              # progress, and --quick from DON_QUICK
    meta = verify_version_dir(tmp_path / "env-model" / "1")
    assert meta["hyperparameters"]["seed"] == 7 and meta["training_data"]["rows"] == 120
    assert [r["limit_ppb"] for r in meta["calibration"]["limits"]] == [800]
    assert meta["calibration"]["targets"] == {"false_accept_rate": 0.1,
                                              "false_reject_rate": 0.2, "interval_level": 0.9}


@pytest.mark.parametrize("args, message", [
    (["--limits", "1000,abc"], "expected ppb integers"),
    (["--limits", "0"], "distinct positive integers"),
    (["--false-accept-target", "1.5"], "strictly between 0 and 1"),
    (["--false-reject-target", "x"], "is not a number"),
    (["--reference-fraction", "-0.1"], "0 (no reference set) or above 0 up to 0.5"),
    (["--reference-fraction", "0.6"], "0 (no reference set) or above 0 up to 0.5"),
    (["--reference-fraction", "tenth"], "is not a number"),
])
def test_bad_calibration_options_are_refused_before_training(tmp_path, args, message):
    out = run_training("train", "--data", "synthetic:50", "--store", str(tmp_path), "--model",
                       "don-rf", "--family", "rf", *args, check=False)
    assert out.returncode == 2 and message in out.stderr.strip().splitlines()[-1], out.stderr
    assert not (tmp_path / "don-rf").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--data", "{bad}"], 2, "row 3, column '10'"),
    (["--data", "/nonexistent.csv"], 2, "no such file"),
    (["--data", "{dir}"], 2, "is a directory"),
    (["--data", "{zeros}"], 2, "holds the same value (0) in all 40 rows"),
    (["--data", "{three}"], 2, "3 data rows, too few to train and evaluate"),
    (["--data", "{semicolons}"], 2, "looks separated by semicolons"),
    (["--data", "synthetic:50", "--store", "{file}/store"], 1, "cannot be written: not a directory"),
    (["--data", "synthetic:abc"], 2, "synthetic:ROWS"),
    (["--data", "synthetic:50", "--model", "Bad/Name"], 1, "model name"),
    (["--data", "synthetic:50", "--store", "gs://x"], 1, "only a filesystem path or s3"),
])
def test_failures_exit_non_zero_with_one_line_and_publish_nothing(tmp_path, args, code, message):
    bad = tmp_path / "bad.csv"
    ds = generate(20)
    lines = to_csv(ds.X, ds.y, ds.ids).decode().splitlines()
    cells = lines[2].split(",")
    cells[11] = "n/a"
    lines[2] = ",".join(cells)
    bad.write_text("\n".join(lines))
    good = generate(40)
    files = {"bad": bad, "dir": tmp_path, "file": bad, "zeros": tmp_path / "zeros.csv",
             "three": tmp_path / "three.csv", "semicolons": tmp_path / "semicolons.csv"}
    files["zeros"].write_bytes(to_csv(good.X, good.y * 0, good.ids))
    files["three"].write_text("\n".join(to_csv(good.X, good.y, good.ids).decode().splitlines()[:4]))
    files["semicolons"].write_text(to_csv(good.X, good.y, good.ids).decode().replace(",", ";"))
    store = tmp_path / "store"
    defaults = {"--store": str(store), "--model": "don-rf", "--family": "rf"}
    argv = [a.format(**files) for a in args]
    for key, value in defaults.items():
        if key not in argv:
            argv += [key, value]
    out = run_training("train", *argv, "--quick", check=False)
    assert out.returncode == code, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, out.stderr
    assert "Traceback" not in out.stderr
    assert "[cv]" not in out.stderr                      # refused before any fitting
    assert not (store / "don-rf").exists() or not any((store / "don-rf").iterdir())


def test_cli_gc_lists_then_removes_a_crashed_publish(tmp_path):
    import os
    import time
    staging = tmp_path / "don-rf" / ".staging-0123abcd"
    (staging / "saved_model").mkdir(parents=True)
    (staging / "model.onnx").write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    for path in (staging / "model.onnx", staging / "saved_model", staging):
        os.utime(path, (two_hours_ago, two_hours_ago))
    dry = run_training("gc", "--store", str(tmp_path), "--dry-run")
    assert dry.stdout.startswith(f"would remove staging directory {staging} (1 file, idle 2.0 h)")
    assert staging.is_dir()
    young = run_training("gc", "--store", str(tmp_path), "--older-than", "3h")
    assert young.stdout.startswith("nothing to clean up") and staging.is_dir()
    done = run_training("gc", "--store", str(tmp_path), "--model", "don-rf")
    assert done.stdout.startswith(f"removed staging directory {staging}") and not staging.exists()
    bad = run_training("gc", "--store", str(tmp_path), "--older-than", "soon", check=False)
    assert bad.returncode == 2 and "expected a number with an optional unit" in bad.stderr


def test_missing_required_options_are_named():
    out = run_training("train", "--family", "rf", check=False)
    assert out.returncode == 2
    assert "--data, --store, --model required" in out.stderr


@pytest.mark.slow
def test_concurrent_training_jobs_get_distinct_versions(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "training_job", "train", "--data",
                               "synthetic:120", "--store", str(tmp_path), "--model", "don-rf",
                               "--family", "rf", "--seed", str(seed), "--quick"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for seed in (1, 2, 3)]
    outputs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(Path(o).name for o in outputs) == ["1", "2", "3"]
    seeds = {verify_version_dir(Path(o))["hyperparameters"]["seed"] for o in outputs}
    assert seeds == {1, 2, 3}


@pytest.mark.s3
def test_s3_faults_exit_1_with_the_cause_before_fitting_and_a_missing_object_exits_2(s3_bucket,
                                                                                    s3_env, tmp_path):
    from tests.net import free_port
    missing = run_training("train", "--data", f"s3://{s3_bucket}/lab/absent.csv", "--store",
                           str(tmp_path), "--model", "don-rf", "--family", "rf", "--quick",
                           env=s3_env, check=False)
    assert missing.returncode == 2 and "no such object" in missing.stderr.splitlines()[-1]
    down = {**s3_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "2"}
    for argv, where in ((["--data", "s3://lab/corn.csv", "--store", str(tmp_path)], "cannot read s3://lab/corn.csv"),
                        (["--data", "synthetic:50", "--store", "s3://models/team"], "cannot reach store s3://models/")):
        out = run_training("train", *argv, "--model", "don-rf", "--family", "rf", "--quick",
                           env=down, check=False)
        last = out.stderr.strip().splitlines()[-1]
        assert out.returncode == 1, out.stderr
        assert where in last and f"endpoint {down['AWS_ENDPOINT_URL']}" in last, last
        assert "Connection refused" in last and "[cv]" not in out.stderr, out.stderr


@pytest.mark.s3
def test_train_from_and_into_s3(s3_bucket, s3_env, tmp_path):
    from don_core.store import open_store, s3_client
    from training_job.synthetic import generate, to_csv
    ds = generate(150, seed=4)
    s3_client().put_object(Bucket=s3_bucket, Key="lab/corn.csv", Body=to_csv(ds.X, ds.y, ds.ids))
    root = f"s3://{s3_bucket}/models"
    out = run_training("train", "--data", f"s3://{s3_bucket}/lab/corn.csv", "--store", root,
                       "--model", "don-rf", "--family", "rf", "--quick", env=s3_env)
    assert out.stdout.strip().splitlines()[-1] == f"{root}/don-rf/1"
    store = open_store(root)
    assert store.list_versions("don-rf") == [1]
    meta = store.fetch("don-rf", 1, tmp_path / "v1")
    assert verify_version_dir(meta)["training_data"]["sha256"] == ds.sha256


@pytest.mark.slow
@pytest.mark.parametrize("family", ["rf", "tf"])
def test_trains_on_the_real_data(real_data_path, tmp_path, family):
    out = run_training("train", "--data", str(real_data_path), "--store", str(tmp_path),
                       "--model", f"don-{family}", "--family", family, "--quick")
    assert "duplicated hsi_id" in out.stderr
    meta = verify_version_dir(tmp_path / f"don-{family}" / "1")
    assert meta["training_data"]["rows"] == 500
    summary = meta["metrics"]["cv"]["summary"]
    # Far above chance on the real spectra even with the --quick evaluation.
    assert summary["auc_1000"]["median"] > 0.7, summary["auc_1000"]
    assert summary["balanced_accuracy_1000"]["median"] > 0.6


# ---- data that contradicts the stored reference set; no reference set ------------------------

def _lab_csv(path: Path, data, y=None) -> str:
    path.write_bytes(to_csv(data.X, data.y if y is None else y, data.ids))
    return str(path)


def _refused_before_fitting(out, store: Path, model: str) -> list[str]:
    assert out.returncode == 2, out.stderr
    assert "[cv]" not in out.stderr and "Traceback" not in out.stderr
    assert not any(p.name.isdigit() for p in (store / model).iterdir()), "published anyway"
    return out.stderr[out.stderr.index("error: "):].splitlines()


def test_a_ppm_export_of_the_real_data_is_refused_before_fitting(real_data_path, tmp_path):
    """The reported case: the lab's CSV again with vomitoxin_ppb divided by 1000. The model's
    reference set is the one its first run stores (48 of the 500 rows)."""
    from don_core.store import open_store
    from training_job import reference as training_reference
    from training_job.data import load_dataset
    real = load_dataset(str(real_data_path))
    store = tmp_path / "store"
    held = training_reference.split(real, open_store(str(store)), "don-rf", None, lambda _: None)
    ref = held.reference
    assert len(set(ref["keys"])) == 48
    relabelled = sum(t > 0 for t in ref["targets_ppb"])   # zeros stay zero in ppm
    for factor, cause in ((1 / 1000, "targets 1000x smaller: ppm instead of ppb?"),
                          (1000, "targets 1000x larger: ppt (ng/kg) instead of ppb, or ppm "
                                 "converted twice?")):
        data = _lab_csv(tmp_path / "lab.csv", real, real.y * factor)
        lines = _refused_before_fitting(run_training(
            "train", "--data", data, "--store", str(store), "--model", "don-rf", "--family",
            "rf", "--quick", check=False), store, "don-rf")
        assert lines[0] == (f"error: {relabelled} of the 48 keys of the reference set "
                            f"{store}/don-rf/reference.json have other targets or spectra in "
                            f"{data} (at most 2 tolerated)")
        example = lines[1].split()
        assert example[:2] == ["example:", "hsi_id"] and example[2].rstrip(":") in ref["keys"]
        assert float(example[-1]) == pytest.approx(float(example[4]) * factor)
        direction = "smaller" if factor < 1 else "larger"
        assert lines[2] == (f"  targets here are 1000x {direction} than the reference set's: "
                            "median ratio %g on the rows with the same key" % factor)
        assert lines[3:] == [f"  likely cause: {cause}",
                             "  refused before fitting: correct the data, or pass "
                             "--accept-relabel (DON_ACCEPT_RELABEL=1; chart: "
                             "training.acceptRelabel=true) only if the relabel is deliberate"]
    assert relabelled == 38


@pytest.mark.slow
def test_relabels_a_few_rows_train_with_a_warning_many_only_with_the_flag(tmp_path):
    store, data = tmp_path / "store", generate(150)
    common = ["--store", str(store), "--model", "don-rf", "--family", "rf", "--quick"]
    run_training("train", "--data", _lab_csv(tmp_path / "v1.csv", data), *common)
    ref = json.loads((store / "don-rf" / "reference.json").read_text())
    # two lots re-measured by the lab: trained, with a warning naming them
    remeasured = data.y.copy()
    rows = [data.ids.index(k) for k in ref["keys"][:2]]
    remeasured[rows] = remeasured[rows] * 1.5 + 20
    out = run_training("train", "--data", _lab_csv(tmp_path / "v2.csv", data, remeasured), *common)
    warning = next(x for x in out.stderr.splitlines() if x.startswith("warning: 2 of the "))
    assert all(f"{data.ids[i]}: stored {data.y[i]:g} ppb, here {remeasured[i]:g}" in warning
               for i in rows)
    record = verify_version_dir(store / "don-rf" / "2")["training_data"]["reference"]["relabel"]
    assert record["verdict"] == "tolerated" and record["keys"] == sorted(data.ids[i] for i in rows)
    # the ppm export: refused, then accepted by DON_ACCEPT_RELABEL and recorded
    ppm = _lab_csv(tmp_path / "ppm.csv", data, data.y / 1000)
    out = run_training("train", "--data", ppm, *common, check=False)
    assert out.returncode == 2 and "ppm instead of ppb?" in out.stderr
    assert not (store / "don-rf" / "3").exists()
    out = run_training("train", "--data", ppm, *common, env={"DON_ACCEPT_RELABEL": "1"})
    assert "warning: accepted by --accept-relabel: " in out.stderr
    meta = verify_version_dir(store / "don-rf" / "3")
    record = meta["training_data"]["reference"]["relabel"]
    assert record["verdict"] == "accepted" and record["accept_relabel"] is True
    assert record["keys"] == sorted(k for k, t in zip(ref["keys"], ref["targets_ppb"]) if t > 0)
    assert record["likely_cause"] == "targets 1000x smaller: ppm instead of ppb?"
    assert json.loads((store / "don-rf" / "reference.json").read_text()) == ref  # never replaced


@pytest.mark.slow
def test_reference_fraction_zero_keeps_no_set_for_every_version(tmp_path):
    store = tmp_path / "store"
    common = ["--data", "synthetic:120", "--store", str(store), "--model", "don-rf", "--family",
              "rf", "--quick"]
    run_training("train", *common, "--reference-fraction", "0")
    assert not (store / "don-rf" / "reference.json").exists()
    meta = verify_version_dir(store / "don-rf" / "1")
    held = meta["training_data"]["reference"]
    assert held["fraction"] == 0 and held["uri"] is None and held["rows"] == 0
    assert held["fit_rows"] == 120 and "no reference set" in held["note"]
    assert meta["metrics"]["reference"] == {"rows": 0, "figures": None}
    assert meta["metrics"]["holdout"]["rows"] == math.ceil(0.2 * 120)   # every row in play
    # the first run's choice holds: 0.1 is refused before fitting, no option keeps 0
    out = run_training("train", *common, "--reference-fraction", "0.1", check=False)
    assert out.returncode == 2 and "[cv]" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --reference-fraction 0.1: don-rf keeps no reference set (its first run chose 0, "
        "see version 1); the choice is fixed across versions")
    run_training("train", *common)
    assert not (store / "don-rf" / "reference.json").exists()
    assert verify_version_dir(store / "don-rf" / "2")["training_data"]["reference"][
        "chosen_by_this_run"] is False
