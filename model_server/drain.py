"""Graceful drain, so that a rollout or scale-down drops no request.

Kubernetes runs the pod's preStop hook, `python -m model_server.drain SECONDS`, before it sends
SIGTERM. The hook signals the server (SIGUSR1 to PID 1, the server in its container): readiness
turns false at once and every response closes its kept-open connection, so callers and proxies
reconnect to other pods, while requests still arriving are served as usual. The hook then waits
SECONDS for endpoints and load balancers to stop routing here. SIGTERM follows: uvicorn stops
accepting, finishes the requests in flight (KServe's grace period) and the process exits.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("model_server")
DRAINING = threading.Event()


def start_draining(*_) -> None:
    if not DRAINING.is_set():
        DRAINING.set()
        log.info("draining: readiness is false and kept-open connections close after their "
                 "next response; SIGTERM will follow")


def install_signal() -> None:
    """In the server's main thread, before it starts."""
    signal.signal(signal.SIGUSR1, start_draining)


class DrainMiddleware:
    """While draining, every response carries `Connection: close`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not DRAINING.is_set():
            return await self.app(scope, receive, send)

        async def closing(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, closing)


def main(argv: list[str]) -> int:
    """preStop: `python -m model_server.drain [SECONDS]` (DON_SERVER_PID: the server, default 1)."""
    seconds = float(argv[0]) if argv else 10.0
    try:
        os.kill(int(os.environ.get("DON_SERVER_PID", "1")), signal.SIGUSR1)
    except ProcessLookupError:
        return 0  # already gone: nothing to drain
    time.sleep(seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
