"""Honest evaluation: repeated stratified K-fold, every step fitted inside the fold.

Folds are stratified on quintiles of log1p(ppb) so the few very high samples spread over the
folds; the split seed is fixed. Nothing here selects hyper-parameters: figures are reported, never
tuned against.
"""
from __future__ import annotations

import itertools
import math
import time
import warnings
from typing import Callable

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from training_job.metrics import regression_metrics, summarise

FULL = {"folds": 5, "repeats": 5}
QUICK = {"folds": 3, "repeats": 1}
HOLDOUT_FRACTION = 0.2
GOLDEN_MAX_ROWS = 100
STRATA = 5   # quantile bins of log1p(ppb) that folds and hold-out are stratified on


def min_rows(folds: int) -> int:
    """Fewest rows for which every fold and the hold-out can hold each DON range."""
    return max(folds * STRATA, math.ceil(STRATA / HOLDOUT_FRACTION))


def check_splits(y: np.ndarray, folds: int) -> None:
    """Raise scikit-learn's ValueError now, before any fitting, if the splits are impossible."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holdout_split(y, 0)
        next(RepeatedStratifiedKFold(n_splits=folds, n_repeats=1, random_state=0)
             .split(np.zeros((len(y), 1)), strata(y)))


def strata(y: np.ndarray, bins: int = STRATA) -> np.ndarray:
    edges = np.quantile(np.log1p(y), np.linspace(0, 1, bins + 1)[1:-1])
    return np.digitize(np.log1p(y), edges)


def cross_validate(factory: Callable[[], object], X: np.ndarray, y: np.ndarray, *, folds: int,
                   repeats: int, seed: int, progress: Callable[[str], None],
                   nested: bool = False) -> dict:
    """Fold figures, and under "predictions" the out-of-fold predictions of every repeat
    (`oof[r, i]`), the fold that held each row out (`fold[r, i]`) and, with `nested`, the
    training sides' calibration predictions (`inner[r, k, i]`, see inner_scores): the
    calibration's input, not for metadata.json (the caller pops it)."""
    per_fold = []
    total = folds * repeats
    oof = np.full((repeats, len(y)), np.nan)
    fold_of = np.full((repeats, len(y)), -1)
    for index, (train, test) in enumerate(_splits(X, y, folds, repeats, seed), start=1):
        started = time.monotonic()
        model = factory().fit(X[train], y[train])
        predicted = np.asarray(model.predict(X[test]), dtype=float).reshape(-1)
        repeat = (index - 1) // folds
        oof[repeat, test], fold_of[repeat, test] = predicted, (index - 1) % folds
        figures = regression_metrics(y[test], predicted)
        per_fold.append(figures)
        progress(f"fold {index}/{total}: R2 {figures['r2']:.3f}, log1p-R2 "
                 f"{figures['r2_log1p']:.3f}, balanced accuracy@1000 "
                 f"{figures['balanced_accuracy_1000']:.3f} ({time.monotonic() - started:.1f}s)")
    predictions = {"oof": oof, "fold": fold_of}
    if nested:
        started = time.monotonic()
        predictions["inner"] = inner_scores(factory, X, y, folds=folds, repeats=repeats,
                                            seed=seed)
        progress(f"nested: {math.comb(folds, 2) * repeats} inner fits for the training sides' "
                 f"calibration predictions ({time.monotonic() - started:.1f}s)")
    return {"scheme": f"repeated stratified {folds}-fold x {repeats}", "folds": folds,
            "repeats": repeats, "seed": seed, "summary": summarise(per_fold),
            "per_fold": per_fold, "predictions": predictions}


def out_of_fold_scores(factory: Callable[[], object], X: np.ndarray, y: np.ndarray, *,
                       folds: int, repeats: int, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Scores of a model whose predict gives {limit: score}, on exactly the folds of
    cross_validate with the same folds, repeats and seed: "oof" {limit: scores[r, i]} and the
    nested "inner" {limit: scores[r, k, i]} (inner_scores)."""
    oof: dict[int, np.ndarray] = {}
    for index, (train, test) in enumerate(_splits(X, y, folds, repeats, seed)):
        for limit, score in factory().fit(X[train], y[train]).predict(X[test]).items():
            oof.setdefault(limit, np.full((repeats, len(y)), np.nan))[index // folds, test] = score
    return {"oof": oof, "inner": inner_scores(factory, X, y, folds=folds, repeats=repeats,
                                              seed=seed)}


def inner_scores(factory: Callable[[], object], X: np.ndarray, y: np.ndarray, *, folds: int,
                 repeats: int, seed: int):
    """The nested CV's calibration scores, on the splits of cross_validate (same folds, repeats,
    seed): for outer fold k of repeat r, each row i of its training side (in fold j != k) gets
    `scores[r, k, i]` from a model fitted on the folds other than j and k. That is a
    (folds - 1)-fold CV of the training side alone: no model behind an outer fold's calibration
    scores saw that fold. One model per pair {j, k} serves both outer folds j and k, so a repeat
    costs C(folds, 2) fits instead of folds (folds - 1). NaN on fold k itself. A model whose
    predict gives {limit: score} gets {limit: scores[r, k, i]}."""
    fold_of = np.full((repeats, len(y)), -1)
    for index, (_, test) in enumerate(_splits(X, y, folds, repeats, seed)):
        fold_of[index // folds, test] = index % folds
    out: dict = {}
    for r in range(repeats):
        for j, k in itertools.combinations(range(folds), 2):
            rows = np.flatnonzero(np.isin(fold_of[r], (j, k)))
            fit_on = np.flatnonzero(~np.isin(fold_of[r], (j, k)))
            predicted = factory().fit(X[fit_on], y[fit_on]).predict(X[rows])
            in_j = fold_of[r, rows] == j
            pairs = predicted.items() if isinstance(predicted, dict) else [(None, predicted)]
            for key, score in pairs:
                score = np.asarray(score, dtype=float).reshape(-1)
                scores = out.setdefault(key, np.full((repeats, folds, len(y)), np.nan))
                scores[r, k, rows[in_j]] = score[in_j]      # outer fold k: fold j is training
                scores[r, j, rows[~in_j]] = score[~in_j]    # outer fold j: fold k is training
    return out[None] if list(out) == [None] else out


def _splits(X: np.ndarray, y: np.ndarray, folds: int, repeats: int, seed: int):
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return splitter.split(X, strata(y))


def holdout_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=HOLDOUT_FRACTION, random_state=seed,
                                   stratify=strata(y))
    return np.sort(train), np.sort(test)


def format_table(results: dict[str, dict]) -> str:
    """Metrics table: one row per figure, `median (mean +/- SD)` per model family."""
    names = list(results)
    keys = list(next(iter(results.values()))["summary"])
    lines = [f"{'metric':<26}" + "".join(f"{n + ' median (mean +/- SD)':>40}" for n in names)]
    for key in keys:
        cells = []
        for name in names:
            s = results[name]["summary"][key]
            cells.append("n/a" if s["median"] is None else
                         f"{s['median']:.3f} ({s['mean']:.3f} +/- {s['sd']:.3f})")
        lines.append(f"{key:<26}" + "".join(f"{c:>40}" for c in cells))
    return "\n".join(lines)
