"""Prediction records to a recorder: batched binary-mode CloudEvents from a background thread.

The request path only appends a reference to its batch to a bounded in-memory queue (no hashing,
no JSON, no I/O); a daemon thread turns queued batches into the column form of a records event
(don_core.records: numpy arrays as they are, no Python object per row) and POSTs them as one
CloudEvent per batch, the way KServe's payload logger posts to its sink.
A full queue or a recorder that is down or refusing drops records and counts them
(`don_records_dropped_total{reason}`); a prediction never waits for or fails because of it.
"""
from __future__ import annotations

import datetime as _dt
import http.client
import logging
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson

from don_core.records import (CLOUDEVENTS_SPEC_VERSION, RECORDS_EVENT_TYPE, records_body,
                              spectra_sha256)
from model_server.mirror import new_request_id

log = logging.getLogger("model_server.records")

MAX_BACKOFF_SECONDS = 30.0
# With a backlog (a burst, or a recorder back after an outage) events grow to this many batches'
# rows: fewer round trips and recorder transactions while catching up.
BACKLOG_BATCH_FACTOR = 4


@dataclass(frozen=True)
class RecordOptions:
    url: str
    sample_rate: float = 1.0          # share of requests recorded (all rows of a chosen one)
    keep_spectra: bool = False        # the spectrum itself, not only its hash
    token_file: str | None = None     # bearer token for the recorder (a mounted Secret)
    queue_rows: int = 10_000          # rows held while the recorder is slow or down
    batch_rows: int = 500             # rows per event
    flush_seconds: float = 1.0        # longest a record waits for its batch to fill
    timeout_seconds: float = 5.0

    def __post_init__(self):
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"records URL {self.url!r} must be http(s)://host[:port]/path")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"records sample rate {self.sample_rate} must be in (0, 1]")
        if self.queue_rows < 1 or self.batch_rows < 1:
            raise ValueError("records queue and batch sizes must be positive")
        if not self.flush_seconds > 0:
            raise ValueError(f"records flush interval {self.flush_seconds} s must be positive")


class _Batch:
    """What one request contributes, kept as it came (references, not copies)."""

    __slots__ = ("when", "x", "ppb", "scores", "flags", "request_id", "trace_id", "caller",
                 "sample_ids", "shadow")

    def __init__(self, when, x, ppb, scores, flags, request_id, trace_id, caller, sample_ids,
                 shadow=False):
        self.when, self.x, self.ppb, self.scores, self.flags = when, x, ppb, scores, flags
        self.request_id, self.trace_id, self.caller = request_id, trace_id, caller
        self.sample_ids, self.shadow = sample_ids, shadow


class RecordSender:
    def __init__(self, options: RecordOptions, model: str, version: str, metrics):
        self.options = options
        self.model, self.version = model, int(version)
        self._sent = metrics.records_sent
        self._cpu = metrics.records_sender_cpu
        self._dropped = metrics.records_dropped
        self._source = f"/don-predictor/model-server/{model}/{version}"
        self._queue: deque[_Batch] = deque()
        self._queued_rows = 0
        self._in_flight = 0  # rows taken off the queue, being sent
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._conn: http.client.HTTPConnection | None = None
        self._url = urlsplit(options.url)
        self._token_file = Path(options.token_file) if options.token_file else None
        if self._token_file is not None:
            self._token()  # a missing or empty Secret fails at start, not on every send
        self._second, self._second_text = None, ""
        self._thread = threading.Thread(target=self._run, name="records-sender", daemon=True)
        self._thread.start()

    # --- request path: O(1), never blocks on I/O ---
    def submit(self, x: np.ndarray, ppb: np.ndarray, outliers, request_id: str | None,
               trace_id: str | None, caller: str | None, sample_ids, shadow: bool = False) -> None:
        """`shadow`: this is a shadow answering a mirrored copy (model_server.mirror)."""
        if self.options.sample_rate < 1.0 and random.random() >= self.options.sample_rate:
            return
        rows = len(ppb)
        scores, flags = outliers if outliers is not None else (None, None)
        batch = _Batch(time.time(), x, ppb, scores, flags, request_id, trace_id, caller,
                       sample_ids, shadow)
        with self._lock:
            if self._queued_rows + rows > self.options.queue_rows:
                full = True
            else:
                full = False
                self._queue.append(batch)
                self._queued_rows += rows
                ready = self._queued_rows >= self.options.batch_rows
        if full:
            self._dropped["queue_full"].inc(rows)
        elif ready:
            self._wake.set()

    # --- background thread ---
    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait(max(self.options.flush_seconds, backoff))
            self._wake.clear()
            stopping = self._stop
            while True:
                batches, rows = self._take()
                if not batches:
                    break
                self._in_flight = rows
                started = time.thread_time()
                sent = self._send(batches, rows)
                self._cpu.inc(time.thread_time() - started)  # this thread's CPU only
                self._in_flight = 0
                if sent:
                    backoff = 0.0
                else:
                    # a recorder that is down: wait before trying again (the queue bounds memory)
                    backoff = min(max(2 * backoff, 1.0), MAX_BACKOFF_SECONDS)
                    break
            if stopping:
                return

    def _take(self) -> tuple[list[_Batch], int]:
        batches, rows = [], 0
        with self._lock:
            limit = self.options.batch_rows
            if self._queued_rows >= 2 * limit:
                limit *= BACKLOG_BATCH_FACTOR
            while self._queue and rows < limit:
                batch = self._queue.popleft()
                batches.append(batch)
                rows += len(batch.ppb)
            self._queued_rows -= rows
        return batches, rows

    def body(self, batches: list[_Batch]) -> bytes:
        """The event body in the column form (don_core.records.records_body): numpy arrays
        concatenated and serialized by orjson as they are, the hashes of the whole batch in one
        pass, one small value per request; no Python object per row."""
        sizes = [len(b.ppb) for b in batches]
        x = np.concatenate([b.x for b in batches], dtype="<f4")
        rows = {"predicted_ppb": np.concatenate([b.ppb for b in batches], dtype=np.float64),
                "spectrum_sha256": spectra_sha256(x)}
        if all(b.scores is not None for b in batches):
            rows["outlier_score"] = np.concatenate([b.scores for b in batches], dtype=np.float64)
            rows["out_of_distribution"] = np.concatenate([b.flags for b in batches], dtype=np.bool_)
        if any(b.sample_ids is not None for b in batches):
            rows["sample_id"] = [s for b, n in zip(batches, sizes)
                                 for s in (b.sample_ids if b.sample_ids is not None else [None] * n)]
        if self.options.keep_spectra:
            rows["spectrum"] = x
        requests = {"time": [self._rfc3339(b.when) for b in batches],
                    "request_id": [b.request_id or new_request_id() for b in batches],
                    "trace_id": [b.trace_id for b in batches],
                    "caller": [b.caller for b in batches], "rows": sizes}
        if any(b.shadow for b in batches):  # the optional column, only when a value is set
            requests["shadow"] = [True if b.shadow else None for b in batches]
        return orjson.dumps(records_body(self.model, self.version, requests, rows),
                            option=orjson.OPT_SERIALIZE_NUMPY)

    def _rfc3339(self, when: float) -> str:
        """RFC 3339 UTC to the millisecond; the part up to the second is formatted once a second
        (datetime formatting per request cost more than the rest of its record)."""
        second = int(when)
        if second != self._second:
            self._second = second
            self._second_text = _dt.datetime.fromtimestamp(second, _dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{min(int((when - second) * 1000), 999):03d}Z"

    def _send(self, batches: list[_Batch], rows: int) -> bool:
        try:
            body = self.body(batches)
            status = self._post(body)
        except Exception as exc:  # noqa: BLE001 - a recorder problem must never reach a caller
            self._close()
            self._dropped["send_failed"].inc(rows)
            log.warning("recorder unreachable, %d records dropped: %s", rows, exc,
                        extra={"records_url": self.options.url})
            return False
        if 200 <= status < 300:
            self._sent.inc(rows)
            return True
        self._dropped["send_failed"].inc(rows)
        log.warning("recorder answered %d, %d records dropped", status, rows,
                    extra={"records_url": self.options.url})
        return False

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json",
                   "ce-specversion": CLOUDEVENTS_SPEC_VERSION, "ce-id": uuid.uuid4().hex,
                   "ce-source": self._source, "ce-type": RECORDS_EVENT_TYPE,
                   "ce-time": _dt.datetime.now(_dt.timezone.utc).isoformat().replace(
                       "+00:00", "Z")}
        if self._token_file is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        return headers

    def _token(self) -> str:
        token = self._token_file.read_text().strip()  # re-read: a rotated Secret takes effect
        if not token:
            raise ValueError(f"records token file {self._token_file} is empty")
        return token

    def _post(self, body: bytes) -> int:
        headers = self.headers()
        for attempt in (1, 2):  # a kept-alive connection the recorder closed: reconnect once
            conn = self._connection()
            try:
                path = self._url.path or "/"
                conn.request("POST", path + (f"?{self._url.query}" if self._url.query else ""),
                             body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.will_close:
                    self._close()
                return response.status
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._url.scheme == "https" \
                else http.client.HTTPConnection
            self._conn = kind(self._url.hostname, self._url.port,
                              timeout=self.options.timeout_seconds)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self, timeout: float = 5.0) -> None:
        """On shutdown: send what is queued (one attempt, at most `timeout` seconds) and stop the
        thread. Without it the daemon thread dies with the process and the records of the last
        flush interval are lost. Once only: a later call returns at once."""
        if self._stop:
            return
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        left = self._queued_rows + self._in_flight
        if self._thread.is_alive() or left:
            log.warning("stopping with %d records unsent (recorder slow or down)", left,
                        extra={"records_url": self.options.url})

    @property
    def queued_rows(self) -> int:
        return self._queued_rows
