"""The comparison servers of benchmarks/serve.py, on plain KServe.

`--mode plain`: what a user writes by default — a kserve.Model whose predict() calls
`pipeline.predict` (sklearn) or `keras_model.predict` (TensorFlow, the SavedModel wrapped in a
Keras model) on the same version directory.
`--mode noop`: a kserve.Model that returns a constant per row: the framework's own floor.

Both run with the same logging settings as our server, so only the model code differs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from kserve import Model, ModelServer

from don_core import telemetry
from don_core.contract import INPUT_NAME, OUTPUT_NAME
from don_core.schema import N_BANDS

QUIET_LOGGERS = ("uvicorn.access", "kserve.trace")


class PlainModel(Model):
    def __init__(self, name: str, model_dir: Path):
        super().__init__(name)
        self.model_dir = Path(model_dir)

    def load(self) -> bool:
        family = json.loads((self.model_dir / "metadata.json").read_text())["family"]
        if family == "sklearn":
            import joblib

            self.model = joblib.load(self.model_dir / "model.joblib")
        else:
            import keras

            layer = keras.layers.TFSMLayer(str(self.model_dir / "saved_model"),
                                           call_endpoint="serving_default")
            inputs = keras.Input(shape=(N_BANDS,), dtype="float32", name=INPUT_NAME)
            self.model = keras.Model(inputs, layer(inputs)[OUTPUT_NAME])
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        x = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": np.asarray(self.model.predict(x)).reshape(-1).tolist()}


class NoopModel(Model):
    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        return {"predictions": [0.0] * len(payload["instances"])}


def main() -> int:
    parser = argparse.ArgumentParser(parents=[__import__("kserve.model_server").model_server
                                              .parser])
    parser.add_argument("--mode", choices=("plain", "noop"), required=True)
    parser.add_argument("--model_dir", default="/mnt/models")
    args = parser.parse_args()
    telemetry.configure_logging("INFO", QUIET_LOGGERS)
    model = (PlainModel(args.model_name, args.model_dir) if args.mode == "plain"
             else NoopModel(args.model_name))
    model.load()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                enable_latency_logging=False).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
