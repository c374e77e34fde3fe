"""Serving images: size, start-to-ready, RSS and throughput (issue 18), printed beside the floors.

Per image (docker tags when the images are built here; otherwise the venvs given as
--lean-python/--full-python, which must hold exactly each image's packages, and the script says
which it measured): unpacked and compressed size and the largest packages, marked when the server
imports them. Per family (RandomForest, TensorFlow) and variant (lean: --native_fallback off, full:
on): start-to-ready (median of --starts starts, from process start to /v2/health/ready == 200),
the load phases the server reports in /status, RSS after 1,000 requests, single-row and 100-row
req/s (wrk). Beside them, measured in the same run: the framework floor (`python -c "import kserve,
onnxruntime"` in the same venv) and KServe's own sklearnserver on the same RandomForest artifact
when it is installed (else the plain kserve.Model of benchmarks/baseline_server.py).

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
# What the server process imports before it serves (the lean image's build step checks the same).
SERVER_IMPORTS = "import model_server.__main__, model_server.routes, model_server.model"
IMAGES = {"lean serving": "don-predictor/model-server", "full serving": "don-predictor/model-server:full",
          "training": "don-predictor/training-job", "operator": "don-predictor/operator"}


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


def venv_report(python: str) -> dict:
    out = subprocess.run([python, "-c", PACKAGES, SERVER_IMPORTS], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["unpacked"], info["compressed"] = dir_sizes(Path(info["prefix"]))
    return info


def docker_sizes(tag: str) -> tuple[int, int] | None:
    """(unpacked, compressed) of a local image, or None when docker or the image is absent."""
    try:
        inspect = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inspect.returncode != 0:
        return None
    counter = _Counter()
    with subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE) as save, \
            gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz:
        for chunk in iter(lambda: save.stdout.read(1 << 20), b""):
            gz.write(chunk)
    return int(inspect.stdout.strip()), counter.n


def floor_seconds(python: str, starts: int) -> float:
    times = []
    for _ in range(starts):
        t = time.perf_counter()
        subprocess.run([python, "-c", FLOOR], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return median(times)


def rss(pid: int) -> int:
    """RSS of a process and its children (KServe's worker processes)."""
    total = parse_rss_kb(Path(f"/proc/{pid}/status").read_text())
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += rss(int(child))
    return total


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def measure(label: str, argv: list[str], predict_path: str, bodies: dict, work: Path, starts: int,
            wrk: str, seconds: float) -> dict:
    times, phases = [], []
    for _ in range(starts):
        started = time.perf_counter()
        server = Server(label, argv, work, None)
        try:
            server.wait_ready()
            times.append(time.perf_counter() - started)
            try:
                with urllib.request.urlopen(server.url("/status"), timeout=5) as resp:
                    phases.append(json.loads(resp.read()).get("load_phases") or {})
            except OSError:
                pass  # the comparison servers have no /status
        finally:
            server.stop()
    server = Server(label, argv, work, None)
    try:
        server.wait_ready()
        one = bodies[1].read_bytes()
        for _ in range(1000):
            post(server.url(predict_path), one)
        result = {"start": median(times), "rss": rss(server.proc.pid)}
        for n in (1, 100):
            result[f"rps_{n}"] = run_wrk(wrk, server.url(predict_path), bodies[n], 1, seconds, None)["rps"]
    finally:
        server.stop()
    if phases and all(phases):
        result["phases"] = {k: median([p[k] for p in phases]) for k in phases[0]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lean-python", default=sys.executable)
    parser.add_argument("--full-python", default=sys.executable)
    parser.add_argument("--store", type=Path, help="a model store with don-rf and don-tf (else trained)")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-sizes", action="store_true")
    args = parser.parse_args()
    wrk = find_wrk()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, {stamp}")

    if not args.skip_sizes:
        for name, tag in IMAGES.items():
            sizes = docker_sizes(tag)
            print(f"image {name:13} {tag}: " + (f"{mb(sizes[0])} unpacked, {mb(sizes[1])} compressed"
                                              if sizes else "not built here"))
        for name, python in (("lean", args.lean_python), ("full", args.full_python)):
            info = venv_report(python)
            print(f"venv {name} ({info['prefix']}): {mb(info['unpacked'])} unpacked, "
                  f"{mb(info['compressed'])} compressed; largest packages (* = the server imports it):")
            for dist, size, used in largest(info["sizes"], set(info["imported"])):
                print(f"    {'*' if used else ' '} {dist:28} {mb(size):>10}")

    with tempfile.TemporaryDirectory(prefix="don-images-") as tmp:
        work = Path(tmp)
        store = args.store or train_store(work / "store")
        rf_dir = latest_version(store, "don-rf")
        for name, python in (("lean", args.lean_python), ("full", args.full_python)):
            print(f"floor {name}: `{FLOOR}` {floor_seconds(python, args.starts):.2f} s (median of {args.starts})")
        for model in ("don-rf", "don-tf"):
            version = latest_version(store, model)
            bodies = payloads(version, work)
            path = f"/v1/models/{model}:predict"
            runs = {f"{variant}": ([python, "-m", "model_server", "--model_dir", str(version),
                                    "--model_name", model, "--native_fallback", fallback])
                    for variant, python, fallback in (("lean", args.lean_python, "off"),
                                                      ("full", args.full_python, "on"))}
            if model == "don-rf":
                has_sklearnserver = subprocess.run(
                    [args.full_python, "-c", "import sklearnserver"], capture_output=True).returncode == 0
                runs["kserve sklearnserver" if has_sklearnserver else "kserve plain Model"] = (
                    [args.full_python, "-m", "sklearnserver", "--model_dir", str(rf_dir),
                     "--model_name", model] if has_sklearnserver else
                    [args.full_python, str(REPO / "benchmarks" / "baseline_server.py"), "--mode",
                     "plain", "--model_dir", str(rf_dir), "--model_name", model])
            for label, argv in runs.items():
                try:
                    res = measure(f"{model} {label}", argv, path, bodies, work, args.starts, wrk,
                                  args.seconds)
                except BenchError as exc:
                    print(f"{model} {label}: failed: {exc}")
                    continue
                phases = " ".join(f"{k} {v:.3f}" for k, v in res.get("phases", {}).items())
                print(f"{model} {label:22} start-to-ready {res['start']:.2f} s, RSS after 1,000 "
                      f"requests {mb(res['rss'])}, 1 row {res['rps_1']:.0f} req/s, 100 rows "
                      f"{res['rps_100']:.0f} req/s" + (f"; load phases (s): {phases}" if phases else ""))
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
