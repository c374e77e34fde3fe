"""The lean serving path (no native fallback, as in the default model-server image): ONNX Runtime
checked against the native predictions training recorded (golden.json reference_predictions), or a
refusal naming the file and why."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import requests

from don_core.artifact import REFERENCE_KEY, read_golden
from model_server.model import DonModel, ServeOptions
from model_server.native import NATIVE_BACKENDS
from tests.fixtures_server import REPO, copy_version

LEAN = ServeOptions(native_fallback=False)
NATIVE_MODULES = ("sklearn", "tensorflow", "scipy", "joblib", "keras")

# A fresh interpreter: the whole server's imports, then one lean load and a prediction per family.
LEAN_PROCESS = """
import json, sys
import numpy as np
import model_server.__main__, model_server.routes
from model_server.model import DonModel, ServeOptions
out = {}
for name, path in json.loads(sys.argv[1]).items():
    model = DonModel(name, path, ServeOptions(native_fallback=False))
    model.load()
    rows = np.asarray(json.load(open(path + "/golden.json"))["instances"][:5])
    out[name] = {"ready": model.ready, "reason": model.reason, "backend": model.backend_name,
                 "ppb": model.infer(rows).tolist()}
out["native_modules"] = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
print(json.dumps(out))
"""


def lean(model_dir, name="don-rf") -> DonModel:
    model = DonModel(name, model_dir, LEAN)
    model.load()
    return model


def test_lean_load_imports_no_native_library_and_matches_native(serving_store):
    dirs = {"don-rf": str(serving_store / "don-rf" / "1"), "don-tf": str(serving_store / "don-tf" / "1")}
    proc = subprocess.run([sys.executable, "-c", LEAN_PROCESS, json.dumps(dirs), ",".join(NATIVE_MODULES)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["native_modules"] == []
    for name, family, artifact in (("don-rf", "sklearn", "model.joblib"), ("don-tf", "tensorflow", "saved_model")):
        assert out[name]["ready"] and out[name]["backend"] == "onnxruntime", out[name]
        rows = np.asarray(read_golden(serving_store / name / "1" / "golden.json")["instances"][:5])
        native = np.maximum(NATIVE_BACKENDS[family](serving_store / name / "1" / artifact).predict(rows), 0)
        np.testing.assert_allclose(out[name]["ppb"], native, rtol=LEAN.onnx_rtol, atol=LEAN.onnx_atol)


def test_lean_checks_against_the_recorded_native_predictions(serving_store):
    model = lean(serving_store / "don-rf" / "1")
    assert model.ready and model.native_fallback is False
    assert model.onnx_check["used"] and model.onnx_check["against"] == "recorded native predictions"
    assert model.onnx_check["agreement"] >= 0.99 and model.status()["native_fallback"] is False


def test_lean_refuses_a_missing_onnx_copy_the_full_server_serves_it(serving_store, tmp_path):
    d = copy_version(serving_store / "don-rf" / "1", tmp_path / "v", lambda d: (d / "model.onnx").unlink(),
                     rehash=True)
    model = lean(d)
    assert not model.ready and model.state == "refused"
    assert f"{d / 'model.onnx'}: missing" in model.reason and "no native fallback" in model.reason
    full = DonModel("don-rf", d, ServeOptions(native_fallback=True))
    full.load()
    assert full.ready and full.backend_name == "sklearn"


def test_lean_refuses_an_onnx_copy_that_disagrees(serving_store, tmp_path):
    other = serving_store / "don-rf" / "2" / "model.onnx"  # another seed: another forest
    d = copy_version(serving_store / "don-rf" / "1", tmp_path / "v",
                     lambda d: (d / "model.onnx").write_bytes(other.read_bytes()), rehash=True)
    model = lean(d)
    assert not model.ready
    assert str(d / "model.onnx") in model.reason and "differ from the recorded native predictions" in model.reason
    assert model.onnx_check["used"] is False and model.onnx_check["agreement"] < 0.99


def test_lean_refuses_a_broken_onnx_copy_or_one_without_a_recorded_reference(serving_store, tmp_path):
    src = serving_store / "don-rf" / "1"
    broken = lean(copy_version(src, tmp_path / "a", lambda d: (d / "model.onnx").write_bytes(b"not onnx"),
                               rehash=True))
    assert not broken.ready and "model.onnx: ONNX Runtime cannot load it" in broken.reason

    def drop_reference(d):
        golden = json.loads((d / "golden.json").read_text())
        del golden[REFERENCE_KEY]
        (d / "golden.json").write_text(json.dumps(golden))

    old = lean(copy_version(src, tmp_path / "b", drop_reference, rehash=True))
    assert not old.ready and "golden.json records no reference predictions" in old.reason


def test_lean_server_reports_the_refusal_in_status_and_log(serving_store, start_server, tmp_path):
    d = copy_version(serving_store / "don-rf" / "1", tmp_path / "v", lambda d: (d / "model.onnx").unlink(),
                     rehash=True)
    server = start_server("don-rf", d, env={"DON_NATIVE_FALLBACK": "off"}, ready=False)
    assert requests.get(server.url("/v2/health/ready")).status_code == 503
    status = requests.get(server.url("/status")).json()
    assert status["state"] == "refused" and status["native_fallback"] is False
    assert f"{d / 'model.onnx'}: missing" in status["reason"]
    assert f"{d / 'model.onnx'}: missing" in server.log()
