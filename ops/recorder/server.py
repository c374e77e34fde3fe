"""The recorder's HTTP server (stdlib threads: small, few dependencies).

POST /                  CloudEvents (binary mode): our record batches, KServe logger events
POST /v1/labresults     lab results CSV (?partial=true keeps the good rows)
GET  /v1/accuracy       live accuracy JSON (?model=&version=)
GET  /v1/accuracy/series  the same figures and the out-of-distribution rate per day
                        (?model=&version=&days=30&to=YYYY-MM-DD)
GET  /v1/pairs          a stable version against its shadow on the same lab-matched lots
                        (?model=&stable=&candidate=&detail=1)
GET  /metrics           Prometheus: recorder counters and live accuracy
GET  /healthz, /readyz  liveness; readiness (database reachable)

Writes need `Authorization: Bearer <token>` (token file, e.g. a mounted Secret). KServe's logger
cannot send a token: `allow_unauthenticated_kserve` accepts its two event types without one
(rely on the NetworkPolicy). Client mistakes get a 4xx naming the problem; a database that is away
gets 503.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from don_core.contract import ACCURACY_PATH, ACCURACY_SERIES_PATH, LAB_RESULTS_PATH, PAIRS_PATH
from don_core.records import KSERVE_REQUEST_EVENT_TYPE, KSERVE_RESPONSE_EVENT_TYPE, RECORDS_EVENT_TYPE
from ops.recorder import accuracy, db, events, labresults, pairs
from ops.recorder.metrics import RecorderMetrics

log = logging.getLogger("don.recorder")
MAX_BODY = 32 * 1024 * 1024
MAX_RECORDS_PER_EVENT = 100_000


@dataclass
class Settings:
    db_url: str = db.DEFAULT_URL
    host: str = "127.0.0.1"
    port: int = 8080
    token_file: str | None = None
    no_auth: bool = False
    allow_unauthenticated_kserve: bool = False
    limits: db.Limits = db.Limits()
    retention_interval: float = 300.0
    metrics_cache_seconds: float = 30.0
    migrate: bool = True


class TokenFile:
    """The bearer token, re-read when the file changes (a rotated Secret)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._mtime, self._token = None, ""
        self.read()

    def read(self) -> str:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            token = self.path.read_text().strip()
            if not token:
                raise ValueError(f"token file {self.path} is empty")
            self._mtime, self._token = mtime, token
        return self._token

    def matches(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        try:
            token = self.read()
        except (OSError, ValueError):
            token = self._token  # keep the last good token while the Secret is being rewritten
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())


class Recorder:
    """Everything the handler needs; one per server."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = db.create_engine(settings.db_url)
        if settings.migrate:
            db.migrate(self.engine)
        self.token = None if settings.no_auth else TokenFile(settings.token_file) if settings.token_file else None
        if self.token is None and not settings.no_auth:
            raise ValueError("writes need a token: give --token-file (or DON_RECORDER_TOKEN_FILE), "
                             "or --no-auth for a recorder only this machine can reach")
        self.metrics = RecorderMetrics(self.engine, settings.metrics_cache_seconds)
        self.pairs = events.KServePairs(on_drop=self.metrics.unpaired.inc)
        self.retention = db.RetentionJob(self.engine, settings.limits, settings.retention_interval,
                                         on_result=self._retained, on_error=self._retention_failed)

    def _retained(self, deleted: dict) -> None:
        self.metrics.retention_runs.labels("ok").inc()
        for reason, n in deleted.items():
            self.metrics.deleted.labels(reason).inc(n)

    def _retention_failed(self, exc: Exception) -> None:
        self.metrics.retention_runs.labels("error").inc()
        log.warning("retention job failed: %s", str(exc).splitlines()[0])

    def authorised(self, header: str | None, event_type: str | None = None) -> bool:
        if self.token is None:
            return True
        if self.settings.allow_unauthenticated_kserve and event_type in (KSERVE_REQUEST_EVENT_TYPE,
                                                                         KSERVE_RESPONSE_EVENT_TYPE):
            return True
        return self.token.matches(header)

    def ingest(self, headers, body: bytes) -> dict:
        attrs = events.ce_headers(headers)
        kind = attrs["type"]
        if kind == RECORDS_EVENT_TYPE:
            rows = events.records_rows(body, MAX_RECORDS_PER_EVENT)
        elif kind in (KSERVE_REQUEST_EVENT_TYPE, KSERVE_RESPONSE_EVENT_TYPE):
            rows = self.pairs.add(attrs, body, time.monotonic())
            self.metrics.pending.set(len(self.pairs))
            if rows is None:
                return {"accepted": 1, "stored": 0, "waiting": "the other half of this request/response pair"}
        else:
            raise events.EventError(400, f"ce-type {kind[:100]!r} is not one of {', '.join(events.EVENT_TYPES)}")
        stored = db.insert_predictions(self.engine, rows)
        self.metrics.records.labels("stored").inc(stored)
        self.metrics.records.labels("duplicate").inc(len(rows) - stored)
        return {"accepted": len(rows), "stored": stored, "duplicates": len(rows) - stored}

    def import_lab_results(self, body: bytes, partial: bool) -> tuple[int, dict]:
        parsed = labresults.parse_csv(body)
        if parsed.errors and not partial:
            self.metrics.lab.labels("rejected").inc(len(parsed.rows) + len(parsed.errors))
            return 422, {"error": f"{len(parsed.errors)} bad row(s); nothing stored",
                         "errors": parsed.errors[:1000]}
        stored = db.insert_lab_results(self.engine, parsed.rows)
        self.metrics.lab.labels("stored").inc(stored)
        self.metrics.lab.labels("duplicate").inc(len(parsed.rows) - stored)
        self.metrics.lab.labels("rejected").inc(len(parsed.errors))
        return 200, {"stored": stored, "duplicates": len(parsed.rows) - stored,
                     "rejected": len(parsed.errors), "errors": parsed.errors[:1000]}


class Handler(BaseHTTPRequestHandler):
    server_version = "don-recorder"
    recorder: Recorder  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the stdlib's signature)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="don-recorder"')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: dict) -> None:
        self._send(status, json.dumps(doc).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._chunked()
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(411, "a Content-Length header is required")
            return None
        if length > MAX_BODY:
            self.close_connection = True
            self._error(413, f"body of {length} bytes is over the limit of {MAX_BODY}")
            return None
        return self.rfile.read(length)

    def _chunked(self) -> bytes | None:
        parts, size = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                length = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._error(400, "malformed chunked body")
                return None
            size += length
            if size > MAX_BODY:
                self.close_connection = True
                self._error(413, f"body is over the limit of {MAX_BODY} bytes")
                return None
            if length == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(length))
            self.rfile.readline(1024)  # the CRLF after each chunk

    def _discard(self) -> None:
        """Read a small refused body so the client sees our answer, not a broken pipe."""
        self.close_connection = True
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= 1024 * 1024:
            self.rfile.read(int(length))

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        rec = self.recorder
        try:
            if url.path == "/healthz":
                self._json(200, {"status": "alive"})
            elif url.path == "/readyz":
                with rec.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                self._json(200, {"status": "ready", "database": rec.engine.dialect.name})
            elif url.path == "/metrics":
                self._send(200, generate_latest(rec.metrics.registry), CONTENT_TYPE_LATEST)
            elif url.path == ACCURACY_PATH:
                model, version = _model_version(parse_qs(url.query))
                self._json(200, accuracy.report(rec.engine, model, version))
            elif url.path == ACCURACY_SERIES_PATH:
                query = parse_qs(url.query)
                model, version = _model_version(query)
                self._json(200, accuracy.series(rec.engine, _days(query), _last_day(query), model, version))
            elif url.path == PAIRS_PATH:
                model, stable, candidate, detail = _pair_query(parse_qs(url.query))
                self._json(200, pairs.report(rec.engine, model, stable, candidate, detail))
            else:
                self._error(404, f"no such path {url.path[:100]!r}")
        except QueryError as exc:
            self._error(400, str(exc))
        except sa.exc.SQLAlchemyError as exc:
            self._error(503, f"database unavailable: {str(exc).splitlines()[0][:200]}")

    def do_POST(self):  # noqa: N802
        url = urlsplit(self.path)
        rec = self.recorder
        if url.path not in ("/", LAB_RESULTS_PATH):
            self._discard()
            return self._error(404, f"no such path {url.path[:100]!r}")
        if not rec.authorised(self.headers.get("Authorization"), self.headers.get("ce-type")):
            self._discard()
            return self._error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        body = self._body()
        if body is None:
            return
        event_type = (self.headers.get("ce-type") or "none")[:100]
        try:
            if url.path == "/":
                try:
                    result = rec.ingest(self.headers, body)
                except events.EventError as exc:
                    outcome = "rejected" if event_type in events.EVENT_TYPES else "unknown_type"
                    rec.metrics.events.labels(event_type if outcome == "rejected" else "other", outcome).inc()
                    return self._error(exc.status, str(exc))
                rec.metrics.events.labels(event_type, "accepted").inc()
                return self._json(202, result)
            partial = parse_qs(url.query).get("partial", ["false"])[0].lower() in ("1", "true", "yes")
            try:
                status, result = rec.import_lab_results(body, partial)
            except labresults.LabResultsError as exc:
                return self._error(400, str(exc))
            return self._json(status, result)
        except (sa.exc.DataError, sa.exc.IntegrityError) as exc:
            return self._error(422, f"the database refused the data: {str(exc).splitlines()[0][:200]}")
        except sa.exc.SQLAlchemyError as exc:
            return self._error(503, f"database unavailable: {str(exc).splitlines()[0][:200]}")


class QueryError(ValueError):
    """A query parameter a GET cannot use (answered 400 with this message)."""


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit()   # not "²": str.isdigit() alone takes it, int() does not


def _model_version(query: dict) -> tuple[str | None, int | None]:
    model = query.get("model", [None])[0]
    version = query.get("version", [None])[0]
    longest = events.TEXT_LIMITS["model"]  # the column's limits, as records are checked against
    if model is not None and (len(model) > longest or "\x00" in model):
        raise QueryError(f"model {model[:40]!r} must be a model name (at most {longest} characters, no NUL)")
    if version is not None and not (_whole(version) and int(version) <= events.INT32_MAX):
        raise QueryError(f"version {version[:40]!r} must be a whole number")
    return model, int(version) if version else None


def _version(query: dict, name: str) -> int:
    text = query.get(name, [None])[0]
    if text is None:
        raise QueryError(f"{name} is required: the {name} version, a whole number")
    if not (_whole(text) and int(text) <= events.INT32_MAX):
        raise QueryError(f"{name} {text[:40]!r} must be a whole number")
    return int(text)


def _pair_query(query: dict) -> tuple[str, int, int, bool]:
    """model, stable, candidate and detail of GET /v1/pairs; QueryError naming what is wrong."""
    unknown = sorted(set(query) - {"model", "stable", "candidate", "detail"})
    if unknown:
        raise QueryError(f"unknown query parameter(s): {', '.join(u[:40] for u in unknown)} "
                         "(model, stable, candidate, detail)")
    model, _ = _model_version(query)
    if not model:
        raise QueryError("model is required (e.g. ?model=don-rf&stable=1&candidate=2)")
    stable, candidate = _version(query, "stable"), _version(query, "candidate")
    if stable == candidate:
        raise QueryError(f"stable and candidate are both version {stable}: a pair needs two versions")
    detail = query.get("detail", ["0"])[0].lower()
    if detail not in ("0", "1", "true", "false"):
        raise QueryError(f"detail {detail[:40]!r} must be 1, 0, true or false")
    return model, stable, candidate, detail in ("1", "true")


def _days(query: dict) -> int:
    text = query.get("days", ["30"])[0]
    if not _whole(text) or not 1 <= int(text) <= accuracy.MAX_SERIES_DAYS:
        raise QueryError(f"days {text[:40]!r} must be a whole number from 1 to {accuracy.MAX_SERIES_DAYS}")
    return int(text)


def _last_day(query: dict):
    text = query.get("to", [None])[0]
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"to {text[:40]!r} must be a date, YYYY-MM-DD") from None
    if not date(1970, 1, 1) <= day <= date(9998, 12, 31):  # room for the span's arithmetic
        raise QueryError(f"to {text!r} must lie between 1970-01-01 and 9998-12-31")
    return day


def make_server(settings: Settings) -> tuple[ThreadingHTTPServer, Recorder]:
    recorder = Recorder(settings)
    handler = type("RecorderHandler", (Handler,), {"recorder": recorder})
    server = ThreadingHTTPServer((settings.host, settings.port), handler)
    server.daemon_threads = True
    return server, recorder


def serve(settings: Settings) -> None:
    server, recorder = make_server(settings)
    recorder.retention.start()
    log.info("recorder on %s:%d, database %s", settings.host, server.server_address[1],
             recorder.engine.url.render_as_string(hide_password=True))
    # SIGTERM (a pod stopping): finish the requests in flight, then stop.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        recorder.retention.stop()
        server.server_close()


def db_url_from_env() -> str:
    """DON_RECORDER_DB_URL, or the contents of DON_RECORDER_DB_URL_FILE (a mounted Secret)."""
    path = os.environ.get("DON_RECORDER_DB_URL_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get("DON_RECORDER_DB_URL") or db.DEFAULT_URL
