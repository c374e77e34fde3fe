"""Live accuracy: lab results joined to recorded predictions by sample_id, per model and version.

The formulas are training's (don_core.accuracy): errors in log1p(ppb) space; at each decision
limit a sample is contaminated when the lab measured more than the limit; false accept =
contaminated but predicted at or below the limit (share of contaminated samples), false reject =
clean but predicted above it (share of clean samples); a figure whose class has not been seen is
undefined (None). A sample measured several times counts with
the mean of its lab results; a sample predicted several times by one version counts once, with the
latest prediction. Windows select predictions by their time.

Only served answers count (`shadow` false): a shadow's answers to mirrored copies of requests were
never returned to anyone, so they are reported apart (`shadowResults`, same figures), and the
series and the Prometheus gauges leave them out. Paired figures (stable against its shadow on the
same lots) are `pairs.py`.

The series (`series`) buckets the same figures by UTC day of the prediction (within a day, a
sample predicted several times by one version counts once, latest), beside each day's volume and
out-of-distribution rate (share of the rows the server scored for drift that it flagged).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from don_core.accuracy import (balanced_accuracy, false_accept_rate, false_reject_rate, log1p_mae,
                               or_none)
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
        out["maeLog1p"] = log1p_mae(pred, truth)
        total = float(np.sum((lt - lt.mean()) ** 2))
        out["r2Log1p"] = 1.0 - float(np.sum((lt - lp) ** 2)) / total if len(truth) > 1 and total > 0 else None
    for limit in DECISION_THRESHOLDS_PPB:
        n_pos = int((truth > limit).sum())
        out["thresholds"][str(limit)] = {
            "contaminated": n_pos, "clean": len(truth) - n_pos,
            **{name: or_none(rate(truth, pred, limit)) for name, rate in (
                ("falseAcceptRate", false_accept_rate), ("falseRejectRate", false_reject_rate),
                ("balancedAccuracy", balanced_accuracy))}}
    return out


def _latest_matched(engine: sa.Engine, since: dt.datetime, until: dt.datetime | None, model: str | None,
                    version: int | None, by_day: bool, shadow: bool = False):
    """Rows (model, version, [day,] lab ppb, predicted ppb): the latest prediction of each sample
    per model and version (and day), joined to the mean of its lab results."""
    lab = (sa.select(lab_results.c.sample_id, sa.func.avg(lab_results.c.vomitoxin_ppb).label("ppb"))
           .group_by(lab_results.c.sample_id).subquery())
    keys = [predictions.c.model, predictions.c.version]
    if by_day:
        keys.append(_day(engine, predictions.c.time).label("day"))
    latest = (sa.select(*keys, predictions.c.sample_id, predictions.c.predicted_ppb,
                        sa.func.row_number().over(
                            partition_by=(*keys, predictions.c.sample_id),
                            order_by=(predictions.c.time.desc(), predictions.c.id.desc())).label("rank"))
              .where(predictions.c.sample_id.is_not(None), *_filters(since, until, model, version, shadow)))
    latest = latest.subquery()
    columns = [latest.c.model, latest.c.version, *([latest.c.day] if by_day else [])]
    query = (sa.select(*columns, lab.c.ppb, latest.c.predicted_ppb)
             .join(lab, lab.c.sample_id == latest.c.sample_id).where(latest.c.rank == 1)
             .order_by(*columns))
    with engine.connect() as conn:
        return conn.execute(query).all()


def _filters(since: dt.datetime, until: dt.datetime | None, model: str | None, version: int | None,
             shadow: bool = False) -> list:
    where = [predictions.c.time >= since, predictions.c.shadow.is_(shadow)]
    if until is not None:
        where.append(predictions.c.time < until)
    if model is not None:
        where.append(predictions.c.model == model)
    if version is not None:
        where.append(predictions.c.version == version)
    return where


def _day(engine: sa.Engine, column):
    """The UTC day of a (naive UTC) time column; SQLite keeps times as text, so date() there."""
    return sa.func.date(column) if engine.dialect.name == "sqlite" else sa.cast(column, sa.Date)


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def matched_pairs(engine: sa.Engine, since: dt.datetime, model: str | None = None,
                  version: int | None = None, shadow: bool = False
                  ) -> dict[tuple[str, int], tuple[list[float], list[float]]]:
    """{(model, version): (lab ppb, predicted ppb)} for predictions made since `since` (the served
    ones, or with `shadow` a shadow's answers to mirrored copies)."""
    pairs: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    for m, v, truth, pred in _latest_matched(engine, since, None, model, version, by_day=False,
                                             shadow=shadow):
        bucket = pairs.setdefault((m, v), ([], []))
        bucket[0].append(float(truth))
        bucket[1].append(float(pred))
    return pairs


def report(engine: sa.Engine, model: str | None = None, version: int | None = None,
           now: dt.datetime | None = None) -> dict:
    """The JSON document of /v1/accuracy: one entry per model, version and window, of the served
    answers (`results`) and, apart, of shadows' answers to mirrored copies (`shadowResults`)."""
    now = now or utcnow()
    doc = {"generatedAt": now.isoformat(timespec="seconds") + "Z",
           "thresholdsPpb": list(DECISION_THRESHOLDS_PPB), "windows": list(WINDOWS)}
    for key, shadow in (("results", False), ("shadowResults", True)):
        results = []
        for window, span in WINDOWS.items():
            for (m, v), (truth, pred) in matched_pairs(engine, now - span, model, version, shadow).items():
                results.append({"model": m, "version": v, "window": window, **figures(truth, pred)})
        results.sort(key=lambda r: (r["model"], r["version"], list(WINDOWS).index(r["window"])))
        doc[key] = results
    return doc


MAX_SERIES_DAYS = 366


def series(engine: sa.Engine, days: int = 30, last_day: dt.date | None = None, model: str | None = None,
           version: int | None = None, now: dt.datetime | None = None) -> dict:
    """The JSON document of /v1/accuracy/series: per model and version, one point per UTC day (of
    the `days` days ending with `last_day`, default today) on which the version predicted anything."""
    now = now or utcnow()
    last_day = last_day or now.date()
    first_day = last_day - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first_day, dt.time())
    until = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time())
    day = _day(engine, predictions.c.time).label("day")
    ood = predictions.c.out_of_distribution
    volume = (sa.select(predictions.c.model, predictions.c.version, day, sa.func.count().label("n"),
                        sa.func.count(ood).label("scored"),
                        sa.func.count(sa.case((ood.is_(True), 1))).label("ood"))
              .where(*_filters(since, until, model, version))
              .group_by(predictions.c.model, predictions.c.version, day))
    points: dict[tuple[str, int], dict[dt.date, dict]] = {}
    with engine.connect() as conn:
        for m, v, d, n, scored, flagged in conn.execute(volume):
            points.setdefault((m, v), {})[_as_date(d)] = {
                "predictions": int(n), "scored": int(scored), "outOfDistribution": int(flagged),
                "oodRate": flagged / scored if scored else None, "pairs": ([], [])}
    for m, v, d, truth, pred in _latest_matched(engine, since, until, model, version, by_day=True):
        point = points.get((m, v), {}).get(_as_date(d))
        if point is None:
            continue  # predicted after the volume query ran: next time
        pairs = point["pairs"]
        pairs[0].append(float(truth))
        pairs[1].append(float(pred))
    out = []
    for (m, v) in sorted(points):
        days_doc = []
        for d in sorted(points[(m, v)]):
            point = points[(m, v)][d]
            days_doc.append({"day": d.isoformat(), **{k: x for k, x in point.items() if k != "pairs"},
                             **figures(*point["pairs"])})
        out.append({"model": m, "version": v, "points": days_doc})
    return {"generatedAt": now.isoformat(timespec="seconds") + "Z", "from": first_day.isoformat(),
            "to": last_day.isoformat(), "days": days, "thresholdsPpb": list(DECISION_THRESHOLDS_PPB),
            "series": out}
