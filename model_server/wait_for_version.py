"""Waiting for a version that is not in the store yet.

One `helm install` on an empty store starts the training Jobs and the predictors together, so a
server may start before its version is published. Publishing is atomic (the version directory
appears by rename with metadata.json inside), so the server waits for `<model_dir>/metadata.json`:
live and not ready, the reason on /status, in the readiness answers and in the log (once, then
every minute), and loads the version by itself once the file is there. Nothing here creates
anything: the serving path mounts the store read-only.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from don_core.artifact import METADATA_FILE

log = logging.getLogger("model_server")
POLL_SECONDS = 2.0        # how soon a published version is noticed
LOG_EVERY_SECONDS = 60.0  # one log line a minute while waiting, not one a poll


def waiting_reason(name: str, model_dir: Path) -> str | None:
    """Why the version cannot be loaded yet; None once it can be tried (metadata.json is there, or
    the directory cannot be read at all: loading then refuses it and says why)."""
    marker = Path(model_dir) / METADATA_FILE
    try:
        if marker.is_file():
            return None
    except OSError:  # e.g. permission denied: not something waiting can fix
        return None
    version = Path(model_dir).name
    what = f"version {version} of {name}" if version.isdigit() else f"the version of {name}"
    return f"{what} is not in the store yet: waiting for {marker}"


def load_when_published(model, stop: threading.Event | None = None,
                        poll_seconds: float = POLL_SECONDS,
                        log_every: float = LOG_EVERY_SECONDS) -> bool:
    """Wait until `model`'s version directory holds metadata.json, then `model.load()` it; what
    load() returns (False also when `stop` is set first)."""
    stop = stop or threading.Event()
    started, logged = time.monotonic(), None
    while (reason := waiting_reason(model.name, model.model_dir)) is not None:
        model.wait(reason)
        now = time.monotonic()
        if logged is None or now - logged >= log_every:
            log.warning("%s", reason, extra={"model": model.name, "waited_seconds": round(now - started)})
            logged = now
        if stop.wait(poll_seconds):
            return False
    if logged is not None:
        log.info("%s appeared in the store after %.0f s; loading it", model.model_dir,
                 time.monotonic() - started, extra={"model": model.name})
    return model.load()


def load_or_wait(model) -> None:
    """Load the version now if it is there (before the server starts, as ever); otherwise wait
    for it in a daemon thread while the server answers "not ready" and why."""
    if waiting_reason(model.name, model.model_dir) is None:
        model.load()
    else:
        threading.Thread(target=load_when_published, args=(model,), name="wait-for-version",
                         daemon=True).start()
