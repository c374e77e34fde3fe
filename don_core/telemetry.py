"""Telemetry shared by the training job and the model server: JSON logs and OpenTelemetry tracing.

Tracing follows the standard OpenTelemetry environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_SDK_DISABLED`, ...). With no exporter endpoint configured nothing is
installed and the OpenTelemetry API stays a no-op, so callers can create spans unconditionally.
Every JSON log line written inside a span carries that span's trace id, which joins logs to traces.
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
import time

try:  # the API is light; it is present wherever tracing can be wanted
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - images without OpenTelemetry simply log without trace ids
    _trace = None
    _propagate = None

_TRACING_ON = False
# LogRecord attributes that are not user-supplied `extra=` fields
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the active span as W3C hex strings, or (None, None)."""
    if _trace is None:
        return None, None
    ctx = _trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        trace_id, span_id = current_trace_ids()
        if trace_id:
            doc["trace_id"], doc["span_id"] = trace_id, span_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def logging_config(level: str | None = None, quiet_loggers: tuple[str, ...] = ()) -> dict:
    """A logging.dictConfig document: every logger through one JSON handler on stderr.

    `quiet_loggers` are raised to WARNING (per-request access logs cost real throughput).
    """
    level = (level or os.environ.get("DON_LOG_LEVEL") or "INFO").upper()
    loggers = {name: {"level": "WARNING"} for name in quiet_loggers}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "don_core.telemetry.JsonFormatter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json",
                              "stream": "ext://sys.stderr"}},
        # child loggers that libraries configure with their own handlers are reset to propagate
        "loggers": {**{name: {"handlers": [], "propagate": True} for name in
                       ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")},
                    **{name: {**loggers[name], "handlers": [], "propagate": True}
                       for name in loggers}},
        "root": {"level": level, "handlers": ["json"]},
    }


def configure_logging(level: str | None = None, quiet_loggers: tuple[str, ...] = ()) -> None:
    logging.config.dictConfig(logging_config(level, quiet_loggers))
    logging.captureWarnings(True)  # library warnings become JSON lines too


def tracing_requested(environ=os.environ) -> bool:
    """True when the standard OTEL_* variables ask for trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup_tracing(service_name: str) -> bool:
    """Install an OTLP/HTTP exporting tracer provider if the environment asks for one.

    Returns whether tracing is on. Safe to call more than once (and in every worker process).
    """
    global _TRACING_ON
    if _TRACING_ON:
        return True
    if _trace is None or not tracing_requested():
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        logging.getLogger(__name__).warning("tracing requested but unavailable: %s", exc)
        return False
    # Resource.create merges OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES over this default.
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _trace.set_tracer_provider(provider)
    _TRACING_ON = True
    logging.getLogger(__name__).info("OpenTelemetry tracing on", extra={
        "otlp_endpoint": os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")})
    return True


def tracing_enabled() -> bool:
    return _TRACING_ON


def shutdown_tracing() -> None:
    """Flush pending spans (call before a batch job exits)."""
    if _TRACING_ON and _trace is not None:
        provider = _trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def get_tracer(name: str):
    if _trace is None:
        return None
    return _trace.get_tracer(name)


def extract_context(headers):
    """The caller's trace context from W3C `traceparent`/`tracestate` headers (a mapping)."""
    if _propagate is None:
        return None
    return _propagate.extract(headers)

