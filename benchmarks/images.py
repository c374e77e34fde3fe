"""Serving images: size, start-to-ready, RSS and throughput (issue 18), printed beside the floors.

Where the servers run (--runtime): `docker` runs them in the serving images built here
(tests/cluster/images.py; `docker run --network host --read-only`, the version mounted at
/mnt/models); `venv` in the venvs given as --lean-python/--full-python, which must hold exactly each
image's packages; `auto` (the default): the images when both are built, else the venvs. The script
says which it measured. Per image: unpacked and compressed size and the largest packages, marked
when the server imports them. Per family (RandomForest, TensorFlow) and variant (lean:
--native_fallback off, full: on): start-to-ready (median of --starts starts, from process start to
/v2/health/ready == 200, polled every 20 ms), the load phases the server reports in /status, RSS
after 1,000 requests, single-row and 100-row req/s (wrk, one connection) with the server's CPU time per
request (which the load does not move). Beside them: the framework floor (`python
-c "import kserve, onnxruntime"` in the same image or venv, started the same way), measured
interleaved with the server's starts (floor, server, server, floor, ...) so that both see the same
load, timed until its imports are done (not its exit: `docker run --rm` would add the container's
removal); the CPU seconds each took (process start to ready, resp. to the end of the imports), which a
shared machine's load does not stretch; and KServe's own sklearnserver on the same RandomForest
artifact when it is installed (else the plain kserve.Model of benchmarks/baseline_server.py).

Run it niced on a shared machine: `nice -n 10 .venv/bin/python benchmarks/images.py`. A script,
not a timed test: the load average is printed beside the figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # benchmarks/serve.py, also when imported
from serve import (REPO, BenchError, Server, find_wrk, latest_version, payloads,  # noqa: E402
                   run_wrk, train_store)

FLOOR = "import kserve, onnxruntime"
# The floor's own CPU seconds, printed once the imports are done; the line's arrival ends its time.
FLOOR_CPU = "; import os; t = os.times(); print(t.user + t.system, flush=True)"
# What the server process imports before it serves (the lean image's build step checks the same).
SERVER_IMPORTS = "import onnxruntime, model_server.__main__, model_server.routes, model_server.model"
sys.path.insert(0, str(REPO))
from tests.cluster import images as built  # noqa: E402  (the tags `make images` builds)

IMAGES = {"lean serving": built.SERVING.ref, "full serving": built.SERVING_FULL.ref,
          "training": built.TRAINING.ref, "operator": built.OPERATOR.ref,
          "console": built.CONSOLE.ref}
POLL_SECONDS = 0.02  # readiness polling; the floor's end is exact, so keep the bias small


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def parse_rss_kb(proc_status: str) -> int:
    """VmRSS of a /proc/PID/status text, in bytes."""
    for line in proc_status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS line")


def largest(sizes: dict[str, int], imported: set[str], n: int = 12) -> list[tuple[str, int, bool]]:
    """The n largest distributions, each with whether the server imports it."""
    top = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(name, size, name.lower() in imported) for name, size in top]


class _Counter:
    def __init__(self):
        self.n = 0

    def write(self, data):
        self.n += len(data)
        return len(data)

    def flush(self):
        pass


def dir_sizes(root: Path) -> tuple[int, int]:
    """(unpacked bytes, gzip-compressed tar bytes) of a directory tree."""
    counter = _Counter()
    unpacked = 0
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                unpacked += path.stat().st_size
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return unpacked, counter.n


PACKAGES = """
import importlib.metadata as md, json, sys
sizes, tops = {}, {}
for d in md.distributions():
    name = d.metadata["Name"].lower()
    total = 0
    for f in d.files or []:
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    sizes[name] = sizes.get(name, 0) + total
for top, dists in md.packages_distributions().items():
    for dist in dists:
        tops.setdefault(top, []).append(dist.lower())
exec(sys.argv[1])
loaded = {m.split(".")[0] for m in list(sys.modules)}
imported = sorted({d for t in loaded for d in tops.get(t, [])})
print(json.dumps({"sizes": sizes, "imported": imported, "prefix": sys.prefix}))
"""


class Venv:
    """Servers run by a virtualenv's python here (the repository on PYTHONPATH)."""

    def __init__(self, name: str, python: str):
        self.name, self.python = name, python
        self.where = f"venv {python}"

    def python_argv(self, *args: str) -> list[str]:
        return [self.python, *args]

    def server_argv(self, model: str, version: Path, fallback: str) -> list[str]:
        return [self.python, "-m", "model_server", "--model_dir", str(version), "--model_name", model,
                "--native_fallback", fallback]

    def pid(self, server: Server) -> int:
        return server.proc.pid

    def stopped(self, server: Server) -> None:
        pass


class Image:
    """Servers run in a serving image (`docker run`; ports on the host network)."""

    def __init__(self, name: str, ref: str):
        self.name, self.ref = name, ref
        self.where = f"image {ref}"
        self._runs = 0

    def python_argv(self, *args: str) -> list[str]:
        # started like the servers (a network namespace of its own would cost it 0.1-0.2 s more)
        return [built.DOCKER, "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
                "--entrypoint", "python", self.ref, *args]

    def server_argv(self, model: str, version: Path, fallback: str) -> list[str]:
        self._runs += 1
        name = f"don-bench-{os.getpid()}-{self.name}-{self._runs}"
        return [built.DOCKER, "run", "--rm", "--name", name, "--network", "host", "--read-only",
                "--tmpfs", "/tmp", "-v", f"{version}:/mnt/models:ro", self.ref,
                "--model_dir", "/mnt/models", "--model_name", model, "--native_fallback", fallback]

    @staticmethod
    def _name(server: Server) -> str:
        argv = server.proc.args
        return argv[argv.index("--name") + 1]

    def pid(self, server: Server) -> int:
        out = subprocess.run([built.DOCKER, "inspect", "--format", "{{.State.Pid}}",
                              self._name(server)], capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip())

    def stopped(self, server: Server) -> None:
        subprocess.run([built.DOCKER, "rm", "--force", self._name(server)], capture_output=True,
                       timeout=60)


def venv_report(runtime) -> dict:
    out = subprocess.run(runtime.python_argv("-c", PACKAGES, SERVER_IMPORTS), cwd=REPO,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if isinstance(runtime, Venv):
        info["unpacked"], info["compressed"] = dir_sizes(Path(info["prefix"]))
    return info


def image_built(tag: str) -> bool:
    try:
        return subprocess.run([built.DOCKER, "image", "inspect", tag], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_sizes(tag: str) -> tuple[int, int] | None:
    """(unpacked, compressed) of a local image, or None when docker or the image is absent."""
    try:
        inspect = subprocess.run([built.DOCKER, "image", "inspect", "--format", "{{.Size}}", tag],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inspect.returncode != 0:
        return None
    counter = _Counter()
    with subprocess.Popen([built.DOCKER, "save", tag], stdout=subprocess.PIPE) as save, \
            gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz:
        for chunk in iter(lambda: save.stdout.read(1 << 20), b""):
            gz.write(chunk)
    return int(inspect.stdout.strip()), counter.n


def floor_once(runtime) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -c "import kserve, onnxruntime"`, both until the
    imports are done: a server pays no interpreter (or container) teardown before it is ready."""
    started = time.perf_counter()
    with subprocess.Popen(runtime.python_argv("-c", FLOOR + FLOOR_CPU), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        line = proc.stdout.readline()
        wall = time.perf_counter() - started
        proc.communicate()
    if proc.returncode != 0 or not line.strip():
        raise BenchError(f"the floor failed in {runtime.where} (exit {proc.returncode})")
    return wall, float(line)


def rss(pid: int) -> int:
    """RSS of a process and its children (KServe's worker processes)."""
    total = parse_rss_kb(Path(f"/proc/{pid}/status").read_text())
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += rss(int(child))
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += cpu_seconds(int(child))
    return total


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def start(runtime, label: str, argv: list[str], work: Path) -> Server:
    server = Server(label, argv, work, None)
    try:
        server.wait_ready(poll=POLL_SECONDS)
    except BaseException:
        stop(runtime, server)
        raise
    return server


def stop(runtime, server: Server) -> None:
    server.stop()
    runtime.stopped(server)


def measure(runtime, label: str, argv_of, predict_path: str, bodies: dict, work: Path, starts: int,
            wrk: str, seconds: float) -> dict:
    """Start-to-ready (with the floor's starts interleaved), RSS and req/s of one server."""
    times, cpus, floors, floor_cpus, phases = [], [], [], [], []
    for i in range(starts):
        if i % 2 == 0:  # floor, server, server, floor, ...: each sees the load the other does
            wall, cpu = floor_once(runtime)
            floors.append(wall)
            floor_cpus.append(cpu)
        started = time.perf_counter()
        server = start(runtime, label, argv_of(), work)
        try:
            times.append(time.perf_counter() - started)
            cpus.append(cpu_seconds(runtime.pid(server)))
            try:
                with urllib.request.urlopen(server.url("/status"), timeout=5) as resp:
                    phases.append(json.loads(resp.read()).get("load_phases") or {})
            except OSError:
                pass  # the comparison servers have no /status
        finally:
            stop(runtime, server)
        if i % 2 == 1:
            wall, cpu = floor_once(runtime)
            floors.append(wall)
            floor_cpus.append(cpu)
    server = start(runtime, label, argv_of(), work)
    try:
        one = bodies[1].read_bytes()
        for _ in range(1000):
            post(server.url(predict_path), one)
        result = {"start": median(times), "cpu": median(cpus), "floor": median(floors),
                  "floor_cpu": median(floor_cpus), "rss": rss(runtime.pid(server))}
        pid = runtime.pid(server)
        for n in (1, 100):
            before = cpu_seconds(pid)
            res = run_wrk(wrk, server.url(predict_path), bodies[n], 1, seconds, None)
            result[f"rps_{n}"] = res["rps"]
            # what a request costs the server: unlike req/s, not moved by the machine's load
            result[f"cpu_us_{n}"] = 1e6 * (cpu_seconds(pid) - before) / max(res["requests"], 1)
    finally:
        stop(runtime, server)
    if phases and all(phases):
        result["phases"] = {k: median([p[k] for p in phases]) for k in phases[0]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=("auto", "docker", "venv"), default="auto")
    parser.add_argument("--lean-python", default=sys.executable)
    parser.add_argument("--full-python", default=sys.executable)
    parser.add_argument("--store", type=Path, help="a model store with don-rf and don-tf (else trained)")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--models", default="don-rf,don-tf")
    parser.add_argument("--variants", default="lean,full")
    args = parser.parse_args()
    wrk = find_wrk()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, {stamp}")
    os.environ.update({k: v for k, v in built.docker_env().items() if k == "DOCKER_HOST"})
    lean_ref, full_ref = IMAGES["lean serving"], IMAGES["full serving"]
    runtime = args.runtime
    if runtime == "auto":
        runtime = "docker" if image_built(lean_ref) and image_built(full_ref) else "venv"
    if runtime == "docker":
        for ref in (lean_ref, full_ref):
            if not image_built(ref):
                print(f"{ref} is not built here (make images; the full one: "
                      "python -m tests.cluster.images model-server-full)", file=sys.stderr)
                return 2
        runtimes = {"lean": Image("lean", lean_ref), "full": Image("full", full_ref)}
    else:
        runtimes = {"lean": Venv("lean", args.lean_python), "full": Venv("full", args.full_python)}
    variants = [v for v in ("lean", "full") if v in args.variants.split(",")]
    print("servers run in: " + "; ".join(f"{v}: {runtimes[v].where}" for v in variants))

    if not args.skip_sizes:
        for name, tag in IMAGES.items():
            sizes = docker_sizes(tag)
            print(f"image {name:13} {tag}: " + (f"{mb(sizes[0])} unpacked, {mb(sizes[1])} compressed"
                                              if sizes else "not built here"))
        for name in variants:
            info = venv_report(runtimes[name])
            where = (f"{mb(info['unpacked'])} unpacked, {mb(info['compressed'])} compressed"
                     if "unpacked" in info else "image above")
            print(f"{name} ({runtimes[name].where}, {info['prefix']}): {where}; largest packages "
                  "(* = the server imports it):")
            for dist, size, used in largest(info["sizes"], set(info["imported"])):
                print(f"    {'*' if used else ' '} {dist:28} {mb(size):>10}")

    with tempfile.TemporaryDirectory(prefix="don-images-") as tmp:
        work = Path(tmp)
        store = args.store or train_store(work / "store")
        rf_dir = latest_version(store, "don-rf")
        host = Venv("host", args.full_python)
        for model in filter(None, args.models.split(",")):
            version = latest_version(store, model)
            bodies = payloads(version, work)
            path = f"/v1/models/{model}:predict"
            runs = {variant: (runtimes[variant],
                              lambda r=runtimes[variant], fb=fallback, m=model, v=version: r.server_argv(m, v, fb))
                    for variant, fallback in (("lean", "off"), ("full", "on")) if variant in variants}
            if model == "don-rf":
                has_sklearnserver = subprocess.run(
                    [args.full_python, "-c", "import sklearnserver"], capture_output=True).returncode == 0
                argv = ([args.full_python, "-m", "sklearnserver", "--model_dir", str(rf_dir),
                         "--model_name", model] if has_sklearnserver else
                        [args.full_python, str(REPO / "benchmarks" / "baseline_server.py"), "--mode",
                         "plain", "--model_dir", str(rf_dir), "--model_name", model])
                label = "kserve sklearnserver" if has_sklearnserver else "kserve plain Model"
                runs[f"{label} (host venv)"] = (host, lambda a=argv: a)
            for label, (runtime_of, argv_of) in runs.items():
                try:
                    res = measure(runtime_of, f"{model} {label}", argv_of, path, bodies, work,
                                  args.starts, wrk, args.seconds)
                except BenchError as exc:
                    print(f"{model} {label}: failed: {exc}")
                    continue
                phases = " ".join(f"{k} {v:.3f}" for k, v in res.get("phases", {}).items())
                print(f"{model} {label:22} start-to-ready {res['start']:.2f} s (floor {res['floor']:.2f} "
                      f"s: {res['start'] - res['floor']:+.2f} s; CPU {res['cpu']:.2f} s vs floor "
                      f"{res['floor_cpu']:.2f} s: {res['cpu'] - res['floor_cpu']:+.2f} s), RSS after "
                      f"1,000 requests {mb(res['rss'])}, 1 row {res['rps_1']:.0f} req/s "
                      f"({res['cpu_us_1']:.0f} us CPU each), 100 rows {res['rps_100']:.0f} req/s "
                      f"({res['cpu_us_100']:.0f} us CPU each)" + (f"; load phases (s): {phases}" if phases else ""),
                      flush=True)
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
