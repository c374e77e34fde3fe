"""Progress on stderr for long work: every step says what it does, and a step that runs for a
while is re-announced with its elapsed time, so a user never watches a silent terminal."""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

HEARTBEAT_SECONDS = 30.0


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """A callable progress sink: ``say(msg)`` prints msg; while no new message comes for
    ``every`` seconds, it repeats the last one with the time it has been running."""

    def __init__(self, sink: Callable[[str], None] = stderr, every: float = HEARTBEAT_SECONDS):
        self._sink, self._every = sink, every
        self._last, self._since = "", time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)

    def __call__(self, message: str) -> None:
        with self._lock:
            self._last, self._since = message, time.monotonic()
        self._sink(message)

    def _beat(self) -> None:
        while not self._done.wait(self._every):
            with self._lock:
                last, elapsed = self._last, time.monotonic() - self._since
            if last and elapsed >= self._every:
                tag = last[:last.index("]") + 1] if last.startswith("[") and "]" in last else ""
                self._sink(f"{tag} ... still working ({elapsed:.0f} s since the last message)"
                           .lstrip())

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
