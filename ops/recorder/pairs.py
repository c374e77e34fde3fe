"""Paired figures: a stable version against its shadow on the same lab-matched lots.

A pair is one predicted row the stable version A served (`shadow` false) and the answer the
candidate B gave, in shadow, to the mirrored copy of the same request (`shadow` true, same model,
request_id and row), for a sample the lab has measured. The sample is the one the caller sent with
the served request; a shadow record naming another sample is not paired. A sample measured several
times counts with the mean of its results; a sample predicted several times counts once, with its
latest pair (as in accuracy.py), so the pairs are distinct lots.

Figures on the pairs:
- log1p MAE of each version (don_core.accuracy.log1p_mae, the gates' formula) and the mean paired
  difference of |log1p error|, B minus A (positive: the candidate is worse), with a 95 % Student t
  confidence interval on the per-lot differences (mean +- t(0.975, n-1) * sd / sqrt(n); None below 2
  pairs). The t interval is the textbook paired interval; it leans on the mean of the differences
  being near normal, which holds for tens of lots or more.
- at each limit of don_core.schema.DECISION_THRESHOLDS_PPB: false accepts (lab above the limit,
  predicted at or below it) and false rejects (lab at or below, predicted above) of each version.
  The records carry predicted ppb, not the served accept / reject / lab decision (that needs the
  version's calibration), so the decision here is ppb against the limit, as the live accuracy and
  the reference gate judge it.
- on request (`detail`), the per-pair arrays the operator's lab gate reads (names in
  don_core.contract).
"""
from __future__ import annotations

import math

import numpy as np
import sqlalchemy as sa

from don_core.contract import PAIRS_DETAIL_FIELDS
from don_core.accuracy import (false_accept_rate, false_reject_rate, log1p_errors, log1p_mae,
                               or_none)
from don_core.schema import DECISION_THRESHOLDS_PPB
from ops.recorder.db import lab_results, predictions

# t(0.975, df) for df 1..30 (scipy.stats.t.ppf, 4 decimals; tests/unit checks them); beyond 30 the
# Cornish-Fisher expansion around the normal quantile is within 1e-7.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
         2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
         2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054
CI_METHOD = "Student t on the per-lot differences: mean +- t(0.975, n-1) * sd / sqrt(n)"
DECISION_RULE = ("predicted ppb above the limit = reject (records carry ppb, not the served "
                 "accept/reject/lab decision)")


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (no SciPy in this image)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4))


def load(engine: sa.Engine, model: str, stable: int, candidate: int) -> dict[str, list]:
    """The lab-matched pairs of (model, stable, candidate): {sample_id, stable_ppb, candidate_ppb,
    truth_ppb}, one entry per sample, ordered by sample id."""
    a, b = predictions.alias("a"), predictions.alias("b")
    lab = (sa.select(lab_results.c.sample_id, sa.func.avg(lab_results.c.vomitoxin_ppb).label("ppb"))
           .group_by(lab_results.c.sample_id).subquery())
    joined = (sa.select(a.c.sample_id, a.c.predicted_ppb.label("stable_ppb"),
                        b.c.predicted_ppb.label("candidate_ppb"), lab.c.ppb.label("truth_ppb"),
                        sa.func.row_number().over(partition_by=a.c.sample_id,
                                                  order_by=(a.c.time.desc(), a.c.id.desc())).label("rank"))
              .join(b, sa.and_(b.c.model == a.c.model, b.c.request_id == a.c.request_id, b.c.row == a.c.row))
              .join(lab, lab.c.sample_id == a.c.sample_id)
              .where(a.c.model == model, a.c.version == stable, a.c.shadow.is_(False),
                     b.c.version == candidate, b.c.shadow.is_(True),
                     sa.or_(b.c.sample_id.is_(None), b.c.sample_id == a.c.sample_id))
              .subquery())
    query = (sa.select(joined.c.sample_id, joined.c.stable_ppb, joined.c.candidate_ppb, joined.c.truth_ppb)
             .where(joined.c.rank == 1).order_by(joined.c.sample_id))
    out: dict[str, list] = {name: [] for name in PAIRS_DETAIL_FIELDS}
    with engine.connect() as conn:
        for row in conn.execute(query):
            for name, value in zip(PAIRS_DETAIL_FIELDS, row):  # the query's column order
                out[name].append(value if name == "sample_id" else float(value))
    return out


def difference(stable_ppb, candidate_ppb, truth_ppb) -> dict:
    """Mean paired difference of |log1p error| (candidate minus stable) and its 95 % interval."""
    diffs = log1p_errors(candidate_ppb, truth_ppb) - log1p_errors(stable_ppb, truth_ppb)
    n = len(diffs)
    out = {"mean": None, "sd": None, "ci95": None, "method": CI_METHOD}
    if n:
        out["mean"] = float(diffs.mean())
    if n >= 2:
        sd = float(diffs.std(ddof=1))
        half = t975(n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def decisions(ppb, truth_ppb) -> dict:
    """Per limit: false accepts and false rejects of one version's predictions on the lots."""
    pred, truth = np.asarray(ppb, dtype=float), np.asarray(truth_ppb, dtype=float)
    out = {}
    for limit in DECISION_THRESHOLDS_PPB:
        contaminated, rejected = truth > limit, pred > limit
        out[str(limit)] = {"falseAccepts": int((contaminated & ~rejected).sum()),
                           "falseRejects": int((~contaminated & rejected).sum()),
                           "falseAcceptRate": or_none(false_accept_rate(truth, pred, limit)),
                           "falseRejectRate": or_none(false_reject_rate(truth, pred, limit))}
    return out


def report(engine: sa.Engine, model: str, stable: int, candidate: int, detail: bool = False) -> dict:
    """The JSON document of GET /v1/pairs."""
    lots = load(engine, model, stable, candidate)
    truth, n = lots["truth_ppb"], len(lots["truth_ppb"])
    doc = {"model": model, "stable": stable, "candidate": candidate, "pairs": n,
           "maeLog1p": {side: log1p_mae(lots[f"{side}_ppb"], truth) if n else None
                        for side in ("stable", "candidate")},
           "difference": difference(lots["stable_ppb"], lots["candidate_ppb"], truth),
           "thresholdsPpb": list(DECISION_THRESHOLDS_PPB), "decisionRule": DECISION_RULE,
           "decisions": {}}
    truth_array = np.asarray(truth, dtype=float)
    per_side = {side: decisions(lots[f"{side}_ppb"], truth) for side in ("stable", "candidate")}
    for limit in DECISION_THRESHOLDS_PPB:
        key = str(limit)
        doc["decisions"][key] = {"contaminated": int((truth_array > limit).sum()),
                                 "clean": int((truth_array <= limit).sum()),
                                 **{side: per_side[side][key] for side in per_side}}
    if detail:
        doc["detail"] = lots
    return doc



def _num(value, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def summary(doc: dict) -> str:
    """The report as lines for people (`python -m ops recorder pairs`)."""
    diff = doc["difference"]
    ci = diff["ci95"]
    lines = [f"{doc['model']}: stable v{doc['stable']} against candidate v{doc['candidate']} (shadow), "
             f"{doc['pairs']} lab-matched pair(s)",
             f"log1p MAE: stable {_num(doc['maeLog1p']['stable'])}, candidate {_num(doc['maeLog1p']['candidate'])}",
             f"mean paired difference of |log1p error| (candidate - stable): {_num(diff['mean'])}, 95 % CI "
             + (f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a (fewer than 2 pairs)") + f" ({diff['method']})"]
    for limit, d in doc["decisions"].items():
        s, c = d["stable"], d["candidate"]
        lines.append(f"at {limit} ppb ({d['contaminated']} contaminated, {d['clean']} clean): false accepts "
                     f"stable {s['falseAccepts']}, candidate {c['falseAccepts']}; false rejects stable "
                     f"{s['falseRejects']}, candidate {c['falseRejects']}")
    lines.append(f"decision: {doc['decisionRule']}")
    return "\n".join(lines)
