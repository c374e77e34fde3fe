"""`make demo`: the whole system on one machine, no cluster. Trains both model families on the
embedded synthetic data into a local model store, serves each version with the model server, and
calls both over KServe V1 and V2 with held-out spectra.

  python -m scripts.demo [--store DIR] [--data SRC] [--full] [--once]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from don_core.artifact import read_golden

MODELS = (("don-rf", "rf", 8080), ("don-tf", "tf", 8090))


def post(url: str, body: dict) -> tuple[dict, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), response.headers.get("X-Model-Version", "?")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"model server exited with {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=".demo-store", help="local model store directory")
    parser.add_argument("--data", default="synthetic",
                        help="training data: synthetic (default), a CSV path or s3://bucket/key")
    parser.add_argument("--full", action="store_true",
                        help="full 5x5 repeated CV (slower) instead of the quick 3-fold check")
    parser.add_argument("--once", action="store_true",
                        help="exit after the example calls instead of serving until Ctrl-C")
    args = parser.parse_args()
    store = Path(args.store).resolve()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    versions = {}
    for model, family, _ in MODELS:
        print(f"\n=== training {model} ({family}) on {args.data} ===", flush=True)
        cmd = [sys.executable, "-m", "training_job", "train", "--data", args.data, "--store",
               str(store), "--model", model, "--family", family]
        out = subprocess.run(cmd + ([] if args.full else ["--quick"]), env=env, text=True,
                             stdout=subprocess.PIPE, check=False)
        print(out.stdout, end="")
        if out.returncode:
            return out.returncode
        versions[model] = Path(out.stdout.strip().splitlines()[-1])

    servers = []
    try:
        for model, _, port in MODELS:
            print(f"\n=== serving {versions[model]} on http://127.0.0.1:{port} ===", flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "model_server", "--model_name", model,
                                     "--model_dir", str(versions[model]), "--http_port", str(port),
                                     "--enable_grpc", "false", "--log_level", "WARNING"], env=env)
            servers.append(proc)
            wait_ready(f"http://127.0.0.1:{port}/v2/models/{model}/ready", proc)

        for model, _, port in MODELS:
            golden = read_golden(versions[model] / "golden.json")
            rows, truth = golden["instances"][:3], golden["targets_ppb"][:3]
            v1, v1_version = post(f"http://127.0.0.1:{port}/v1/models/{model}:predict",
                                  {"instances": rows})
            v2, _ = post(f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                         {"inputs": [{"name": "spectra", "shape": [len(rows), len(rows[0])],
                                      "datatype": "FP32", "data": rows}]})
            print(f"\n{model} version {v1_version} (V1 and V2), three held-out spectra:")
            for t, p1, p2 in zip(truth, v1["predictions"], v2["outputs"][0]["data"]):
                print(f"  true {t:>9.0f} ppb   V1 {p1:>9.0f} ppb   V2 {p2:>9.0f} ppb")
        print("\nTry it yourself:\n  curl -s http://127.0.0.1:8080/v2/models/don-rf | python -m json.tool"
              "\n  curl -s http://127.0.0.1:8080/metrics | grep don_requests_total"
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


if __name__ == "__main__":
    sys.exit(main())
