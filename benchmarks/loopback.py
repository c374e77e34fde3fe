"""What the serving benchmarks (serve.py, mirror.py, images.py) drive servers with on loopback:
a server process pinned to a CPU when asked, and wrk's figures for one URL and body."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from don_core.contract import BINARY_HEADER_LENGTH_HEADER
from tests.net import free_port, stop_group

REPO = Path(__file__).resolve().parents[1]

LUA = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("WRK_CTYPE")
local hl = os.getenv("WRK_HLEN")
if hl ~= nil and hl ~= "" then wrk.headers["%s"] = hl end
-- a fixed pause before each request of a connection (ms): a set request rate, not saturation
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pause ~= nil then function delay() return pause end end
""" % BINARY_HEADER_LENGTH_HEADER


class BenchError(Exception):
    pass


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk (HTTP load generator) not found on PATH; install it: "
                         "`apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)")
    return path


class Server:
    """One server process on loopback, pinned to a CPU when asked."""

    def __init__(self, label: str, argv: list[str], log_dir: Path, cpu: str | None):
        self.label = label
        self.http = free_port()
        grpc = free_port()
        cmd = [*argv, "--http_port", str(self.http), "--grpc_port", str(grpc)]
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.log_path = log_dir / f"{label.replace(' ', '_')}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            env.pop(var, None)  # the same settings for every server: no trace export
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (taskset execs it: same pid)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.3) -> None:
        """Until /v2/health/ready answers 200, polled every `poll` seconds (images.py times
        start-up with a finer poll)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited ({self.proc.returncode}); see "
                                 f"{self.log_path}:\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url("/v2/health/ready"), timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(poll)
        raise BenchError(f"{self.label} not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        stop_group(self.proc, 15)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def run_wrk(wrk: str, url: str, body: Path, connections: int, seconds: float, cpu: str | None,
            content_type: str = "application/json", header_length: int | None = None,
            delay_ms: int | None = None) -> dict:
    """wrk's figures; with `delay_ms` each connection pauses that long before each request (wrk
    times a request from its sending, so the pause is not in the latency)."""
    script = body.parent / "post.lua"
    script.write_text(LUA)
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
           "-s", str(script), url]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    env = {**os.environ, "WRK_BODY": str(body), "WRK_CTYPE": content_type,
           "WRK_HLEN": "" if header_length is None else str(header_length),
           "WRK_DELAY_MS": "" if delay_ms is None else str(delay_ms)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if out.returncode != 0:
        raise BenchError(f"wrk failed: {out.stderr or out.stdout}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    done = int(re.search(r"(\d+) requests in", text).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non2xx.group(1)) if non2xx else 0) + \
        (sum(int(g) for g in sock.groups()) if sock else 0)
    return {"rps": rps, "p50": _ms(pct["50"]), "p99": _ms(pct["99"]), "errors": errors, "requests": done}
