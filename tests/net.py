"""Loopback helpers every test area uses: a free port, waiting for a server to answer, and a
server process held for the length of a block."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from tests.cluster.processes import free_port  # noqa: F401  (one definition, re-exported)


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None,
                  ok_only: bool = False) -> None:
    """Until `url` answers (any HTTP status; only 200 with `ok_only`). RuntimeError if `process`
    exits first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 or not ok_only:
                    return
        except urllib.error.HTTPError:
            if not ok_only:
                return  # it answers
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer{' 200' if ok_only else ''} within {timeout} s")


@contextmanager
def running(command: list[str], health_url: str, timeout: float, **popen):
    """Start `command`, wait until `health_url` answers, yield the process; terminate it after."""
    process = subprocess.Popen(command, **popen)
    try:
        wait_for_http(health_url, timeout=timeout, process=process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group of `process` (started with start_new_session), SIGKILL after
    `grace` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
