"""`python -m console`: start the web console (Streamlit) on this machine.

  python -m console --store .demo-store --server don-rf=http://127.0.0.1:8080 \
      [--server don-rf@canary=http://127.0.0.1:8082] \
      [--server don-tf=http://127.0.0.1:8081] [--recorder URL] [--recorder-token-file FILE] \
      [--namespace NS] [--control] \
      [--host 127.0.0.1] [--port 8501]

The options become DON_CONSOLE_* variables (the chart sets those directly) read by console/app.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from console.services.common import ConsoleError, parse_servers

APP = Path(__file__).with_name("app.py")


def command(host: str, port: int) -> list[str]:
    """The Streamlit server: headless, no telemetry, no error details in the page."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.showErrorDetails", "false",
            "--client.toolbarMode", "minimal", "--server.maxUploadSize", "64",
            "--server.fileWatcherType", "none", "--global.developmentMode", "false"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("DON_CONSOLE_STORE"),
                        help="model store: a path or s3://bucket/prefix (Models page, training range)")
    parser.add_argument("--server", action="append", default=[], metavar="NAME[@TRACK]=URL",
                        help="a model's address, or one track of it (NAME@stable=URL, "
                             "NAME@canary=URL): repeatable; the Predict page offers each track "
                             "that answers with the version it serves, the first model's stable "
                             "track (else its address) by default")
    parser.add_argument("--recorder", default=os.environ.get("DON_CONSOLE_RECORDER"),
                        help="the prediction recorder's URL (Monitoring page, paired figures of rollouts)")
    parser.add_argument("--recorder-token-file", default=os.environ.get("DON_CONSOLE_RECORDER_TOKEN_FILE"),
                        help="the recorder's write token, sent with imported lab results (default: the "
                             "model servers' token, $DON_API_TOKEN_FILE)")
    parser.add_argument("--namespace", default=os.environ.get("DON_CONSOLE_NAMESPACE"),
                        help="namespace of the ModelRollouts (default: the context's)")
    parser.add_argument("--kubeconfig", default=os.environ.get("DON_CONSOLE_KUBECONFIG"))
    parser.add_argument("--control", action="store_true",
                        help="enable the pause / resume / promote / abort buttons")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    args = parser.parse_args(argv)
    servers = ",".join(args.server) or os.environ.get("DON_CONSOLE_SERVERS", "")
    try:
        parse_servers(servers)
    except ConsoleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ, DON_CONSOLE_SERVERS=servers)
    for key, value in (("DON_CONSOLE_STORE", args.store), ("DON_CONSOLE_RECORDER", args.recorder),
                       ("DON_CONSOLE_RECORDER_TOKEN_FILE", args.recorder_token_file),
                       ("DON_CONSOLE_NAMESPACE", args.namespace),
                       ("DON_CONSOLE_KUBECONFIG", args.kubeconfig)):
        if value:
            env[key] = value
    if args.control:
        env["DON_CONSOLE_CONTROL"] = "true"
    print(f"console on http://{args.host}:{args.port}", flush=True)
    os.execve(sys.executable, command(args.host, args.port), env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
