"""Live accuracy: lab results joined to recorded predictions by sample_id, per model and version.

Definitions follow the training evaluation (training_job/metrics.py): errors in log1p(ppb) space;
at each decision limit a sample is contaminated when the lab measured more than the limit;
false accept = contaminated but predicted at or below the limit (share of contaminated samples),
false reject = clean but predicted above it (share of clean samples); balanced accuracy is
undefined (None) while only one class has been seen. A sample measured several times counts with
the mean of its lab results; a sample predicted several times by one version counts once, with the
latest prediction. Windows select predictions by their time.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from don_core.schema import DECISION_THRESHOLDS_PPB
from ops.recorder.db import lab_results, predictions, utcnow

WINDOWS: dict[str, dt.timedelta] = {"1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7),
                                    "30d": dt.timedelta(days=30)}


def figures(truth_ppb, predicted_ppb) -> dict:
    """The live figures of matched pairs (numbers, or None where undefined)."""
    truth, pred = np.asarray(truth_ppb, dtype=float), np.maximum(np.asarray(predicted_ppb, dtype=float), 0)
    out = {"matched": int(len(truth)), "maeLog1p": None, "r2Log1p": None, "thresholds": {}}
    if len(truth):
        lt, lp = np.log1p(truth), np.log1p(pred)
        out["maeLog1p"] = float(np.mean(np.abs(lt - lp)))
        total = float(np.sum((lt - lt.mean()) ** 2))
        out["r2Log1p"] = 1.0 - float(np.sum((lt - lp) ** 2)) / total if len(truth) > 1 and total > 0 else None
    for limit in DECISION_THRESHOLDS_PPB:
        positive, flagged = truth > limit, pred > limit
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        far = float(np.mean(~flagged[positive])) if n_pos else None
        frr = float(np.mean(flagged[~positive])) if n_neg else None
        balanced = (1 - far + 1 - frr) / 2 if far is not None and frr is not None else None
        out["thresholds"][str(limit)] = {"contaminated": n_pos, "clean": n_neg, "falseAcceptRate": far,
                                         "falseRejectRate": frr, "balancedAccuracy": balanced}
    return out


def matched_pairs(engine: sa.Engine, since: dt.datetime, model: str | None = None,
                  version: int | None = None) -> dict[tuple[str, int], tuple[list[float], list[float]]]:
    """{(model, version): (lab ppb, predicted ppb)} for predictions made since `since`."""
    lab = (sa.select(lab_results.c.sample_id, sa.func.avg(lab_results.c.vomitoxin_ppb).label("ppb"))
           .group_by(lab_results.c.sample_id).subquery())
    latest = (sa.select(predictions.c.model, predictions.c.version, predictions.c.sample_id,
                        predictions.c.predicted_ppb,
                        sa.func.row_number().over(
                            partition_by=(predictions.c.model, predictions.c.version, predictions.c.sample_id),
                            order_by=(predictions.c.time.desc(), predictions.c.id.desc())).label("rank"))
              .where(predictions.c.sample_id.is_not(None), predictions.c.time >= since))
    if model is not None:
        latest = latest.where(predictions.c.model == model)
    if version is not None:
        latest = latest.where(predictions.c.version == version)
    latest = latest.subquery()
    query = (sa.select(latest.c.model, latest.c.version, lab.c.ppb, latest.c.predicted_ppb)
             .join(lab, lab.c.sample_id == latest.c.sample_id).where(latest.c.rank == 1)
             .order_by(latest.c.model, latest.c.version))
    pairs: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    with engine.connect() as conn:
        for m, v, truth, pred in conn.execute(query):
            bucket = pairs.setdefault((m, v), ([], []))
            bucket[0].append(float(truth))
            bucket[1].append(float(pred))
    return pairs


def report(engine: sa.Engine, model: str | None = None, version: int | None = None,
           now: dt.datetime | None = None) -> dict:
    """The JSON document of /v1/accuracy: one entry per model, version and window."""
    now = now or utcnow()
    results = []
    for window, span in WINDOWS.items():
        for (m, v), (truth, pred) in matched_pairs(engine, now - span, model, version).items():
            results.append({"model": m, "version": v, "window": window, **figures(truth, pred)})
    results.sort(key=lambda r: (r["model"], r["version"], list(WINDOWS).index(r["window"])))
    return {"generatedAt": now.isoformat(timespec="seconds") + "Z",
            "thresholdsPpb": list(DECISION_THRESHOLDS_PPB), "windows": list(WINDOWS), "results": results}
