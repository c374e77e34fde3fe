"""What mirroring every request to a shadow costs the stable's callers, in one run.

Starts on loopback a shadow and a stable model server whose mirror setting is the JSON file it
re-reads (model_server/mirror.py), then drives the stable with 1-row V1 requests at a set
moderate rate from `--connections` kept-alive connections, in rounds alternating mirroring off
(percent 0) and at 100 %, the order of each pair alternating. Per side, medians over the rounds:
the caller's p50 and p99, the stable server's process CPU time per request (user + system, from
/proc: the mirror's worker tasks and its socket writes included), the caller's errors (must be 0)
and the copies sent / dropped / failed (don_mirror_requests_total). Goal: p50, p99 and CPU per
request with mirroring within 5 % of without, judged on the median over the pairs of the
per-pair ratio of CPU per request (on a shared machine how much CPU a process gets swings from
one second to the next; what a request costs does not; the latency tails are the scheduler's).

The shadow (`--shadow`): `stub` (default), a minimal HTTP server answering 200 at once, so that
only what mirroring costs the stable is measured; `server`, a real model server, whose own
inference for every copy competes for the same cores here (in a cluster it runs in other pods).

Usage: python benchmarks/mirror.py [--store ROOT] [--rounds N] [--seconds S] [--rate R]
                                   [--connections C] [--rows N] [--pin] [--shadow stub|server]
--store: a model store with don-rf versions (the stable serves the first, the shadow the last);
without it a RandomForest is trained on the real data (or synthetic data) into a temporary store.
--pin: the stable on CPU 0, the shadow and this client on CPU 1.
Exit status 0 when the goal is met, 1 when not, 2 when it cannot run. The last lines are the
run's row of the table in docs/components/model-server.md (markdown, as printed).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.loopback import BenchError, Server  # noqa: E402
from benchmarks.serve import REAL_DATA  # noqa: E402
from tests.net import free_port  # noqa: E402
from don_core.contract import MIRROR_REQUESTS_METRIC  # noqa: E402

GOAL = 0.05  # mirroring adds at most 5 % to CPU per request (and, beside it, to p50 / p99)
MODEL = "don-rf"
# A shadow that answers at once: `python -c STUB PORT`.
STUB = """
import asyncio, sys
import uvloop
ANSWER = (b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 25\\r\\n"
          b"\\r\\n{\\"predictions\\": [1234.5]}")
async def handle(reader, writer):
    try:
        while True:
            head = (await reader.readuntil(b"\\r\\n\\r\\n")).lower()
            at = head.index(b"content-length:") + 15
            await reader.readexactly(int(head[at:head.index(b"\\r\\n", at)]))
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""


def versions(store: Path) -> list[Path]:
    found = sorted((int(p.name), p) for p in (store / MODEL).iterdir() if p.name.isdigit())
    if not found:
        raise BenchError(f"no version of {MODEL} in {store}")
    return [p for _, p in found]


def train(root: Path) -> Path:
    data = str(REAL_DATA) if REAL_DATA.is_file() else "synthetic:500"
    print(f"training {MODEL} on {data} into {root} ...", flush=True)
    proc = subprocess.run([sys.executable, "-m", "training_job", "train", "--data", data,
                           "--store", str(root), "--model", MODEL, "--family", "rf", "--quick"],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"training failed:\n{proc.stderr[-3000:]}")
    return root


def status(server: Server) -> dict:
    with urllib.request.urlopen(server.url("/status"), timeout=5) as resp:
        return json.loads(resp.read())


def mirrored(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(server.url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    counts = {"sent": 0.0, "dropped": 0.0, "failed": 0.0}
    for line in text.splitlines():
        if line.startswith(MIRROR_REQUESTS_METRIC + "_total{"):
            for outcome in counts:
                if f'outcome="{outcome}"' in line:
                    counts[outcome] += float(line.rsplit(" ", 1)[1])
    return counts


def settled(stable: Server, before: dict, expected: int, timeout: float = 30.0) -> dict:
    """The copy counts once every copy of the round has its outcome (a slow shadow is still
    answering the last ones when the callers are done), or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        after = mirrored(stable)
        if sum(after.values()) - sum(before.values()) >= expected or time.monotonic() > deadline:
            return after
        time.sleep(0.2)


def set_percent(stable: Server, config: Path, url: str, percent: int) -> None:
    config.write_text(json.dumps({"url": url, "percent": percent}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if status(stable)["mirror"]["percent"] == percent:
            return
        time.sleep(0.2)
    raise BenchError(f"the stable did not pick up percent {percent} within 15 s")


def drive(server: Server, body: bytes, seconds: float, rate: float, connections: int) -> dict:
    """`connections` threads, each a kept-alive connection sending at rate / connections."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = time.monotonic() + 0.05
    stop = start + seconds

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=10)
        step = connections / rate
        at = start + i * step / connections
        while True:
            now = time.monotonic()
            if at > now:
                time.sleep(at - now)
            if at >= stop:
                break
            began = time.perf_counter()
            try:
                conn.request("POST", f"/v1/models/{MODEL}:predict", body=body,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[i] += 1
            except OSError:
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=10)
            latencies[i].append(time.perf_counter() - began)
            at += step
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    return {"requests": int(flat.size), "p50": float(np.percentile(flat, 50)),
            "p99": float(np.percentile(flat, 99)), "errors": sum(errors)}


class Stub:
    def __init__(self, work: Path, cpu: str | None):
        self.http = free_port()
        cmd = [sys.executable, "-c", STUB, str(self.http)]
        self.proc = subprocess.Popen(["taskset", "-c", cpu, *cmd] if cpu else cmd,
                                     stdout=open(work / "stub.log", "wb"), stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.http), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError("the stub shadow did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bench(args, store: Path, work: Path) -> dict:
    found = versions(store)
    stable_dir, shadow_dir = found[0], found[-1]
    rows = np.asarray(json.loads((stable_dir / "golden.json").read_text())["instances"])
    body = json.dumps({"instances": np.resize(rows, (args.rows, rows.shape[1])).tolist()}).encode()
    config = work / "mirror.json"
    py = [sys.executable, "-m", "model_server", "--model_name", MODEL]
    stable_cpu, other_cpu = ("0", "1") if args.pin else (None, None)
    shadow = Server("shadow", [*py, "--model_dir", str(shadow_dir)], work, other_cpu) \
        if args.shadow == "server" else Stub(work, other_cpu)
    stable = Server("stable", [*py, "--model_dir", str(stable_dir), "--mirror_config", str(config)],
                    work, stable_cpu)
    servers = (shadow, stable)
    try:
        for server in servers:
            server.wait_ready()
        shadow_url = f"http://127.0.0.1:{shadow.http}"
        set_percent(stable, config, shadow_url, 100)
        drive(stable, body, 2, args.rate, args.connections)  # warm-up, both paths
        sides = {side: {"p50": [], "p99": [], "cpu_us": [], "requests": 0, "errors": 0,
                        "sent": 0.0, "dropped": 0.0, "failed": 0.0} for side in ("off", "on")}
        sides["load"] = [os.getloadavg()[0]]
        for i in range(args.rounds):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            for side in order:
                set_percent(stable, config, shadow_url, 100 if side == "on" else 0)
                copies = mirrored(stable)
                cpu = stable.cpu_seconds()
                res = drive(stable, body, args.seconds, args.rate, args.connections)
                used = stable.cpu_seconds() - cpu
                after = settled(stable, copies, res["requests"] if side == "on" else 0)
                s = sides[side]
                s["p50"].append(res["p50"])
                s["p99"].append(res["p99"])
                s["cpu_us"].append(used / max(res["requests"], 1) * 1e6)
                s["requests"] += res["requests"]
                s["errors"] += res["errors"]
                for outcome in ("sent", "dropped", "failed"):
                    s[outcome] += after[outcome] - copies[outcome]
                sides["load"].append(os.getloadavg()[0])
                print(f"  round {i + 1} {side:>3}: {res['requests']} requests, p50 "
                      f"{res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
                      f"{s['cpu_us'][-1]:.0f} us CPU a request", flush=True)
        return sides
    finally:
        for server in servers:
            server.stop()


def report(sides: dict, args) -> bool:
    print(f"\n{args.rows}-row V1 requests at {args.rate:g} req/s from {args.connections} "
          f"connections, shadow: {args.shadow}, {args.rounds} pairs of {args.seconds:g} s a side "
          "(medians, range over the pairs; on / off: median of the per-pair ratios)")
    print(f"{'':26} {'mirroring off':>22} {'mirroring 100 %':>22} {'on / off':>9}")
    ratios = {}
    for field, unit in (("p50", "ms"), ("p99", "ms"), ("cpu_us", "us")):
        off, on = np.asarray(sides["off"][field]), np.asarray(sides["on"][field])
        ratios[field] = float(np.median(on / off))
        fmt = (lambda v: f"{v:.2f}") if unit == "ms" else (lambda v: f"{v:.0f}")
        label = {"p50": "caller p50", "p99": "caller p99", "cpu_us": "stable CPU / request"}[field]
        print(f"{label + ' (' + unit + ')':26} "
              f"{fmt(np.median(off)) + ' (' + fmt(off.min()) + '-' + fmt(off.max()) + ')':>22} "
              f"{fmt(np.median(on)) + ' (' + fmt(on.min()) + '-' + fmt(on.max()) + ')':>22} "
              f"{100 * ratios[field]:>8.1f}%")
    for side in ("off", "on"):
        s = sides[side]
        print(f"{side:>3}: {s['requests']} requests, {s['errors']} caller errors; copies sent "
              f"{s['sent']:.0f}, dropped {s['dropped']:.0f}, failed {s['failed']:.0f}")
    errors = sides["on"]["errors"] - sides["off"]["errors"]
    met = ratios["cpu_us"] <= 1 + GOAL and errors == 0 and sides["on"]["errors"] == 0
    print(f"errors added by mirroring: {errors}")
    print(f"goal (CPU per request within {100 * GOAL:.0f} %, no errors): "
          f"{'met' if met else 'NOT met'}; p50 {100 * (ratios['p50'] - 1):+.1f} %, "
          f"p99 {100 * (ratios['p99'] - 1):+.1f} %")
    print("\n" + markdown_row(sides, ratios, args))
    return met


def markdown_row(sides: dict, ratios: dict, args) -> str:
    """This run as a row of the table in docs/components/model-server.md."""
    off, on = sides["off"], sides["on"]
    med = {side: {f: float(np.median(sides[side][f])) for f in ("p50", "p99", "cpu_us")} for side in ("off", "on")}
    load = sides["load"]
    return (f"| {'stub (answers at once)' if args.shadow == 'stub' else 'real model server'}, "
            f"{args.rounds}, {min(load):.0f}-{max(load):.0f} | "
            f"{med['off']['cpu_us']:,.0f} / {med['on']['cpu_us']:,.0f} us (**{100 * ratios['cpu_us']:.1f} %**) | "
            f"{med['off']['p50']:.1f} / {med['on']['p50']:.1f} ms ({min(off['p50']):.1f}-{max(off['p50']):.1f}) | "
            f"{med['off']['p99']:.0f} / {med['on']['p99']:.0f} ms | {off['errors']} / {on['errors']} | "
            f"{on['sent']:,.0f} / {on['dropped']:,.0f} / {on['failed']:,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--shadow", choices=("stub", "server"), default="stub")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="don-mirror-bench-") as tmp:
            work = Path(tmp)
            store = args.store or train(work / "store")
            sides = bench(args, store, work)
    except BenchError as exc:
        print(f"benchmarks/mirror.py: error: {exc}", file=sys.stderr)
        return 2
    return 0 if report(sides, args) else 1


if __name__ == "__main__":
    sys.exit(main())
