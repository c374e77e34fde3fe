"""`python -m ops`: the rollout operator, its CLI, model-store backup / restore / fetch, and the
prediction recorder with its lab-results import."""
from __future__ import annotations

import argparse
import sys

from don_core.contract import ROLLOUT_DEFAULTS
from ops.rollout.spec import MODES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rollout = sub.add_parser("rollout", help="start, watch and steer ModelRollouts")
    rollout.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    rollout.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    rsub = rollout.add_subparsers(dest="rollout_command", required=True)
    start = rsub.add_parser("start", help="create a ModelRollout")
    start.add_argument("--target", required=True, help="InferenceService (or stable Deployment) name")
    start.add_argument("--version", type=int, help="candidate model version")
    start.add_argument("--storage-uri", help="candidate storageUri (instead of --version)")
    start.add_argument("--name", help="ModelRollout name (default <target>-v<version>)")
    start.add_argument("--mode", choices=MODES, default=ROLLOUT_DEFAULTS["mode"])
    start.add_argument("--steps", help="comma-separated traffic percents, e.g. 10,25,50,100; "
                                       "shadow first for the shadow step, e.g. shadow,10,50,100 "
                                       "(needs --recorder-url)")
    start.add_argument("--recorder-url", help="the prediction recorder whose lab-matched pairs the "
                                              "lab gate judges (spec.labGate.recorderUrl)")
    start.add_argument("--shadow-watch", help="after a shadowed promotion, how long the lab gate "
                                              "keeps judging it against the previous version, "
                                              f"e.g. 72h (mode Deployment only; default "
                                              f"{ROLLOUT_DEFAULTS['shadow']['watch']})")
    start.add_argument("--interval", help="time between analyses, e.g. 30s, 2m")
    start.add_argument("--min-success-rate", type=float)
    start.add_argument("--max-p99-ms", type=float)
    start.add_argument("--max-reference-error-increase", type=float,
                       help="reference set: largest relative log1p-MAE increase (default "
                            f"{ROLLOUT_DEFAULTS['analysis']['maxReferenceErrorIncrease']})")
    start.add_argument("--max-reference-false-accept-increase", type=float,
                       help="reference set: largest false-accept rate increase at 1000 ppb "
                            f"(default {ROLLOUT_DEFAULTS['analysis']['maxReferenceFalseAcceptIncrease']})")
    start.add_argument("--failure-limit", type=int)
    start.add_argument("--min-requests", type=int)
    start.add_argument("--stable-url")
    start.add_argument("--canary-url")
    start.add_argument("--model-name")
    start.add_argument("--prometheus-url")
    start.add_argument("--store-root", help="where the operator reads the golden and reference sets")
    start.add_argument("--paused", action="store_true")
    status = rsub.add_parser("status", help="table of rollouts, or one rollout in detail")
    status.add_argument("name", nargs="?")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    for verb, text in (("pause", "hold at the current weight"), ("resume", "continue a paused rollout"),
                       ("promote", "promote the candidate now"), ("abort", "roll back now")):
        rsub.add_parser(verb, help=text).add_argument("name")

    operator = sub.add_parser("operator", help="run the ModelRollout controller (kopf)")
    operator.add_argument("--kubeconfig")
    operator.add_argument("--namespace", action="append", default=[],
                          help="watch only this namespace (repeatable; default all)")
    operator.add_argument("--tick", type=float, help="seconds between reconcile passes (default 5)")
    operator.add_argument("--liveness", help="e.g. http://0.0.0.0:8080/healthz")

    for name, text in (("backup", "copy every version from one store to another"),
                       ("restore", "copy versions back from a backup store")):
        copy = sub.add_parser(name, help=text)
        copy.add_argument("--from", dest="source", required=True, help="path or s3://bucket/prefix")
        copy.add_argument("--to", dest="dest", required=True, help="path or s3://bucket/prefix")
        copy.add_argument("--model", action="append", help="only this model (repeatable)")

    fetch = sub.add_parser("fetch", help="verified copy of one version into a directory")
    fetch.add_argument("--store", required=True)
    fetch.add_argument("--model", required=True)
    fetch.add_argument("--version", default="latest", help="a number or 'latest'")
    fetch.add_argument("--dest", required=True)

    from ops.recorder import cli as recorder_cli
    recorder_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rollout":
        from ops.rollout import cli
        from ops.rollout.client import RolloutClient
        if args.rollout_command == "start" and not (args.version or args.storage_uri):
            print("error: start needs --version or --storage-uri", file=sys.stderr)
            return 2
        return cli.run(args, RolloutClient.connect(args.kubeconfig, args.namespace))
    if args.command in ("recorder", "labresults"):
        from ops.recorder import cli as recorder_cli
        return recorder_cli.run(args)
    if args.command == "operator":
        from ops import operator
        operator.main(args.namespace, args.kubeconfig, args.tick, args.liveness)
        return 0
    from don_core.store import StoreError
    from ops import backup
    if args.command in ("backup", "restore"):
        try:
            report = backup.copy_store(args.source, args.dest, args.model)
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{len(report.copied)} copied, {len(report.skipped)} skipped, {len(report.failed)} failed")
        return 0 if report.ok else 1
    try:
        number, path = backup.fetch_version(args.store, args.model, args.version, args.dest)
    except Exception as exc:  # store and artifact errors: one line for the init container's log
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fetched {args.model} version {number} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
