"""DonModel loading: verification, the ONNX fast path checked against the native model, fallback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from don_core.artifact import REFERENCE_KEY, read_golden
from model_server.native import NATIVE_BACKENDS
from model_server.model import DonModel, ServeOptions
from tests.fixtures_server import copy_version


@pytest.fixture(scope="module")
def rf_dir(serving_store):
    return serving_store / "don-rf" / "1"


def loaded(model_dir, **options) -> DonModel:
    model = DonModel("don-rf", model_dir, ServeOptions(**options))
    model.load()
    return model


def golden(model_dir):
    return np.asarray(read_golden(model_dir / "golden.json")["instances"])


def test_serves_onnx_matching_native_on_golden_rows(rf_dir):
    model = loaded(rf_dir)
    assert model.ready and model.state == "ready"
    assert model.backend_name == "onnxruntime" and model.onnx_check["used"]
    rows = golden(rf_dir)
    native = NATIVE_BACKENDS["sklearn"](rf_dir / "model.joblib").predict(rows)
    fast = model.infer(rows)
    # the tested tolerance: the defaults of ServeOptions
    np.testing.assert_allclose(fast, native, rtol=ServeOptions.onnx_rtol,
                               atol=ServeOptions.onnx_atol)
    assert (fast >= 0).all()
    assert model.status()["version"] == str(json.loads(
        (rf_dir / "metadata.json").read_text())["version"])


def test_predictions_are_never_negative(rf_dir):
    model = loaded(rf_dir)

    class Negative:
        name = "test"

        def predict(self, x):
            return np.full(len(x), -5.0, dtype=np.float32)

    model.backend = Negative()
    assert (model.infer(golden(rf_dir)[:3]) == 0).all()


def test_altered_file_is_refused(rf_dir, tmp_path):
    def corrupt(d):
        data = bytearray((d / "model.onnx").read_bytes())
        data[-1] ^= 0xFF
        (d / "model.onnx").write_bytes(bytes(data))

    model = loaded(copy_version(rf_dir, tmp_path / "v", corrupt))
    assert not model.ready and model.state == "refused"
    assert "model.onnx fails its sha256 check" in model.reason


def test_other_feature_schema_is_refused(rf_dir, tmp_path):
    def other_schema(d):
        meta = json.loads((d / "metadata.json").read_text())
        meta["feature_schema"]["n_features"] = 447
        (d / "metadata.json").write_text(json.dumps(meta))

    model = loaded(copy_version(rf_dir, tmp_path / "v", other_schema))
    assert not model.ready and "feature schema" in model.reason


def test_unlisted_file_is_refused(rf_dir, tmp_path):
    model = loaded(copy_version(rf_dir, tmp_path / "v",
                                lambda d: (d / "extra.pkl").write_bytes(b"x")))
    assert not model.ready and "not listed" in model.reason


def test_onnx_that_disagrees_falls_back_to_native(serving_store, rf_dir, tmp_path):
    other = serving_store / "don-rf" / "2" / "model.onnx"  # another seed: another forest
    d = copy_version(rf_dir, tmp_path / "v",
                     lambda d: (d / "model.onnx").write_bytes(other.read_bytes()), rehash=True)
    model = loaded(d)
    assert model.ready and model.backend_name == "sklearn"
    assert model.onnx_check["used"] is False and model.onnx_check["max_abs_diff_ppb"] > 0.5


def test_missing_or_broken_onnx_falls_back_to_native(rf_dir, tmp_path):
    missing = loaded(copy_version(rf_dir, tmp_path / "a",
                                  lambda d: (d / "model.onnx").unlink(), rehash=True))
    broken = loaded(copy_version(rf_dir, tmp_path / "b",
                                 lambda d: (d / "model.onnx").write_bytes(b"not onnx"),
                                 rehash=True))
    for model in (missing, broken):
        assert model.ready and model.backend_name == "sklearn"
    assert "absent" in missing.onnx_check["reason"]
    assert "cannot load" in broken.onnx_check["reason"]


def test_onnx_can_be_turned_off(rf_dir):
    assert loaded(rf_dir, use_onnx=False).backend_name == "sklearn"


def test_tensorflow_version_serves_onnx_checked_against_saved_model(serving_store):
    tf_dir = serving_store / "don-tf" / "1"
    model = DonModel("don-tf", tf_dir)
    model.load()
    assert model.ready and model.family == "tensorflow"
    assert model.backend_name == "onnxruntime", model.onnx_check
    rows = golden(tf_dir)
    native = NATIVE_BACKENDS["tensorflow"](tf_dir / "saved_model").predict(rows)
    np.testing.assert_allclose(model.infer(rows), np.maximum(native, 0),
                               rtol=ServeOptions.onnx_rtol, atol=ServeOptions.onnx_atol)


def test_a_version_without_calibration_serves_ppb_only(rf_dir, tmp_path):
    def drop_calibration(path):
        meta = json.loads((path / "metadata.json").read_text())
        meta.pop("calibration")
        (path / "metadata.json").write_text(json.dumps(meta))

    model = loaded(copy_version(rf_dir, tmp_path / "v", drop_calibration))
    assert model.ready and model.output_types == {  # no decisions, no interval
        "ppb": "FP32", "outlier_score": "FP32", "out_of_distribution": "BOOL"}
    calibrated = loaded(rf_dir)
    rows = golden(rf_dir)[:5]
    ppb = calibrated.infer(rows)
    out = calibrated.outputs(rows, ppb, ["ppb_upper", "decision_1000"])
    assert list(out) == ["ppb_upper", "decision_1000"] and (out["ppb_upper"] >= ppb).all()


def test_model_files_swapped_from_another_version_are_refused(serving_store, rf_dir, tmp_path):
    # Both files of version 2 (another seed, same data) with every sha256 recomputed: the hashes
    # pass, the predictions recorded at training time do not.
    other = serving_store / "don-rf" / "2"

    def swap(d):
        for name in ("model.joblib", "model.onnx"):
            (d / name).write_bytes((other / name).read_bytes())

    model = loaded(copy_version(rf_dir, tmp_path / "v", swap, rehash=True))
    assert not model.ready and model.state == "refused"
    assert "differ from those recorded at training time" in model.reason


def test_version_without_recorded_predictions_is_refused(rf_dir, tmp_path):
    def drop(d):
        doc = json.loads((d / "golden.json").read_text())
        del doc[REFERENCE_KEY]
        (d / "golden.json").write_text(json.dumps(doc))

    model = loaded(copy_version(rf_dir, tmp_path / "v", drop, rehash=True))
    assert not model.ready and "no reference predictions" in model.reason


def test_decisions_come_from_the_decision_head(rf_dir, tmp_path):
    """The served decisions are the calibration applied to the head's ONNX scores (one model,
    an output per limit); a version whose calibration needs a head it does not carry (or cannot
    load) is refused, naming it."""
    import onnxruntime as ort

    model = loaded(rf_dir)
    assert model.calibration.score == "decision_head"
    meta = json.loads((rf_dir / "metadata.json").read_text())
    assert meta["artifacts"]["decision"] == {"1000": "decision.onnx", "5000": "decision.onnx"}
    rows = golden(rf_dir)[:20]
    ppb = model.infer(rows)
    scores = dict(zip((1000, 5000), ort.InferenceSession(str(rf_dir / "decision.onnx")).run(
        ["score_1000", "score_5000"], {"spectra": rows.astype(np.float32)})))
    assert model.decision_head.predict(rows).tolist() == np.column_stack(
        [scores[1000], scores[5000]]).tolist()
    expected = model.calibration.decisions(ppb, scores)
    out = model.outputs(rows, ppb, ["decision_5000", "ppb_upper", "decision_1000"])
    assert list(out) == ["decision_5000", "ppb_upper", "decision_1000"]
    assert out["decision_1000"].tolist() == expected[1000].tolist()
    assert out["decision_5000"].tolist() == expected[5000].tolist()
    assert len(set(expected[1000].tolist())) > 1      # the rows reach more than one decision

    def drop_head(path):
        meta = json.loads((path / "metadata.json").read_text())
        meta["artifacts"].pop("decision")
        (path / "metadata.json").write_text(json.dumps(meta))

    refused = loaded(copy_version(rf_dir, tmp_path / "no-head", drop_head))
    assert not refused.ready and "decision head" in refused.reason

    def break_head(path):
        (path / "decision.onnx").write_bytes(b"not onnx")

    refused = loaded(copy_version(rf_dir, tmp_path / "broken-head", break_head, rehash=True))
    assert not refused.ready and "decision.onnx" in refused.reason


def legacy_head(path):
    """The layout of versions published before the one-file head: decision_<limit>.onnx, one
    per limit, whose one output is `score`."""
    import onnx
    from onnx import helper, utils

    for limit in (1000, 5000):
        out = path / f"decision_{limit}.onnx"
        utils.extract_model(str(path / "decision.onnx"), str(out), ["spectra"],
                            [f"score_{limit}"])
        single = onnx.load(out)
        single.graph.node.append(helper.make_node("Identity", [f"score_{limit}"], ["score"]))
        single.graph.output[0].name = "score"
        onnx.save(single, out)
    (path / "decision.onnx").unlink()
    meta = json.loads((path / "metadata.json").read_text())
    meta["artifacts"]["decision"] = {str(limit): f"decision_{limit}.onnx" for limit in (1000, 5000)}
    (path / "metadata.json").write_text(json.dumps(meta))


def test_versions_with_one_head_file_a_limit_still_serve_the_same_decisions(rf_dir, tmp_path):
    model = loaded(rf_dir)
    old = loaded(copy_version(rf_dir, tmp_path / "legacy", legacy_head, rehash=True))
    assert old.ready, old.reason
    rows = golden(rf_dir)[:40]
    names = ["decision_1000", "decision_5000", "ppb_lower", "ppb_upper"]
    assert old.decision_head.predict(rows).tolist() == model.decision_head.predict(rows).tolist()
    got, want = old.outputs(rows, old.infer(rows), names), model.outputs(rows, model.infer(rows), names)
    for name in names:
        assert got[name].tolist() == want[name].tolist(), name


def test_release_free_memory_is_harmless_here_and_elsewhere(monkeypatch):
    from model_server import model as served

    served.release_free_memory()  # glibc: malloc_trim(0)

    def no_libc(*_args, **_kwargs):
        raise OSError("no such library")

    monkeypatch.setattr(served.ctypes, "CDLL", no_libc)
    served.release_free_memory()  # another C library: nothing to do
