"""The getting-started commands work as written: a newcomer copies them from the README's Set-up
section and from the documentation site's laptop page (docs/getting-started/laptop.md: set-up,
training, serving) into a shell with the virtualenv activated (as the page says), in order.

What the test changes, and why: the store `/tmp/s` becomes a fresh temporary directory and port
8080 a free port (so the run cannot collide with a user's or another test's), `curl` gets
`--fail-with-body` (so an HTTP error fails the command instead of printing a body), S3 commands
go to a real S3-compatible server on loopback with the buckets the example names, and a line that
starts a server in the background (`... &`) is started and waited for before the next line. The
two set-up commands are not re-run here: `make test` is this suite, and `make demo` has its own
test (tests/integration/test_demo.py).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.net import free_port

# Each page with the level-2 headings whose ```bash blocks are run (None: every block of the page).
PAGES = ((REPO / "README.md", ("Set-up",)), (REPO / "docs" / "getting-started" / "laptop.md", None))
# `make demo` has its own test (tests/integration/test_demo.py) and `make test` is this suite; the
# activation is what the test's environment does (PATH, VIRTUAL_ENV).
COVERED_ELSEWHERE = {"make demo", "make test", ". .venv/bin/activate"}


def readme_commands(readme: str, sections: tuple[str, ...] | None = None) -> list[str]:
    """The command lines of the ```bash blocks under the level-2 headings named in `sections`."""
    commands = []
    for section in re.split(r"^## ", readme, flags=re.M)[1:]:
        title = section.splitlines()[0]
        if sections is not None and not title.startswith(sections):
            continue
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
            for line in block.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing "  # comment"
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def documented_commands() -> list[str]:
    return [c for page, sections in PAGES for c in readme_commands(page.read_text(), sections)]


def test_readme_sections_have_commands():
    assert {"make demo", "make test"} <= set(readme_commands((REPO / "README.md").read_text(), ("Set-up",)))
    commands = documented_commands()
    assert any(c.startswith("python -m training_job train") for c in commands)
    assert any(c.startswith("python -m model_server") for c in commands)
    assert any(c.startswith("curl") for c in commands)


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server the README starts exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the server the README starts was not ready in {timeout:.0f} s")


@pytest.mark.slow
@pytest.mark.s3
def test_readme_commands_run_as_written(tmp_path, real_data_path, s3_env, s3_server):
    from don_core.store import s3_client
    s3 = s3_client()
    for bucket in ("lab", "models"):
        s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(real_data_path), "lab", "corn.csv")

    store, port, scratch = tmp_path / "s", free_port(), tmp_path / "files"
    scratch.mkdir()
    env = {**os.environ, **s3_env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # activated
           "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def as_run_here(command: str) -> str:
        command = re.sub(r"/tmp/s\b", str(store), command)
        command = re.sub(r"/tmp/(v[12]\.json)", rf"{scratch}/\1", command)
        command = re.sub(r"\b8080\b", str(port), command)
        return re.sub(r"^curl ", "curl --fail-with-body ", command)

    servers = []
    try:
        for command in documented_commands():
            if command in COVERED_ELSEWHERE:
                continue
            line = as_run_here(command)
            if line.endswith("&"):
                proc = subprocess.Popen(["bash", "-c", line[:-1]], cwd=REPO, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                servers.append(proc)
                _wait_ready(port, proc)
                continue
            out = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=900)
            assert out.returncode == 0, (f"README command failed ({out.returncode}): {command}\n"
                                         f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            if command.startswith("curl"):
                assert out.stdout.strip(), f"no answer to: {command}"
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
