"""TensorFlow family: a small Keras MLP on in-fold PCA scores of standardised spectra.

Keras is used to fit the network; the exported SavedModel holds the whole inference path as
plain TF ops (standardise -> project -> dense stack -> clip to the training target range ->
inverse target transform), so there is no separate scaler file to get out of step and no Keras
object to deserialise when serving. Predictions are clipped to the training range because an
unclipped MLP extrapolates wildly on a heavy-tailed target.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from don_core.contract import INPUT_NAME, OUTPUT_NAME

FAMILY = "tensorflow"
DEFAULTS = {
    "pca_components": 16,
    "hidden": [32, 16],
    "dropout": 0.1,
    "l2": 1e-3,
    "learning_rate": 1e-3,
    "epochs": 3000,          # full-batch steps
    "patience": 300,
    "validation_fraction": 0.15,
    "ensemble": 5,             # networks averaged in target space: less variance on 500 rows
    "target": "root4",          # root4 (y ** 0.25) | sqrt | log1p
}
TARGETS = {"log1p": (np.log1p, np.expm1), "sqrt": (np.sqrt, np.square),
           "root4": (lambda y: np.power(y, 0.25), lambda t: np.power(np.maximum(t, 0), 4))}


@dataclass
class Network:
    """Everything inference needs, as arrays: the single description both exports are built from."""
    mean: np.ndarray          # (448,)
    scale: np.ndarray         # (448,)
    components: np.ndarray    # (448, k)
    members: list[list[tuple[np.ndarray, np.ndarray, str]]]  # per network: (W, b, activation)
    target_mean: float
    target_scale: float
    target_min: float         # clip range in transformed-target units
    target_max: float
    target: str

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = ((np.asarray(X, dtype=np.float32) - self.mean) / self.scale) @ self.components
        outputs = []
        for layers in self.members:
            h = scores
            for W, b, activation in layers:
                h = h @ W + b
                if activation == "relu":
                    h = np.maximum(h, 0)
            outputs.append(h[:, 0])
        t = np.clip(np.mean(outputs, axis=0) * self.target_scale + self.target_mean,
                    self.target_min, self.target_max)
        return np.maximum(TARGETS[self.target][1](t), 0.0)


class MlpRegressor:
    """sklearn-style estimator so both families go through the same evaluation code."""

    def __init__(self, seed: int, **params):
        self.seed = seed
        self.params = {**DEFAULTS, **params}
        self.network_: Network | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "MlpRegressor":
        import keras
        import tensorflow as tf

        p = self.params
        tf.config.experimental.enable_op_determinism()
        X = np.asarray(X, dtype=np.float64)
        mean, scale = X.mean(0), X.std(0)
        scale[scale == 0] = 1.0
        Z = (X - mean) / scale
        # PCA by SVD, fitted on this training set only.
        _, _, vt = np.linalg.svd(Z - Z.mean(0), full_matrices=False)
        components = vt[: p["pca_components"]].T
        S = Z @ components
        t = TARGETS[p["target"]][0](np.asarray(y, dtype=np.float64))
        t_mean, t_scale = float(t.mean()), float(t.std() or 1.0)

        target = ((t - t_mean) / t_scale).astype(np.float32)
        members = []
        for member in range(p["ensemble"]):
            # Each member: its own seed and its own inner validation split of the training rows.
            keras.utils.set_random_seed(self.seed + member)
            order = np.random.default_rng(self.seed + member).permutation(len(S))
            n_val = max(1, int(round(len(S) * p["validation_fraction"])))
            val, train = order[:n_val], order[n_val:]
            reg = keras.regularizers.L2(p["l2"])
            layers = []
            for width in p["hidden"]:
                layers.append(keras.layers.Dense(width, activation="relu", kernel_regularizer=reg))
                if p["dropout"]:
                    layers.append(keras.layers.Dropout(p["dropout"], seed=self.seed + member))
            layers.append(keras.layers.Dense(1))
            model = keras.Sequential([keras.Input(shape=(S.shape[1],)), *layers])
            _fit_full_batch(model, S[train].astype(np.float32), target[train],
                            S[val].astype(np.float32), target[val], p)
            dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
            members.append([(layer.kernel.numpy(), layer.bias.numpy(),
                             "relu" if layer is not dense[-1] else "linear") for layer in dense])
        self.network_ = Network(
            mean=mean.astype(np.float32), scale=scale.astype(np.float32),
            components=components.astype(np.float32),
            members=members,
            target_mean=t_mean, target_scale=t_scale, target_min=float(t.min()),
            target_max=float(t.max()), target=p["target"])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.network_.predict(X)


def _fit_full_batch(model, x, y, x_val, y_val, p) -> None:
    """Full-batch Adam in one compiled step (a few hundred rows: far faster than Keras `fit`),
    with early stopping on the inner validation rows; the best weights are kept."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(p["learning_rate"])
    x, y, x_val, y_val = map(tf.constant, (x, y, x_val, y_val))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)[:, 0] - y)) + \
                tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def val_loss():
        return tf.reduce_mean(tf.square(model(x_val, training=False)[:, 0] - y_val))

    best, best_weights, waited = np.inf, model.get_weights(), 0
    for epoch in range(p["epochs"]):
        step()
        if epoch % 10:
            continue
        loss = float(val_loss())
        if loss < best - 1e-4:
            best, best_weights, waited = loss, model.get_weights(), 0
        else:
            waited += 10
            if waited >= p["patience"]:
                break
    model.set_weights(best_weights)


def build(seed: int, **params) -> MlpRegressor:
    return MlpRegressor(seed, **params)


def export_saved_model(network: Network, directory: Path) -> None:
    """SavedModel with signature serving_default: spectra float32 [None,448] -> ppb float32 [None]."""
    import tensorflow as tf

    from don_core.schema import N_BANDS

    class DonModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.mean = tf.constant(network.mean)
            self.scale = tf.constant(network.scale)
            self.components = tf.constant(network.components)
            self.members = [[(tf.constant(W), tf.constant(b), act) for W, b, act in layers]
                            for layers in network.members]

        @tf.function(input_signature=[tf.TensorSpec([None, N_BANDS], tf.float32, name=INPUT_NAME)])
        def serve(self, spectra):
            scores = tf.matmul((spectra - self.mean) / self.scale, self.components)
            outputs = []
            for layers in self.members:
                h = scores
                for W, b, activation in layers:
                    h = tf.matmul(h, W) + b
                    if activation == "relu":
                        h = tf.nn.relu(h)
                outputs.append(h[:, 0])
            t = tf.clip_by_value(tf.add_n(outputs) / len(outputs) * network.target_scale
                                 + network.target_mean,
                                 network.target_min, network.target_max)
            ppb = {"log1p": lambda: tf.math.expm1(t), "sqrt": lambda: tf.square(t),
                   "root4": lambda: tf.pow(tf.maximum(t, 0.0), 4.0)}[network.target]()
            return {OUTPUT_NAME: tf.maximum(ppb, 0.0)}

    module = DonModel()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})


def export(regressor: MlpRegressor, directory: Path) -> None:
    """Write the SavedModel and its ONNX copy, both built from the same fitted arrays."""
    from don_core.artifact import NATIVE_ARTIFACT, ONNX_FILE
    from training_job import onnx_export

    export_saved_model(regressor.network_, Path(directory) / NATIVE_ARTIFACT[FAMILY])
    onnx_export.save(onnx_export.network_to_onnx(regressor.network_),
                     Path(directory) / ONNX_FILE)


def load_native(directory: Path):
    import tensorflow as tf

    from don_core.artifact import NATIVE_ARTIFACT
    serve = tf.saved_model.load(str(Path(directory) / NATIVE_ARTIFACT[FAMILY])) \
        .signatures["serving_default"]
    return lambda X: serve(**{INPUT_NAME: tf.constant(np.asarray(X, np.float32))})[OUTPUT_NAME].numpy()
