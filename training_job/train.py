"""The training job: validate data, evaluate honestly, fit on all rows, export, publish."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from don_core.artifact import (EVALUATION_FILE, FAMILY_ALIASES, GOLDEN_FILE, ONNX_FILE,
                               build_metadata, decision_score, reference_rows, write_evaluation,
                               write_golden)
from don_core.contract import ONNX_ATOL_PPB, ONNX_MIN_AGREEMENT, ONNX_RTOL
from don_core.export_check import agreement, probe_rows
from don_core.store import check_model_name, open_store
from don_core.schema import DECISION_THRESHOLDS_PPB, FALSE_ACCEPT_TARGET, FALSE_REJECT_TARGET
from training_job import calibration, decision, drift, evaluate, onnx_export, synthetic
from training_job import reference as reference_set
from training_job.data import Dataset, check_trainable, load_dataset
from training_job.families import rf, tf
from training_job.metrics import regression_metrics

FAMILIES = {"sklearn": rf, "tensorflow": tf}
HEAD_ATOL = 1e-4   # on the 0..1 decision head score


def load_data(src: str) -> Dataset:
    """A CSV path (PVC), `s3://bucket/key`, or `synthetic[:ROWS]` (the embedded default)."""
    if synthetic.is_source(src):
        rows = src.partition(":")[2]
        if rows and not rows.isdigit():
            raise ValueError(f"--data {src!r}: expected synthetic or synthetic:ROWS")
        return synthetic.generate(int(rows) if rows else synthetic.DEFAULT_ROWS)
    return load_dataset(src)


def train(*, data: str, store: str, model: str, family: str, seed: int = 0, quick: bool = False,
          reference_fraction: float | None = None, accept_relabel: bool = False,
          limits: tuple[int, ...] = DECISION_THRESHOLDS_PPB, alpha: float = FALSE_ACCEPT_TARGET,
          beta: float = FALSE_REJECT_TARGET,
          progress: Callable[[str], None] | None = None) -> tuple[int, str, dict]:
    """Returns (version, version URI, metadata)."""
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    family = FAMILY_ALIASES.get(family, family)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: choose rf or tf")
    check_model_name(model)
    target_store = open_store(store)
    target_store.check_writable(model)     # before hours of fitting, not after
    module = FAMILIES[family]
    params = dict(module.DEFAULTS)
    started = time.monotonic()

    dataset = load_data(data)
    for warning in dataset.warnings:
        say(f"warning: {warning}")
    say(f"[data] {dataset.source}: {dataset.rows} rows, sha256 {dataset.sha256[:12]}...")
    scheme = evaluate.QUICK if quick else evaluate.FULL
    check_trainable(dataset, scheme["folds"])
    # Rows of the model's reference set are never fitted on; everything below sees the rest.
    held = reference_set.split(dataset, target_store, model, reference_fraction, say,
                               accept_relabel)
    X, y = dataset.X[held.fit_rows], dataset.y[held.fit_rows]
    ids = [dataset.ids[i] for i in held.fit_rows]
    say(f"[cv] {family}: {scheme['folds']} folds x {scheme['repeats']} repeats"
        + (" (--quick: evaluation only; the final model is the full one)" if quick else ""))
    # nested: the reported thresholds and interval are fitted on each training side's own inner CV
    cv = evaluate.cross_validate(lambda: module.build(seed, **params), X, y, seed=seed,
                                 progress=lambda m: say(f"[cv] {m}"), nested=True, **scheme)
    say(f"[cv] decision head: the same {scheme['folds']} folds x {scheme['repeats']} repeats, "
        "nested")
    head = evaluate.out_of_fold_scores(lambda: decision.build(seed, limits), X, y, seed=seed,
                                       **scheme)
    predictions = cv.pop("predictions")
    calibrated = calibration.calibrate(y, predictions, head, limits=limits, alpha=alpha,
                                       beta=beta)
    calibrated["score_method"] = decision.METHOD

    train_rows, holdout_rows = evaluate.holdout_split(y, seed)
    say(f"[holdout] fitting on {len(train_rows)} rows, scoring {len(holdout_rows)}")
    holdout_model = module.build(seed, **params).fit(X[train_rows], y[train_rows])
    holdout = regression_metrics(y[holdout_rows], holdout_model.predict(X[holdout_rows]))

    say(f"[final] fitting on all {len(y)} rows")
    final = module.build(seed, **params).fit(X, y)
    final_head = decision.build(seed, limits).fit(X, y)
    print(evaluate.format_table({family: cv}), flush=True)
    print(calibration.format_table({family: calibrated}), flush=True)
    if synthetic.is_source(data):
        say("[note] synthetic data: these figures show that the pipeline runs end to end, not how "
            "well a model predicts real corn (real-data figures: README, 'Models and honest "
            "evaluation')")

    golden = holdout_rows[:evaluate.GOLDEN_MAX_ROWS]
    with tempfile.TemporaryDirectory(prefix="don-train-") as tmp:
        out = Path(tmp) / "version"
        out.mkdir()
        module.export(final, out)
        write_evaluation(out / EVALUATION_FILE, ids, y, predictions["oof"], X)
        reference_at = reference_rows(X[golden])
        reference = module.load_native(out)(reference_at)  # what serving must match
        write_golden(out / GOLDEN_FILE, X[golden], y[golden], [ids[i] for i in golden],
                     reference_ppb=reference)
        export_check = _check_exports(module, final, out, X, reference_at, reference)
        decision_files = final_head.export(out)
        export_check["decision_head"] = _check_head(final_head, decision_files, out, X)
        metadata = build_metadata(
            model=model, family=family,
            training_data={"source": dataset.source, "sha256": dataset.sha256,
                           "rows": dataset.rows, "warnings": dataset.warnings,
                           "reference": held.metadata},
            target_range_ppb=(float(y.min()), float(y.max())),
            hyperparameters={"seed": seed, **params},
            calibration=calibrated, decision=decision_files,
            metrics={"cv": cv,
                     "holdout": {"rows": int(len(holdout_rows)),
                                 "fraction": evaluate.HOLDOUT_FRACTION, "figures": holdout},
                     "export_check": export_check,
                     "reference": _reference_figures(final, held.reference),
                     "drift": drift.export(X, out, seed),
                     "training_seconds": round(time.monotonic() - started, 1)})
        version = target_store.publish(model, out, metadata)
    uri = target_store.uri(model, version)
    say(f"[publish] {model} version {version} -> {uri}")
    return version, uri, target_store.read_metadata(model, version)


def _reference_figures(final, reference: dict | None) -> dict:
    """The final model on the stored reference set; no figures for a model that keeps none."""
    if reference is None:
        return {"rows": 0, "figures": None}
    return {"rows": len(reference["targets_ppb"]),
            "figures": regression_metrics(reference["targets_ppb"],
                                          final.predict(np.asarray(reference["instances"])))}


def _check_exports(module, fitted, directory: Path, X: np.ndarray, reference_at: np.ndarray,
                   reference: np.ndarray) -> dict:
    """The written native artifact and the ONNX copy must both reproduce the fitted model, and the
    ONNX copy must pass the lean serving image's check (against the recorded reference predictions)."""
    probe = probe_rows(X, extra=200)
    expected = fitted.predict(probe)
    native = onnx_export.check_match(expected, module.load_native(directory)(probe), "native")
    onnx_path = directory / ONNX_FILE
    onnx_err = onnx_export.check_match(expected, onnx_export.onnx_predict(onnx_path, probe), "onnx")
    served, _ = agreement(reference, onnx_export.onnx_predict(onnx_path, reference_at))
    if served < ONNX_MIN_AGREEMENT:
        raise RuntimeError(f"onnx: the serving check would refuse the ONNX copy (agrees on {served:.1%} of "
                           f"the reference rows, needs {ONNX_MIN_AGREEMENT:.0%})")
    return {"rows": int(len(probe)), "max_relative_error_native": native,
            "max_relative_error_onnx": onnx_err, "rtol": ONNX_RTOL,
            "atol_ppb": ONNX_ATOL_PPB, "reference_agreement_onnx": served}


def _check_head(head, files: dict[str, str], directory: Path, X: np.ndarray) -> dict:
    """The exported decision head must give the fitted head's scores for each limit (float32
    trees may flip a split on a rare probe row, as for the model itself: ONNX_MIN_AGREEMENT of
    the rows)."""
    probe = probe_rows(X, extra=200)
    expected = head.predict(probe)
    agreed = {}
    for limit, name in files.items():
        got = onnx_export.onnx_predict(directory / name, probe, decision_score(limit))
        agreed[limit], _ = agreement(expected[int(limit)], got, 0.0, HEAD_ATOL)
        if agreed[limit] < ONNX_MIN_AGREEMENT:
            raise RuntimeError(f"onnx: decision head {name} agrees with the fitted head on only "
                               f"{agreed[limit]:.1%} of {len(probe)} rows")
    return {"rows": int(len(probe)), "atol": HEAD_ATOL, "agreement": agreed}
