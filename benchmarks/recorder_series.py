"""The recorder's per-day series (GET /v1/accuracy/series) against its 1d/7d/30d report
(GET /v1/accuracy) on the same database: both read the same predictions and lab results.

    python benchmarks/recorder_series.py [--rows 300000] [--db sqlite:///...|postgresql+psycopg://...]

Goal: 30 days of series take at most twice the report's time (the report scans three windows,
the series one span bucketed by day). Exits 1 when missed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.recorder import accuracy, db  # noqa: E402

GOAL_RATIO = 2.0


def fill(engine, rows: int, seed: int = 0) -> None:
    """`rows` predictions over 30 days by 2 models x 3 versions; a fifth carry a lab-measured id."""
    rng = np.random.default_rng(seed)
    now = db.utcnow()
    seconds = rng.uniform(0, 30 * 86400, rows)
    truth = rng.lognormal(6, 2, rows)
    batch = []
    for i in range(rows):
        sample = f"lot-{i}" if i % 5 == 0 else None
        batch.append({"time": now - dt.timedelta(seconds=float(seconds[i])), "model": f"don-{'rt'[i % 2]}f",
                      "version": 1 + i % 3, "request_id": f"r{i}", "row": 0,
                      "predicted_ppb": float(truth[i] * rng.lognormal(0, 0.3)), "spectrum_sha256": "0" * 64,
                      "sample_id": sample, "out_of_distribution": bool(i % 17 == 0), "received_at": now})
        if len(batch) == 20_000:
            db.insert_predictions(engine, batch)
            batch = []
    db.insert_predictions(engine, batch)
    db.insert_lab_results(engine, [{"sample_id": f"lot-{i}", "vomitoxin_ppb": float(truth[i]), "method": "HPLC",
                                    "measured_at": now, "imported_at": now} for i in range(0, rows, 5)])


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--db", help="an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(args.db or f"sqlite:///{tmp}/bench.db")
        db.migrate(engine)
        start = time.perf_counter()
        fill(engine, args.rows)
        print(f"{args.rows} predictions ({args.rows // 5} lab-matched) on {engine.dialect.name} "
              f"in {time.perf_counter() - start:.1f} s")
        report = timed(lambda: accuracy.report(engine))
        series = timed(lambda: accuracy.series(engine, days=30))
        points = sum(len(s["points"]) for s in accuracy.series(engine, days=30)["series"])
        engine.dispose()
    ratio = series / report
    print(f"baseline GET /v1/accuracy (1d, 7d, 30d):   {report * 1000:8.0f} ms")
    print(f"GET /v1/accuracy/series (30 days, {points} points): {series * 1000:8.0f} ms  "
          f"({ratio:.2f} x the baseline; goal <= {GOAL_RATIO})")
    return 0 if ratio <= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
