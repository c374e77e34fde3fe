"""Loopback helpers every test area uses: a free port, and waiting for a server to answer."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
