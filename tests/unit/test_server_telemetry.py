"""don_core.telemetry: JSON log lines carry the active trace id; tracing is off without OTEL_*."""
from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from don_core import telemetry


def test_tracing_follows_standard_environment():
    assert not telemetry.tracing_requested({})
    assert telemetry.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert telemetry.tracing_requested(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not telemetry.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                            "OTEL_SDK_DISABLED": "true"})
    assert not telemetry.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                            "OTEL_TRACES_EXPORTER": "none"})


def test_setup_is_a_no_op_without_endpoint(monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert telemetry.setup_tracing("test") is False
    assert telemetry.current_trace_ids() == (None, None)


def _logger_to(stream):
    logger = logging.getLogger("test.telemetry")
    logger.handlers = [logging.StreamHandler(stream)]
    logger.handlers[0].setFormatter(telemetry.JsonFormatter())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_json_log_line_has_trace_id_inside_a_span():
    stream = io.StringIO()
    logger = _logger_to(stream)
    tracer = TracerProvider().get_tracer("test")  # a local provider: the global stays untouched
    logger.info("outside")
    with tracer.start_as_current_span("work") as span:
        logger.info("inside %s", "span", extra={"rows": 3})
        expected = format(span.get_span_context().trace_id, "032x")
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside and outside["message"] == "outside"
    assert inside["trace_id"] == expected and inside["message"] == "inside span"
    assert inside["rows"] == 3 and inside["level"] == "INFO"


def test_logging_config_quiets_per_request_loggers():
    config = telemetry.logging_config("DEBUG", ("uvicorn.access",))
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["uvicorn.access"]["level"] == "WARNING"
