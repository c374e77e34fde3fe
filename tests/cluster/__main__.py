"""python -m tests.cluster ...

  build                     build (once) and cache the Kubernetes binaries and etcd
  apiserver up|down|status  etcd + kube-apiserver only (state in $DON_APISERVER_DIR, default /tmp/don-apiserver)
  up|down|status            the local one-node cluster (state in $DON_CLUSTER_DIR, default /tmp/don-cluster)
  images                    build and import the project images into the local cluster's containerd
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

APISERVER_DIR = Path(os.environ.get("DON_APISERVER_DIR", "/tmp/don-apiserver"))
CLUSTER_DIR = Path(os.environ.get("DON_CLUSTER_DIR", "/tmp/don-cluster"))


def _apiserver(action: str) -> int:
    from .control_plane import ControlPlane
    from .processes import Daemons

    if action == "up":
        if Daemons(APISERVER_DIR).names():
            print(f"already running (state in {APISERVER_DIR}); run `python -m tests.cluster apiserver down` first",
                  file=sys.stderr)
            return 1
        cp = ControlPlane(state_dir=APISERVER_DIR)
        try:
            cp.start()
        except BaseException:
            cp.stop()
            raise
        print(f"kube-apiserver: {cp.url}\nexport KUBECONFIG={cp.kubeconfig}")
        return 0
    if action == "down":
        ControlPlane(state_dir=APISERVER_DIR).daemons.stop_all(ControlPlane.STOP_ORDER)
        print(f"stopped; state left in {APISERVER_DIR} (logs) - remove it freely")
        return 0
    info = APISERVER_DIR / "cluster.json"
    daemons = Daemons(APISERVER_DIR)
    running = {name: daemons.alive(name) for name in daemons.names()}
    print(json.dumps({"running": running, **(json.loads(info.read_text()) if info.exists() else {})}, indent=1))
    return 0 if running and all(running.values()) else 3


def _cluster(action: str) -> int:
    from . import local_cluster

    return local_cluster.cli(action, CLUSTER_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build and cache the Kubernetes binaries and etcd")
    api = sub.add_parser("apiserver", help="etcd + kube-apiserver only")
    api.add_argument("action", choices=["up", "down", "status"])
    for action in ("up", "down", "status", "images"):
        sub.add_parser(action, help=f"{action} the local one-node cluster")
    args = parser.parse_args(argv)
    if args.command == "build":
        from .binaries import main as build_main
        build_main()
        return 0
    if args.command == "apiserver":
        return _apiserver(args.action)
    return _cluster(args.command)


if __name__ == "__main__":
    sys.exit(main())
