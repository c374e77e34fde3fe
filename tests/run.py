"""`make test`: the rest of the suite and the end-to-end suite side by side, as two pytest processes.

The e2e suite (marker ``e2e``) mostly waits on the local cluster (pods starting, rollout steps),
while the rest is mostly CPU; one after the other they took 13.5 + 18.5 minutes on 2 idle cores
(the fresh-clone CI run of 2026-12-02), side by side 21.7: that waiting overlaps the rest's work
(``DON_TEST_AT_ONCE=0``: one after the other, the rest first). Both parts must pass; under CI=true
a part in which no test passed (all skipped or deselected) fails as well. Every output line is
prefixed with its part's name; a line still being written (pytest's dots) is shown as it grows, so
neither part is ever silent on the terminal. At the end each part's summary line is repeated.
Tests marked ``cpu_timed`` (they assert a request rate) run last in their part and wait for the e2e
part to end first: on 2 cores the cluster's pods would eat into the rate they measure.

The e2e part holds ``/tmp/don-e2e.lock`` (the lock every e2e run on this machine takes, one local
cluster at a time): it waits for another run's cluster, saying so every 50 s, while the rest
goes ahead; when the lock is already held by a process that started this one (``flock
/tmp/don-e2e.lock make test``) it runs under that hold instead of waiting for itself.

    python -m tests.run [PYTEST ARGS...]    # the args go to both parts (`-k NAME`, `-x`)
"""
from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

E2E_LOCK = Path("/tmp/don-e2e.lock")
# Set for both parts: a file that exists (holding this runner's pid) while the e2e part runs. Tests
# marked `cpu_timed` (they assert a request rate) wait for it to go: the cluster shares the 2 cores.
E2E_RUNNING_ENV = "DON_E2E_PART_RUNNING"
REPO = Path(__file__).resolve().parents[1]
# pytest's last line, "=== 3 passed, 1 skipped in 9.87s (0:00:09) ===" (without the "=" under -q)
SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+|no tests ran)(?:, \d+ [a-z]+)* in [\d.]+s(?: \([\d:]+\))?)\s*=*$")
# `make test` runs the two parts side by side (21.7 min vs about 32 one after the other in the
# fresh-clone runs here: the e2e part mostly waits on pods); `DON_TEST_AT_ONCE=0` runs them one after
# the other (the rest first), e.g. to time one part alone.
AT_ONCE_ENV = "DON_TEST_AT_ONCE"
WAIT_SAY_EVERY = 50.0  # under the 60 s a run may be silent
NO_TESTS_SELECTED = 5  # pytest's exit code
PASSED = re.compile(r"\b([1-9]\d*) passed\b")
CI_ENV = "CI"  # "true" on CI services (GitHub Actions, GitLab CI, ...)


def under_ci() -> bool:
    """Under CI=true nothing may pass by not running: a missing prerequisite fails the test
    (tests/conftest.py: `unavailable`) and a part in which no test passed fails `make test`."""
    return os.environ.get(CI_ENV) == "true"


class Cancelled(Exception):
    pass


@dataclass
class Part:
    name: str
    argv: list[str]
    lock: Path | None = None        # held while this part runs
    may_select_none: bool = False   # pytest's exit 5 (no test selected) counts as passed
    running_flag: Path | None = None  # exists from before the start until this part ends
    returncode: int | None = None
    summary: str = ""
    seconds: float = 0.0
    started: float = field(default=0.0, repr=False)


class Terminal:
    """Writes the parts' output, each line prefixed. Partial lines are written at once; when another
    part writes meanwhile, the partial line is ended and later continued under its prefix again."""

    def __init__(self, out, width: int):
        self.out, self.width = out, width
        self.lock = threading.Lock()
        self.open_line: str | None = None  # the part whose line the cursor is in the middle of

    def write(self, name: str, text: str) -> None:
        with self.lock:
            for piece in text.splitlines(keepends=True):
                if self.open_line != name:
                    if self.open_line is not None:
                        self.out.write("\n")
                    self.out.write(f"[{name}]".ljust(self.width + 4))
                self.out.write(piece)
                self.open_line = None if piece.endswith("\n") else name
            self.out.flush()

    def say(self, text: str) -> None:
        self.write("make test", text.rstrip("\n") + "\n")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command in parentheses
    return pids


def lock_holders(path: Path) -> set[int]:
    """PIDs holding a flock on ``path`` (from /proc/locks, matched by inode)."""
    try:
        stat = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return set()
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    holders = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF" (a waiter's line has "->" after the id)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == file_id:
            holders.add(int(fields[4]))
    return holders


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


@contextlib.contextmanager
def held(path: Path, say: Callable[[str], None], every: float = WAIT_SAY_EVERY,
         cancel: threading.Event | None = None) -> Iterator[None]:
    """Hold the flock on ``path`` for the block: wait for another holder (saying so every
    ``every`` seconds), but not for one of this process's ancestors, which holds it for us.
    Setting ``cancel`` ends the wait with ``Cancelled``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file: a read-only descriptor locks it as well
        fd = os.open(path, os.O_RDONLY)
    try:
        waited_since, said = time.monotonic(), 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if said:
                    say(f"got {path} after {time.monotonic() - waited_since:.0f} s")
                break
            except BlockingIOError:
                holders = lock_holders(path)
                ours = holders & _ancestors()
                if ours:
                    say(f"{path} is held by pid {min(ours)} ({_cmdline(min(ours))}), which started "
                        "this run: running under its hold")
                    break
                if not said or time.monotonic() - said >= every:
                    names = ", ".join(f"pid {p} ({_cmdline(p)})" for p in sorted(holders)) or "?"
                    say(f"waiting for {path}: another e2e run holds it ({names}); "
                        f"{time.monotonic() - waited_since:.0f} s so far")
                    said = time.monotonic()
                if (cancel or threading.Event()).wait(1):
                    raise Cancelled(f"stopped while waiting for {path}") from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _pump(part: Part, proc: subprocess.Popen, term: Terminal) -> None:
    pending, decoder = "", codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := os.read(proc.stdout.fileno(), 65536):
        text = decoder.decode(chunk)  # a character split between two reads is kept for the next
        term.write(part.name, text)
        pending = (pending + text)[-4096:]
        for line in pending.splitlines():
            if match := SUMMARY.match(line.strip()):
                part.summary = match.group(1)


def _run(part: Part, term: Terminal, procs: list, stopping: threading.Event) -> None:
    try:
        _run_part(part, term, procs, stopping)
    except Exception as exc:  # a thread's exception would otherwise only end the thread
        term.write(part.name, f"could not run {part.argv}: {exc!r}\n")
        part.returncode = 1
    finally:
        if part.running_flag is not None:
            part.running_flag.unlink(missing_ok=True)


def _run_part(part: Part, term: Terminal, procs: list, stopping: threading.Event) -> None:
    with contextlib.ExitStack() as stack:
        if part.lock is not None:
            try:
                stack.enter_context(held(part.lock, lambda text: term.write(part.name, text + "\n"),
                                         cancel=stopping))
            except Cancelled as exc:
                term.write(part.name, f"{exc}\n")
                part.returncode = 2
                return
        if stopping.is_set():
            part.returncode = 2
            return
        part.started = time.monotonic()
        proc = subprocess.Popen(part.argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append(proc)
        _pump(part, proc, term)
        part.returncode = proc.wait()
        if part.returncode == NO_TESTS_SELECTED and part.may_select_none:
            part.returncode = 0
        if part.returncode == 0 and under_ci() and not PASSED.search(part.summary):
            # Everything skipped (a prerequisite missing) or deselected: nothing was tested.
            summary = part.summary or "no summary line"
            term.write(part.name, f"CI=true: no test of this part passed ({summary}): a failure\n")
            part.returncode = 1
        part.seconds = time.monotonic() - part.started


def run_parts(parts: list[Part], out=sys.stdout, at_once: bool = True) -> int:
    """Run the parts at once (or one after another, in order); 0 when every part exited 0.
    Output prefixed, summaries at the end."""
    term = Terminal(out, max(len(p.name) for p in parts + [Part("make test", [])]))
    procs: list[subprocess.Popen] = []
    stopping = threading.Event()

    def forward(signum, _frame):
        # Ctrl-C reaches the children through the terminal; SIGTERM is passed on as SIGINT so
        # that the e2e part still tears its cluster down.
        stopping.set()
        if signum == signal.SIGTERM:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        # At once: every flag exists before any part starts. One by one: a part's flag only while
        # it runs, so an earlier part never waits for a later one.
        for batch in ([parts] if at_once else [[part] for part in parts]):
            for part in batch:
                if part.running_flag is not None:
                    part.running_flag.write_text(str(os.getpid()))
            threads = [threading.Thread(target=_run, args=(p, term, procs, stopping), daemon=True)
                       for p in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for part in parts:
        state = "passed" if part.returncode == 0 else f"FAILED (exit {part.returncode})"
        term.say(f"{part.name}: {state}: {part.summary or 'no summary line'} "
                 f"({part.seconds / 60:.1f} min)")
    failed = [p.name for p in parts if p.returncode != 0]
    total = time.monotonic() - started
    term.say(f"{'failed: ' + ', '.join(failed) if failed else 'all parts passed'} "
             f"in {int(total // 60)} min {int(total % 60)} s")
    return 1 if failed else 0


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    if sys.stdout.isatty():
        pytest.append("--color=yes")
    # Without arguments this is `make test`: a part that selects nothing is a broken suite. With
    # some (`-k name`), the selection may well fall in one part only.
    at_once = os.environ.get(AT_ONCE_ENV, "1") != "0"
    with tempfile.TemporaryDirectory(prefix="don-make-test-") as tmp:
        flag = Path(tmp) / "e2e-part-running"
        os.environ[E2E_RUNNING_ENV] = str(flag)
        parts = [Part("tests", [*pytest, "-m", "not e2e", "--durations=20", *args], may_select_none=bool(args)),
                 Part("e2e", [*pytest, "-m", "e2e", *args], lock=E2E_LOCK, may_select_none=bool(args),
                      running_flag=flag)]
        return run_parts(parts, at_once=at_once)


def wait_while_e2e_part_runs(what: str, say: Callable[[str], None], every: float = WAIT_SAY_EVERY) -> None:
    """For a `cpu_timed` test under `make test`: return once the e2e part has ended (its flag gone,
    or the runner that wrote it gone), saying so every ``every`` seconds. At once outside the runner."""
    flag = os.environ.get(E2E_RUNNING_ENV)
    if not flag:
        return
    started, said = time.monotonic(), 0.0
    while True:
        try:
            os.kill(int(Path(flag).read_text()), 0)
        except (OSError, ValueError):
            return  # no flag (e2e part done) or no runner: nothing to wait for
        if not said or time.monotonic() - said >= every:
            say(f"{what} asserts a request rate: waiting for the e2e part to end, which shares the "
                f"CPU ({time.monotonic() - started:.0f} s so far)")
            said = time.monotonic()
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
