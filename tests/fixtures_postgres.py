"""A throwaway PostgreSQL (Debian's postgresql-15 binaries) on a free loopback port.

Installed with apt when absent. As root the server runs as the `postgres` user (PostgreSQL refuses
to run as root). Where it cannot start, the tests using it skip, except under CI=true where they
fail (tests/conftest.py: `unavailable`).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.net import free_port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """SQLAlchemy URL of a fresh, empty database; the cluster is removed afterwards."""
    if _pg_bin() is None:
        from tests.cluster import binaries
        try:
            binaries.apt_install(["postgresql-15"])
        except Exception as exc:  # any install failure: the tests cannot run here
            unavailable(f"PostgreSQL is not installed and apt failed: {exc}")
    bin_dir = _pg_bin()
    if bin_dir is None:
        unavailable("no /usr/lib/postgresql/*/bin/initdb after installing postgresql-15")
    work = Path(tempfile.mkdtemp(prefix="don-pg-"))
    data, sock = work / "data", work / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    steps = [
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "don", "--auth=trust", "-E", "UTF8", "--no-sync"],
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "-t", "60", "-o",
         f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
    ]
    for cmd in steps:
        result = run(*cmd)
        if result.returncode:
            log = (work / "log").read_text() if (work / "log").exists() else ""
            shutil.rmtree(work, ignore_errors=True)
            unavailable(f"{Path(cmd[0]).name} failed: {result.stderr.strip()[-500:]} {log[-500:]}")
    try:
        yield f"postgresql+psycopg://don@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(work, ignore_errors=True)
