"""Start long-running daemons detached, remember their PIDs in a state file, stop them by PID.

The state file lets ``python -m tests.cluster ... down`` stop what an earlier ``up`` started, and lets a
context manager clean up even when a test fails. We never look processes up by name.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

STATE_FILE = "pids.json"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before by this process: the kernel may give a
    just-closed port again, and two servers started one after the other must not share one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _read_state(state_dir: Path) -> dict[str, dict]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _write_state(state_dir: Path, state: dict[str, dict]) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(state_dir / STATE_FILE)


def _start_time(pid: int) -> str | None:
    """Process start time from /proc: guards against killing a recycled PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Daemons:
    """The daemons of one cluster, recorded in ``<state_dir>/pids.json``."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"

    def start(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        log.close()
        state = _read_state(self.state_dir)
        state[name] = {"pid": proc.pid, "start": _start_time(proc.pid), "argv": argv[:1]}
        _write_state(self.state_dir, state)
        return proc.pid

    def alive(self, name: str) -> bool:
        entry = _read_state(self.state_dir).get(name)
        if not entry:
            return False
        try:
            # Reap it if it was our child and has exited (otherwise it lingers as a zombie).
            os.waitpid(entry["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        start = _start_time(entry["pid"])
        if start is None or start != entry["start"]:
            return False
        return Path(f"/proc/{entry['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def names(self) -> list[str]:
        return list(_read_state(self.state_dir))

    def stop(self, name: str, timeout: float = 10.0) -> None:
        state = _read_state(self.state_dir)
        entry = state.pop(name, None)
        if entry and _start_time(entry["pid"]) == entry["start"]:
            pid = entry["pid"]
            # Each daemon leads its own session: signal the group so helpers it forked go too.
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _start_time(pid) == entry["start"]:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            else:
                if _start_time(pid) == entry["start"]:
                    _signal_group(pid, signal.SIGKILL)
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass
        _write_state(self.state_dir, state)

    def stop_all(self, order: list[str] | None = None) -> None:
        """Stop in the given order (dependents first), then anything else recorded."""
        names = self.names()
        for name in [n for n in (order or []) if n in names] + [n for n in reversed(names)
                                                                  if n not in (order or [])]:
            self.stop(name)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class ProcessDied(RuntimeError):
    """A daemon we are waiting for has exited: waiting longer cannot help."""


def wait_for(check: Callable[[], bool], timeout: float, what: str,
              on_fail: Callable[[], str] | None = None, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ProcessDied:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last_error = exc
        time.sleep(interval)
    detail = on_fail() if on_fail else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                       f"{f' (last error: {last_error})' if last_error else ''}\n{detail}")
