"""A recorder stand-in on loopback: a real HTTP server that takes the model server's records
events (CloudEvents in binary mode, either body form of don_core.records) and answers at once,
like a fast recorder. One home for the records tests (tests/integration/test_server_records_drift.py) and
benchmarks/serve.py; a development tool, not part of any shipped package."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from don_core.records import record_count, record_dicts


def serve_on_loopback(handler) -> ThreadingHTTPServer:
    """A threading HTTP server on a free loopback port, serving in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class RecordsSink:
    """`keep=True` keeps every event as (lower-cased headers, decoded body) and `records()` reads
    them as record dicts; `keep=False` only counts the records (a benchmark sends far too many to keep)."""

    def __init__(self, status: int = 200, keep: bool = True):
        self.events: list[tuple[dict, dict]] = []
        self.received = 0  # records, kept or not
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the model server's sender expects

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with sink._lock:
                    sink.received += record_count(body)
                    if keep:
                        sink.events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = serve_on_loopback(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/records"

    def records(self) -> list[dict]:
        with self._lock:
            return [r for _, body in self.events for r in record_dicts(body)]

    def wait_for(self, rows: int, timeout: float = 15.0) -> list[dict]:
        """The kept records once at least `rows` have arrived (or the timeout has passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.received < rows:
            time.sleep(0.1)
        return self.records()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
