"""The two model families. Each module offers `build(seed, **hyperparameters)` -> an estimator with
`fit(X, y)` / `predict(X) -> ppb`, `DEFAULTS`, and `export(fitted, directory)` writing its native
artifact and `model.onnx`."""
