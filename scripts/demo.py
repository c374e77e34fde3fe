"""`make demo`: the whole system on one machine, no cluster. Trains both model families on the
embedded synthetic data into a local model store, serves each version with the model server, and
calls both over KServe V1 and V2: on the default synthetic data with fresh spectra the models
never saw, on other data with rows of the model's reference set (no version is fitted on them).
The servers record every prediction to a prediction recorder: by default one the demo starts on
SQLite beside the store (`<store>.recorder.db`), or the one named by --records_url.

The web console (console/) starts as soon as the first model has answered, on
http://127.0.0.1:8501 (--console_port), next to the model servers.

  python -m scripts.demo [--store DIR] [--data SRC] [--port N] [--full] [--once]
                         [--records_url URL | --no-recorder] [--console_port N | --no-console]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from don_core.contract import INPUT_NAME, REQUESTS_METRIC, V1_SAMPLE_IDS, VERSION_HEADER
from don_core.store import open_store
from training_job import synthetic

MODELS = (("don-rf", "rf"), ("don-tf", "tf"))
TYPICAL_TRAINING = {"rf": "about 30 s", "tf": "about 2 minutes"}  # --quick, this 2-core machine
UNSEEN_SEED = 2026  # training uses synthetic seed 0; this seed's spectra are new to the models


def example_rows(data: str, version_dir: Path) -> tuple[list, list, str]:
    """Three spectra to call the models with, their true ppb, and what they are."""
    if synthetic.is_source(data):
        fresh = synthetic.generate(60, seed=UNSEEN_SEED)
        order = np.argsort(fresh.y)
        picks = order[[len(order) // 4, len(order) // 2, len(order) - 3]]  # low, middle, high
        return (fresh.X[picks].tolist(), fresh.y[picks].tolist(),
                "three fresh synthetic spectra the model never saw")
    model_dir = version_dir.parent
    held = open_store(str(model_dir.parent)).read_reference(model_dir.name)
    return (held["instances"][:3], held["targets_ppb"][:3],
            "three rows of the model's reference set (no version was fitted on them)")


def post(url: str, body: dict) -> tuple[dict, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), response.headers.get(VERSION_HEADER, "?")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180, what: str = "model server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


def call(model: str, port: int, data: str, version_dir: Path) -> None:
    """Calls one served model over V1 and V2 with the same rows and prints both answers."""
    rows, truth, what = example_rows(data, version_dir)
    v1, v1_version = post(f"http://127.0.0.1:{port}/v1/models/{model}:predict",
                          {"instances": rows,
                           V1_SAMPLE_IDS: [f"demo-{model}-{i}" for i in range(len(rows))]})
    v2, _ = post(f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                 {"inputs": [{"name": INPUT_NAME, "shape": [len(rows), len(rows[0])],
                              "datatype": "FP32", "data": rows}]})
    print(f"\n{model} version {v1_version} (V1 and V2), {what}:")
    for t, p1, p2 in zip(truth, v1["predictions"], v2["outputs"][0]["data"]):
        print(f"  true {t:>9.0f} ppb   V1 {p1:>9.0f} ppb   V2 {p2:>9.0f} ppb", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=".demo-store", help="local model store directory")
    parser.add_argument("--data", default="synthetic",
                        help="training data: synthetic (default), a CSV path or s3://bucket/key")
    parser.add_argument("--port", type=int, default=8080,
                        help="serve don-rf on PORT and don-tf on PORT+1 (default 8080)")
    parser.add_argument("--full", action="store_true",
                        help="full 5x5 repeated CV (slower) instead of the quick 3-fold check")
    parser.add_argument("--once", action="store_true",
                        help="exit after the example calls instead of serving until Ctrl-C")
    parser.add_argument("--records_url", default=os.environ.get("DON_RECORDS_URL") or None,
                        help="send prediction records to this recorder instead of starting one")
    parser.add_argument("--no-recorder", dest="recorder", action="store_false",
                        help="record nothing")
    parser.add_argument("--console_port", type=int, default=8501,
                        help="serve the web console on this port (default 8501)")
    parser.add_argument("--no-console", dest="console", action="store_false",
                        help="do not start the web console")
    args = parser.parse_args()
    store = Path(args.store).resolve()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    ports = {model: args.port + i for i, (model, _) in enumerate(MODELS)}
    servers = []
    recorder_db = None
    try:
        records_url = args.records_url
        if args.recorder and records_url is None:
            recorder_db = store.parent / f"{store.name}.recorder.db"
            records_url = start_recorder(recorder_db, env, servers)
        record_args = ["--records_url", records_url] if args.recorder and records_url else []
        # Each model is trained, served and called before the next one trains, so the forest
        # (about 30 s) answers while the network (a few minutes) is still to come.
        for step, (model, family) in enumerate(MODELS, start=1):
            print(f"\n=== [{step}/{len(MODELS)}] training {model} ({family}) on {args.data}, "
                  f"usually {TYPICAL_TRAINING[family]} on 2 cores ===", flush=True)
            cmd = [sys.executable, "-m", "training_job", "train", "--data", args.data, "--store",
                   str(store), "--model", model, "--family", family]
            out = subprocess.run(cmd + ([] if args.full else ["--quick"]), env=env, text=True,
                                 stdout=subprocess.PIPE, check=False)
            print(out.stdout, end="")
            if out.returncode:
                return out.returncode
            version_dir = Path(out.stdout.strip().splitlines()[-1])
            port = ports[model]
            print(f"\n=== serving {version_dir} on http://127.0.0.1:{port} ===", flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "model_server", "--model_name", model,
                                     "--model_dir", str(version_dir), "--http_port", str(port),
                                     "--enable_grpc", "false", "--log_level", "WARNING",
                                     *record_args], env=env)
            servers.append(proc)
            wait_ready(f"http://127.0.0.1:{port}/v2/models/{model}/ready", proc)
            call(model, port, args.data, version_dir)
            if step == 1 and args.console:
                # after the first answer, so it never delays it; ready long before the network is
                console, console_proc = start_console(store, ports, records_url, args.console_port,
                                                      env, servers)

        if recorder_db is not None:
            print(f"\n{stored_records(recorder_db, 6)} prediction records stored in {recorder_db} "
                  f"(recorder at {records_url}):\n  sqlite3 {recorder_db} 'select time, model, "
                  "version, sample_id, predicted_ppb, out_of_distribution from predictions'")
        elif records_url:
            print(f"\nprediction records sent to {records_url}")
        if args.console:
            wait_ready(f"{console}/_stcore/health", console_proc, timeout=120, what="web console")
            print(f"\nWeb console: {console}  (Predict, Models, Rollouts, Monitoring)", flush=True)
        rf_port = ports["don-rf"]
        print(f"\nTry it yourself (in another shell, from {Path.cwd()}):"
              f"\n  . .venv/bin/activate     # puts the project's python first on PATH"
              f"\n  curl -s http://127.0.0.1:{rf_port}/v2/models/don-rf | python -m json.tool"
              f"\n  curl -s http://127.0.0.1:{rf_port}/metrics | grep {REQUESTS_METRIC}_total"
              f"\n  python -m training_job versions --store {store} --model don-rf")
        if not args.once:
            print("\nServing until Ctrl-C ...", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                while all(proc.poll() is None for proc in servers):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_recorder(db: Path, env: dict, processes: list) -> str:
    """The prediction recorder (ops/recorder) on SQLite and a free loopback port; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    print(f"\n=== prediction recorder on http://127.0.0.1:{port} (SQLite {db}) ===", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "ops", "recorder", "serve", "--db",
                             f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port),
                             "--no-auth"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    processes.append(proc)
    wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return f"http://127.0.0.1:{port}/"


def start_console(store: Path, ports: dict, records_url: str | None, port: int, env: dict,
                  processes: list) -> tuple[str, subprocess.Popen]:
    """`python -m console` on loopback for the demo's servers, store and recorder: URL, process."""
    servers = [arg for model, p in ports.items() for arg in ("--server", f"{model}=http://127.0.0.1:{p}")]
    recorder = ["--recorder", records_url] if records_url else []
    print(f"\n=== web console starting on http://127.0.0.1:{port} ===", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "console", "--store", str(store), *servers,
                             *recorder, "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(proc)
    return f"http://127.0.0.1:{port}", proc


def stored_records(db: Path, expected: int, timeout: float = 30.0) -> int:
    """Rows in the recorder's predictions table once `expected` arrived (servers send within
    about a second) or the time is up."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            count = conn.execute("select count(*) from predictions").fetchone()[0]
        if count >= expected:
            break
        time.sleep(0.3)
    return count


if __name__ == "__main__":
    sys.exit(main())
