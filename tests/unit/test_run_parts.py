"""`make test`'s runner (tests/run.py): two pytest processes at once, output prefixed, both must pass,
and the e2e lock waited for, except when a caller already holds it (no deadlock)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from tests import run
from tests.conftest import REPO


def test_partial_lines_of_two_parts_are_never_glued_together():
    out = io.StringIO()
    term = run.Terminal(out, width=5)
    term.write("tests", "tests/a.py ..")
    term.write("e2e", "[suite] still running\n")
    term.write("tests", "..  [ 10%]\ntests/b.py .")
    term.write("tests", ".\n")
    assert out.getvalue().splitlines() == [
        "[tests]  tests/a.py ..",
        "[e2e]    [suite] still running",
        "[tests]  ..  [ 10%]",
        "[tests]  tests/b.py ..",
    ]


def _pytest_part(name: str, tmp_path, body: str) -> run.Part:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / f"test_{name}.py").write_text(body)
    return run.Part(name, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(folder), "-c", str(folder / "pytest.ini"), str(folder)])


def test_both_parts_run_at_once_and_each_must_pass(tmp_path):
    # Each part waits for the other's file: run one after the other, neither could finish.
    a_up, b_up = tmp_path / "a.up", tmp_path / "b.up"
    wait = ("import pathlib, time\n"
            "def test_meet():\n"
            "    pathlib.Path({mine!r}).touch()\n"
            "    deadline = time.monotonic() + 300\n"
            "    while not pathlib.Path({theirs!r}).exists():\n"
            "        assert time.monotonic() < deadline, 'the other part is not running'\n"
            "        time.sleep(0.1)\n")
    parts = [_pytest_part("one", tmp_path, wait.format(mine=str(a_up), theirs=str(b_up))),
             _pytest_part("two", tmp_path, wait.format(mine=str(b_up), theirs=str(a_up))
                          + "def test_fails():\n    assert 1 == 2\n")]
    out = io.StringIO()
    assert run.run_parts(parts, out=out) == 1
    text = out.getvalue()
    assert [p.returncode for p in parts] == [0, 1]
    assert parts[0].summary.startswith("1 passed in ")
    assert parts[1].summary.startswith("1 failed, 1 passed in ")
    lines = text.splitlines()
    assert all(line.startswith(("[one]", "[two]", "[make test]")) for line in lines), text
    assert any(line.startswith("[two]") and "assert 1 == 2" in line for line in lines)
    assert "[make test]  one: passed: 1 passed in " in text
    assert "[make test]  two: FAILED (exit 1): 1 failed, 1 passed in " in text
    assert lines[-1].startswith("[make test]  failed: two in ")

    parts = [_pytest_part("three", tmp_path, "def test_ok():\n    pass\n")]
    assert run.run_parts(parts, out=io.StringIO()) == 0


def _wait_until_held(lock, holder: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not run.lock_holders(lock):
        assert time.monotonic() < deadline and holder.poll() is None, "flock did not take the lock"
        time.sleep(0.05)


def test_lock_held_by_another_process_is_waited_for(tmp_path):
    lock = tmp_path / "e2e.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "2"])
    _wait_until_held(lock, holder)
    said = []
    with run.held(lock, said.append, every=0.5):
        assert holder.poll() is not None, "entered while another process held the lock"
    assert said[0].startswith(f"waiting for {lock}: another e2e run holds it (pid {holder.pid} (flock ")
    assert said[-1].startswith(f"got {lock} after ")


def test_lock_held_by_the_caller_is_run_under_not_waited_for(tmp_path):
    # `flock /tmp/don-e2e.lock make test`: waiting for our own caller would never end.
    lock = tmp_path / "e2e.lock"
    code = (f"from tests import run\n"
            f"with run.held(__import__('pathlib').Path({str(lock)!r}), print):\n"
            f"    print('inside')\n")
    out = subprocess.run(["flock", str(lock), sys.executable, "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "which started this run: running under its hold" in out.stdout
    assert out.stdout.splitlines()[-1] == "inside"


def test_waiting_for_the_lock_ends_when_the_run_is_stopped(tmp_path):
    lock = tmp_path / "e2e.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        _wait_until_held(lock, holder)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        with pytest.raises(run.Cancelled):
            with run.held(lock, lambda _: None, cancel=cancel):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_the_e2e_flag_exists_exactly_while_its_part_runs(tmp_path):
    flag = tmp_path / "e2e-running"
    part = _pytest_part("flagged", tmp_path,
                        f"import os, pathlib\ndef test_flag():\n"
                        f"    assert pathlib.Path({str(flag)!r}).read_text() == {str(os.getpid())!r}\n")
    part.running_flag = flag
    assert run.run_parts([part], out=io.StringIO()) == 0 and part.summary.startswith("1 passed")
    assert not flag.exists()


def test_cpu_timed_tests_wait_for_the_e2e_part_to_end(tmp_path, monkeypatch):
    said = []
    monkeypatch.delenv(run.E2E_RUNNING_ENV, raising=False)  # this test may itself run under make test
    run.wait_while_e2e_part_runs("t", said.append)  # outside `make test`: no wait at all
    assert said == []
    flag = tmp_path / "e2e-running"
    monkeypatch.setenv(run.E2E_RUNNING_ENV, str(flag))
    flag.write_text(str(os.getpid()))
    threading.Timer(1.5, flag.unlink).start()
    started = time.monotonic()
    run.wait_while_e2e_part_runs("tests/x.py::test_rate", said.append, every=0.5)
    assert time.monotonic() - started >= 1.4 and not flag.exists()
    assert said[0].startswith("tests/x.py::test_rate asserts a request rate: waiting for the e2e part")
    dead = subprocess.Popen(["true"])
    dead.wait()
    flag.write_text(str(dead.pid))  # the runner was killed: nothing left to wait for
    started = time.monotonic()
    run.wait_while_e2e_part_runs("t", said.append)
    assert time.monotonic() - started < 1


def test_cpu_timed_tests_are_collected_last():
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                          "tests/integration/test_server_load.py", "tests/unit/test_makefile.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert ids[-1].endswith("test_steady_rate_for_a_minute_without_errors"), out.stdout
    assert any("test_makefile.py" in i for i in ids[:-1]), out.stdout


def test_one_by_one_each_part_runs_after_the_previous_and_its_flag_only_while_it_runs(tmp_path):
    flag, first_done = tmp_path / "e2e-running", tmp_path / "first-done"
    first = _pytest_part("first", tmp_path,
                         f"import pathlib\ndef test_first():\n"
                         f"    assert not pathlib.Path({str(flag)!r}).exists()\n"
                         f"    pathlib.Path({str(first_done)!r}).write_text('x')\n")
    second = _pytest_part("second", tmp_path,
                          f"import pathlib\ndef test_second():\n"
                          f"    assert pathlib.Path({str(first_done)!r}).exists()\n"
                          f"    assert pathlib.Path({str(flag)!r}).exists()\n")
    second.running_flag = flag
    assert run.run_parts([first, second], out=io.StringIO(), at_once=False) == 0
    assert first.summary.startswith("1 passed") and second.summary.startswith("1 passed")
    assert not flag.exists()
