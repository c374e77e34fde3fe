"""Progress lines for `make test`, written past pytest's output capture.

pytest captures everything a fixture prints, so a fixture that builds Kubernetes (minutes) or
trains models looks like a hung terminal. ``say`` writes to a copy of the terminal's stdout taken
before any test runs; the watchdog names the test or fixture step that has been running for a
minute with no output, so no stretch of the run is silent for longer than that.
"""
from __future__ import annotations

import os
import sys
import threading
import time

SILENT_SECONDS = 55.0

_out = None
_lock = threading.Lock()
_state = {"what": "collecting", "since": time.monotonic(), "last_output": time.monotonic()}


def say(message: str) -> None:
    """One line on the terminal, now, whatever pytest is capturing."""
    line = f"\n[suite {time.strftime('%H:%M:%S')}] {message}\n"
    with _lock:
        _state["last_output"] = time.monotonic()
        (_out or sys.stderr).write(line)
        (_out or sys.stderr).flush()


def now_running(what: str) -> None:
    """Called by the runtest hooks: the step the watchdog names if it goes quiet."""
    with _lock:
        _state.update(what=what, since=time.monotonic(), last_output=time.monotonic())


def _watch(stop: threading.Event) -> None:
    while not stop.wait(5):
        with _lock:
            quiet = time.monotonic() - _state["last_output"]
            what, elapsed = _state["what"], time.monotonic() - _state["since"]
        if quiet >= SILENT_SECONDS:
            say(f"still running: {what} ({elapsed:.0f} s so far)")


def start() -> threading.Event:
    """Takes the terminal copy (capture is suspended while pytest configures) and starts the
    watchdog; set the returned event to stop it."""
    global _out
    _out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    stop = threading.Event()
    threading.Thread(target=_watch, args=(stop,), name="suite-progress", daemon=True).start()
    return stop
