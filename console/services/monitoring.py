"""The Monitoring page: the recorder's live accuracy (windows and per-day series), the lab results
import, and each model server's input drift from its Prometheus metrics."""
from __future__ import annotations

import re

import requests

from console.services.common import TIMEOUT_S, ConsoleError, Settings, bearer, call, recorder_url, refusal
from don_core.contract import (ACCURACY_PATH, ACCURACY_SERIES_PATH, DRIFT_WINDOW_SCORE_METRIC, LAB_RESULTS_PATH,
                               OUT_OF_DISTRIBUTION_METRIC, SCORED_ROWS_METRIC)


def accuracy(settings: Settings) -> dict:
    return call("GET", recorder_url(settings, ACCURACY_PATH), settings).json()


def accuracy_rows(doc: dict) -> list[dict]:
    rows = []
    for r in doc.get("results", []):
        row = {"model": r["model"], "version": r["version"], "window": r["window"],
               "matched": r["matched"], "MAE log1p": r.get("maeLog1p"), "R2 log1p": r.get("r2Log1p")}
        for limit, t in (r.get("thresholds") or {}).items():
            row[f"false accept @{limit}"] = t.get("falseAcceptRate")
            row[f"false reject @{limit}"] = t.get("falseRejectRate")
        rows.append(row)
    return rows


SPANS_DAYS = (7, 30, 90)


class LabResultsRefused(ConsoleError):
    """The recorder refused a lab file; `errors` names each bad row and column."""

    def __init__(self, message: str, errors: list[str]):
        super().__init__(message)
        self.errors = errors


def import_lab_results(settings: Settings, raw: bytes, name: str) -> dict:
    """Post a lab CSV (sample_id, vomitoxin_ppb[, method][, measured_at]) to the recorder, which
    checks every row (ops/recorder/labresults.py, the one reader) and stores all of it or nothing.
    Returns its summary {stored, duplicates, rejected}."""
    url = recorder_url(settings, LAB_RESULTS_PATH)
    headers = {"Content-Type": "text/csv", **bearer(settings.recorder_token())}
    try:
        response = requests.post(url, data=raw, headers=headers, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise ConsoleError(f"{url}: cannot connect ({type(exc).__name__})") from None
    if response.status_code == 422:
        doc = response.json()
        raise LabResultsRefused(f"{name}: {doc.get('error')}", list(doc.get("errors", [])))
    if response.status_code >= 400:
        raise ConsoleError(f"{name}: the recorder refused it: {refusal(response)}")
    return response.json()


def accuracy_series(settings: Settings, days: int) -> dict:
    """The recorder's per-day series (GET /v1/accuracy/series) over the last `days` days."""
    return call("GET", recorder_url(settings, ACCURACY_SERIES_PATH), settings,
                params={"days": days}).json()


def series_rows(doc: dict) -> list[dict]:
    """One row per model version and day: the figures the Monitoring page plots."""
    rows = []
    for s in doc.get("series", []):
        for p in s.get("points", []):
            row = {"day": p["day"], "model version": f"{s['model']} v{s['version']}",
                   "predictions": p.get("predictions"), "matched": p.get("matched"),
                   "MAE log1p": p.get("maeLog1p"), "OOD rate": p.get("oodRate")}
            for limit, t in (p.get("thresholds") or {}).items():
                row[f"false accept @{limit}"] = t.get("falseAcceptRate")
            rows.append(row)
    return rows


# The model server's drift figures: two Counters (exposed with _total) and the window score Gauge.
OOD_ROWS, SCORED_ROWS = OUT_OF_DISTRIBUTION_METRIC + "_total", SCORED_ROWS_METRIC + "_total"
_METRIC = re.compile(rf"^({OOD_ROWS}|{SCORED_ROWS}|{DRIFT_WINDOW_SCORE_METRIC})(\{{[^}}]*\}})?\s+(\S+)", re.M)


def drift_rates(settings: Settings) -> list[dict]:
    """Per model server: rows scored and the share out of distribution since it started, and the
    window score of its last rows (the highest of its workers; None before a window is full)."""
    rows = []
    for model, base in settings.servers.items():
        try:
            text = call("GET", f"{base}/metrics", settings).text
        except ConsoleError as exc:
            rows.append({"model": model, "scored rows": None, "out of distribution": None,
                         "rate": None, "window score": None, "note": str(exc)})
            continue
        totals = {OOD_ROWS: 0.0, SCORED_ROWS: 0.0}
        window = None
        for name, _, value in _METRIC.findall(text):
            if name == DRIFT_WINDOW_SCORE_METRIC:
                window = max(float(value), window if window is not None else float("-inf"))
            else:
                totals[name] += float(value)
        scored, ood = totals[SCORED_ROWS], totals[OOD_ROWS]
        rows.append({"model": model, "scored rows": int(scored), "out of distribution": int(ood),
                     "rate": round(ood / scored, 4) if scored else None,
                     "window score": None if window is None else round(window, 2), "note": ""})
    return rows
