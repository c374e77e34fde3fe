"""`python -m model_server --model_name NAME --model_dir DIR [--http_port 8080] [--grpc_port 8081]`

A KServe custom runtime: KServe's ModelServer (REST V1/V2 + gRPC) serving one DonModel.

A version that fails verification is refused but the process stays up, live and not ready: the
readiness probe keeps traffic away, the liveness probe does not restart it (a restart cannot fix
an immutable, corrupt version and CrashLoopBackOff would hide the reason behind back-off), and
/status and the log say why, where the rollout operator and a person can read it. A version
not yet in the store is waited for the same way (model_server/wait_for_version.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from don_core import telemetry
from don_core.contract import MAX_BATCH_ROWS, ONNX_ATOL_PPB, ONNX_RTOL
from don_core.schema import REFLECTANCE_RANGE
from model_server import mirror



def build_parser() -> argparse.ArgumentParser:
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        prog="python -m model_server", parents=[kserve_parser],
        description="Serve one DON model version (KServe V1, V2 and gRPC).")
    parser.add_argument("--model_dir", default=os.environ.get("DON_MODEL_DIR", "/mnt/models"),
                        help="one version directory of the model store")
    parser.add_argument("--max_batch_rows", type=int,
                        default=int(os.environ.get("DON_MAX_BATCH_ROWS", MAX_BATCH_ROWS)),
                        help="refuse requests with more spectra than this (413)")
    parser.add_argument("--no_onnx", action="store_true",
                        help="serve the native artifact even when model.onnx matches it")
    parser.add_argument("--onnx_rtol", type=float, default=ONNX_RTOL,
                        help="relative tolerance of the ONNX check on the golden rows")
    parser.add_argument("--onnx_atol", type=float, default=ONNX_ATOL_PPB,
                        help="absolute tolerance (ppb) of the ONNX check on the golden rows")
    parser.add_argument("--native_fallback", choices=("auto", "on", "off"),
                        default=os.environ.get("DON_NATIVE_FALLBACK", "auto"),
                        help="serve the native artifact when the ONNX copy is missing or disagrees "
                             "(off: refuse the version, as the lean image does; auto: when the "
                             "family's library is installed)")
    low, high = REFLECTANCE_RANGE
    parser.add_argument("--reflectance_range", type=_value_range,
                        default=os.environ.get("DON_REFLECTANCE_RANGE", f"{low:g},{high:g}"),
                        help="MIN,MAX: refuse spectra with a value outside (400) [%(default)s; "
                             "the lab's spectra span 0.21-1.06]")
    parser.add_argument("--log_level", default=os.environ.get("DON_LOG_LEVEL", "INFO"))
    env = os.environ.get
    parser.add_argument("--records_url", default=env("DON_RECORDS_URL") or None,
                        help="POST prediction records (CloudEvents) to this recorder URL; "
                             "off when unset")
    parser.add_argument("--records_sample_rate", type=float,
                        default=float(env("DON_RECORDS_SAMPLE_RATE", "1.0")),
                        help="share of requests whose rows are recorded (0 < r <= 1)")
    parser.add_argument("--records_keep_spectra", action="store_true",
                        default=env("DON_RECORDS_KEEP_SPECTRA", "").lower() in ("1", "true"),
                        help="send each spectrum in its record, not only its sha256")
    parser.add_argument("--records_token_file", default=env("DON_RECORDS_TOKEN_FILE") or None,
                        help="file holding the recorder's bearer token (a mounted Secret)")
    parser.add_argument("--records_queue_rows", type=int,
                        default=int(env("DON_RECORDS_QUEUE_ROWS", "10000")),
                        help="records held in memory while the recorder is slow or down; "
                             "beyond that they are dropped and counted")
    parser.add_argument("--records_flush_seconds", type=float,
                        default=float(env("DON_RECORDS_FLUSH_SECONDS", "1.0")),
                        help="longest a record waits for its batch to fill before it is sent "
                             "(shutdown sends what is queued at once)")
    mirror.add_arguments(parser)
    # Our own metrics and spans record latency; KServe's extra log line per request is waste.
    parser.set_defaults(enable_latency_logging=False)
    return parser


def _value_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None
    # beyond float32 a value cannot reach the models unchanged
    if not -3.0e38 < low < high < 3.0e38:
        raise argparse.ArgumentTypeError(f"{text!r}: need MIN < MAX, both within float32 range")
    return low, high


def _log_config_file(level: str, quiet: tuple[str, ...]) -> str:
    """KServe configures logging again in each worker process from a file: hand it ours."""
    fd, path = tempfile.mkstemp(prefix="don-log-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(telemetry.logging_config(level, quiet), fh)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers > 1:  # before the first metric sample: every worker's count in /metrics
        from model_server.metrics import share_across_workers
        share_across_workers()
    from model_server.model import QUIET_LOGGERS

    telemetry.configure_logging(args.log_level, QUIET_LOGGERS)
    log = logging.getLogger("model_server")

    import kserve.model_server as kserve_server
    from kserve import ModelServer

    from model_server.model import ServeOptions
    from model_server.records import RecordOptions
    from model_server.drain import install_signal as install_drain_signal
    from model_server.routes import install
    from model_server.security import install_grpc_guard
    from model_server.wait_for_version import load_or_wait
    from model_server.workers import ServedModel

    if args.log_config_file is None:
        args.log_config_file = _log_config_file(args.log_level, QUIET_LOGGERS)
    kserve_server.args.log_config_file = args.log_config_file  # read by the worker processes
    install()  # also sets up tracing from OTEL_* in this process
    install_grpc_guard()  # the same token and limits on port 8081 as on HTTP
    records = None
    if args.records_url:
        try:
            records = RecordOptions(url=args.records_url, sample_rate=args.records_sample_rate,
                                    keep_spectra=args.records_keep_spectra,
                                    token_file=args.records_token_file,
                                    queue_rows=args.records_queue_rows,
                                    flush_seconds=args.records_flush_seconds)
        except ValueError as exc:
            print(f"python -m model_server: error: {exc}", file=sys.stderr)
            return 2
    try:
        mirror_options = mirror.options_from_args(args)
    except ValueError as exc:
        print(f"python -m model_server: error: {exc}", file=sys.stderr)
        return 2
    install_drain_signal()  # the preStop hook's signal (model_server/drain.py)
    options = ServeOptions(max_batch_rows=args.max_batch_rows, use_onnx=not args.no_onnx,
                           onnx_rtol=args.onnx_rtol, onnx_atol=args.onnx_atol,
                           native_fallback={"on": True, "off": False}.get(args.native_fallback),
                           reflectance_range=args.reflectance_range, records=records,
                           mirror=mirror_options)
    model = ServedModel(args.model_name, args.model_dir, options)
    install(model=model)  # the routes answer for it (not ready until loaded)
    # With --workers N each worker loads its own copy; this process needs one only for gRPC.
    if args.workers <= 1 or args.enable_grpc:
        load_or_wait(model)  # a version not published yet: loaded once it appears
    if args.workers <= 1 and model.state == "refused":
        log.error("model %s is NOT ready; serving health endpoints only (see /status)",
                  args.model_name, extra={"reason": model.reason})
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port,
                         workers=args.workers, enable_grpc=args.enable_grpc,
                         enable_docs_url=args.enable_docs_url,
                         enable_latency_logging=args.enable_latency_logging,
                         access_log_format=args.access_log_format,
                         event_loop=args.event_loop,
                         timeout_keep_alive=args.timeout_keep_alive)
    # Registered even when refused, so the server answers "not ready" instead of exiting
    # (ModelServer.start(models) would raise NoModelReady, and start() would mark it ready).
    server.register_model(model)
    model.enable_latency_logging = args.enable_latency_logging
    server.start([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
