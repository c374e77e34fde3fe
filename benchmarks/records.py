"""Where recording costs the model server CPU: the request path's submit() and the background
thread's work per row (hashing, building and serializing the event body, sending it), for the
column form the server sends (model_server.records.RecordSender.body) beside the row form it sent
before (one PredictionRecord per row, to_dict, orjson; kept here as the baseline), in one run.

Both are timed in this process on the same batches (random float32 spectra of N_BANDS bands, as
a recorder-bound server holds them), CPU time of the timing thread (time.thread_time), best of
`--repeats`; sending POSTs each body to the recorder stand-in (scripts/records_sink.py) in a child
process over one kept-alive connection, as the sender does. Goal: the column form's background
work per row is at most half the row form's for 1-row requests (the case where every request is
one record).

Usage: python benchmarks/records.py [--rows-per-event 500] [--repeats 7]
Exit status 0 when the goal is met, 1 when missed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from don_core.records import PredictionRecord, spectra_sha256, spectrum_sha256  # noqa: E402
from don_core.schema import N_BANDS  # noqa: E402
from model_server.metrics import ServingMetrics  # noqa: E402
from model_server.records import RecordOptions, RecordSender, _Batch  # noqa: E402

GOAL_COLUMN_SHARE = 0.5


def row_form(sender: RecordSender, batches: list[_Batch]) -> bytes:
    """The baseline: the event body as the server built it before the column form."""
    out = []
    for b in batches:
        when = dt.datetime.fromtimestamp(b.when, dt.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        request_id = b.request_id or uuid.uuid4().hex
        ppb, scores, flags = b.ppb.tolist(), b.scores.tolist(), b.flags.tolist()
        for i in range(len(ppb)):
            out.append(PredictionRecord(
                time=when, model=sender.model, version=sender.version, request_id=request_id,
                row=i, predicted_ppb=ppb[i], spectrum_sha256=spectrum_sha256(b.x[i]),
                trace_id=b.trace_id, caller=b.caller, sample_id=None, outlier_score=scores[i],
                out_of_distribution=flags[i]).to_dict())
    return orjson.dumps({"records": out})


def make_batches(rng, requests: int, rows: int) -> list[_Batch]:
    # as a request leaves them: float32 spectra, float64 ppb and scores, no request id (wrk sends
    # none), the trace id and caller every request has
    return [_Batch(time.time(), rng.random((rows, N_BANDS), dtype=np.float32),
                   rng.random(rows) * 5000, rng.random(rows), rng.random(rows) > 0.9, None,
                   "0af7651916cd43dd8448eb211c80319c", "127.0.0.1", None)
            for _ in range(requests)]


def cpu(fn, repeats: int) -> float:
    """Best CPU time of this thread over `repeats` calls (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def start_sink() -> tuple[subprocess.Popen, str]:
    code = ("import sys, time; sys.path.insert(0, sys.argv[1])\n"
            "from scripts.records_sink import RecordsSink\n"
            "print(RecordsSink(keep=False).url, flush=True)\n"
            "time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(REPO)], stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-event", type=int, default=500,
                        help="rows per event (the sender's batch)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sink, url = start_sink()
    print("load average (1/5/15 min) at the start: %.1f %.1f %.1f" % os.getloadavg())
    results = {}
    try:
        # a sender whose thread stays asleep: we call its parts ourselves
        sender = RecordSender(RecordOptions(url=url, flush_seconds=3600, queue_rows=10**7,
                                            batch_rows=10**7), "don-rf", "3",
                              ServingMetrics("don-rf", "3", "rf", "bench"))
        n = args.rows_per_event
        x1, ppb1 = rng.random((1, N_BANDS), dtype=np.float32), np.array([812.5])
        outliers1 = (np.array([0.4]), np.array([False]))
        calls = 20_000
        spent = cpu(lambda: [sender.submit(x1, ppb1, outliers1, None, "t", "127.0.0.1", None)
                             for _ in range(calls)], 1)
        sender._queue.clear()
        print(f"request path: submit() {spent / calls * 1e6:.2f} us of CPU per request "
              "(a reference appended to the queue)")
        print(f"\nbackground thread, CPU per row, events of {n} rows (best of {args.repeats}):")
        print(f"{'rows/request':>12} | {'form':>6} | {'hash':>7} | {'build+json':>10} | "
              f"{'send':>7} | {'total':>7} | {'bytes/row':>9}")
        for rows in (1, 100):
            batches = make_batches(rng, n // rows, rows)
            x = np.concatenate([b.x for b in batches])
            for form, build, hash_rows in (
                    ("row", functools.partial(row_form, sender, batches),
                     functools.partial(lambda bs: [spectrum_sha256(r) for b in bs for r in b.x], batches)),
                    ("column", functools.partial(sender.body, batches), functools.partial(spectra_sha256, x))):
                body = build()
                t_hash, t_body = cpu(hash_rows, args.repeats), cpu(build, args.repeats)
                t_send = cpu(functools.partial(sender._post, body), args.repeats)
                total = t_body + t_send
                results[(rows, form)] = total / n
                print(f"{rows:>12} | {form:>6} | {t_hash / n * 1e6:6.2f}u | "
                      f"{(t_body - t_hash) / n * 1e6:9.2f}u | {t_send / n * 1e6:6.2f}u | "
                      f"{total / n * 1e6:6.2f}u | {len(body) / n:9.0f}")
        sender._close()
    finally:
        sink.kill()
        sink.wait()
    print("(u = microseconds; build+json = building and serializing the body, hashing excluded)")
    print("load average (1/5/15 min) at the end: %.1f %.1f %.1f" % os.getloadavg())
    share = results[(1, "column")] / results[(1, "row")]
    ok = share <= GOAL_COLUMN_SHARE
    print(f"\n== goal ==\n  [{'PASS' if ok else 'FAIL'}] 1 row per request: column form's background "
          f"CPU per row <= {GOAL_COLUMN_SHARE:.0%} of the row form's: {share:.0%} "
          f"({results[(1, 'column')] * 1e6:.2f} vs {results[(1, 'row')] * 1e6:.2f} us)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
