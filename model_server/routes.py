"""The REST routes added to KServe's FastAPI app.

KServe's generic handlers decode every request into its own request objects and cannot tell a
caller which bands were wrong; ours decode straight into a numpy batch, validate it, and answer
4xx with a reason. They are registered before KServe's, so for the same path they win; health,
readiness, list and gRPC stay KServe's own.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import zlib

import orjson
import psutil
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

from don_core import telemetry
from don_core.schema import N_BANDS
from model_server import codec
from model_server.metrics import outcome_of
from model_server.model import current_model
from model_server.security import GuardMiddleware

log = logging.getLogger("model_server.requests")

SERVICE_NAME = "don-model-server"
JSON = "application/json"
MAX_BODY_BYTES = int(os.environ.get("DON_MAX_BODY_BYTES", str(64 * 1024 * 1024)))
_PROCESS = psutil.Process()
_SPECTRUM = {"type": "array", "items": {"type": "number"},
             "minItems": N_BANDS, "maxItems": N_BANDS}
V1_BODY = {"requestBody": {"required": True, "content": {JSON: {"schema": {
    "type": "object", "required": ["instances"],
    "properties": {"instances": {"type": "array", "items": _SPECTRUM, "minItems": 1}}}}}}}
V2_BODY = {"requestBody": {"required": True, "content": {JSON: {"schema": {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {"name": {"type": "string"},
                           "shape": {"type": "array", "items": {"type": "integer"}},
                           "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                           "data": {"type": "array", "items": _SPECTRUM}}}},
        "outputs": {"type": "array", "items": {"type": "object",
                                               "properties": {"name": {"type": "string"}}}}}}}}}}


_ERROR_DOC = {"content": {JSON: {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}}}}}}
PREDICT_ERRORS = {code: {"description": text, **_ERROR_DOC} for code, text in (
    (400, "bad input, named in the message"), (401, "missing or wrong bearer token"),
    (404, "model or version not served here"), (413, "body or batch above the limit"),
    (415, "unsupported content type"), (429, "rate limited; see Retry-After"),
    (503, "model not ready"))}
LOOKUP_ERRORS = {code: PREDICT_ERRORS[code] for code in (401, 404, 429, 503)}


def _error(status: int, message: str, version: str | None = None) -> Response:
    headers = {"X-Model-Version": version} if version else None
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON,
                    headers=headers)


def _span(tracer, name: str, **kwargs):
    return tracer.start_as_current_span(name, **kwargs) if tracer else contextlib.nullcontext()


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise codec.ClientError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise codec.ClientError(413, f"request body of {declared} bytes is above the "
                                         f"{limit}-byte limit; send fewer rows per request")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise codec.ClientError(415, f"unsupported Content-Encoding {encoding!r}; send the body "
                                     "plain or gzip-compressed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise codec.ClientError(413, f"request body is above the {limit}-byte limit; "
                                         "send fewer rows per request")
        chunks.append(chunk)
    body = b"".join(chunks)
    return body if encoding == "identity" else _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body, refused once it inflates past the same limit as a plain one (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise codec.ClientError(400, f"Content-Encoding gzip but the body is not gzip ({exc})") \
            from None
    if len(plain) > limit:
        raise codec.ClientError(413, f"gzip body inflates above the {limit}-byte limit; send "
                                     "fewer rows per request")
    if not inflater.eof:
        raise codec.ClientError(400, "gzip body is truncated")
    return plain


async def _serve(request: Request, model_name: str, protocol: str) -> Response:
    started = time.perf_counter()
    model = current_model()
    if model is None or not model.ready:
        reason = model.reason if model is not None and model.reason else "still loading"
        return _error(503, f"model is not ready: {reason}")
    if model_name != model.name:
        return _error(404, f"model {model_name!r} is not served here; this server serves "
                           f"{model.name!r}", model.version)
    tracer = telemetry.get_tracer("model_server") if telemetry.tracing_enabled() else None
    parent = telemetry.extract_context(request.headers) if tracer else None
    with _span(tracer, f"POST {protocol} infer", context=parent,
               attributes={"model.name": model.name, "model.version": model.version}):
        try:
            response = await _answer(request, model, protocol, tracer)
        except codec.ClientError as exc:
            log.info("request refused: %s", exc.message,
                     extra={"status": exc.status, "protocol": protocol, "model": model.name,
                            "version": model.version})
            response = _error(exc.status, exc.message, model.version)
        except Exception:  # a bug or a broken backend, never the caller's input
            log.exception("prediction failed", extra={"model": model.name,
                                                      "version": model.version})
            response = _error(500, "internal error while predicting", model.version)
    model.metrics.request(protocol, outcome_of(response.status_code),
                          time.perf_counter() - started)
    return response


async def _answer(request: Request, model, protocol: str, tracer) -> Response:
    headers = request.headers
    limit = model.options.max_batch_rows
    with _span(tracer, "decode"):
        header_length = headers.get(codec.HEADER_LENGTH) if protocol == "v2" else None
        if header_length is None:
            codec.check_json_content_type(headers.get("content-type"))
        elif codec.media_type(headers.get("content-type")) not in ("", JSON,
                                                                   "application/octet-stream"):
            raise codec.ClientError(415, "binary tensor requests must be "
                                         "application/octet-stream")
        body = await _read_body(request, MAX_BODY_BYTES)
    with _span(tracer, "validate"):
        valid = model.options.reflectance_range
        if protocol == "v1":
            x, request_id, binary = codec.decode_v1(body, limit, valid), None, False
        else:
            req = codec.decode_v2(body, header_length, limit, valid)
            x, request_id, binary = req.x, req.id, req.binary_output
    with _span(tracer, "predict", attributes={"batch.rows": int(x.shape[0])}):
        ppb = model.infer(x)
    out_headers = {"X-Model-Version": model.version}
    if protocol == "v1":
        return Response(codec.encode_v1(ppb), media_type=JSON, headers=out_headers)
    content, extra = codec.encode_v2(ppb, model.name, model.version, request_id, binary)
    out_headers.update(extra)
    return Response(content, media_type="application/octet-stream" if binary else JSON,
                    headers=out_headers)


async def v1_predict(model_name: str, request: Request) -> Response:
    return await _serve(request, model_name, "v1")


async def v2_infer(model_name: str, request: Request) -> Response:
    return await _serve(request, model_name, "v2")


def _version_mismatch(model_name: str, model_version: str) -> Response | None:
    model = current_model()
    if model is not None and model_name == model.name and model_version != model.version:
        return _error(404, f"version {model_version!r} of {model_name!r} is not served here; "
                           f"this server serves version {model.version}", model.version)
    return None


async def v2_infer_version(model_name: str, model_version: str, request: Request) -> Response:
    return _version_mismatch(model_name, model_version) or await v2_infer(model_name, request)


def _metadata(model_name: str) -> Response:
    model = current_model()
    if model is None or model_name != model.name:
        return _error(404, f"model {model_name!r} is not served here")
    doc = {"name": model.name, "versions": [model.version], "platform": model.backend_name,
           "inputs": model.get_input_types(), "outputs": model.get_output_types()}
    return Response(orjson.dumps(doc), media_type=JSON,
                    headers={"X-Model-Version": model.version})


async def v2_metadata(model_name: str) -> Response:
    return _metadata(model_name)


async def v2_metadata_version(model_name: str, model_version: str) -> Response:
    return _version_mismatch(model_name, model_version) or _metadata(model_name)


async def v2_ready(model_name: str) -> Response:
    model = current_model()
    return await v2_ready_version(model_name, model.version if model else "")


async def v2_ready_version(model_name: str, model_version: str) -> Response:
    mismatch = _version_mismatch(model_name, model_version)
    if mismatch:
        return mismatch
    model = current_model()
    if model is None or model_name != model.name:
        return _error(404, f"model {model_name!r} is not served here")
    ready = bool(model.ready)
    return Response(orjson.dumps({"name": model_name, "ready": ready}), media_type=JSON,
                    status_code=200 if ready else 503)


async def server_ready() -> Response:
    """KServe's answers ready whenever the process is up; ours only once the model is."""
    model = current_model()
    ready = bool(model is not None and model.ready)
    return Response(orjson.dumps({"ready": ready}), media_type=JSON,
                    status_code=200 if ready else 503)


async def status(model_name: str | None = None) -> Response:
    """Details for people and the rollout operator: what is served, since when, at what cost."""
    model = current_model()
    if model is None or (model_name is not None and model_name != model.name):
        return _error(404, f"model {model_name!r} is not served here")
    doc = model.status()
    doc.update(uptime_seconds=round(time.time() - _PROCESS.create_time(), 1),
               rss_bytes=_PROCESS.memory_info().rss,
               tracing=telemetry.tracing_enabled())
    return Response(orjson.dumps(doc), media_type=JSON,
                    status_code=200, headers={"X-Model-Version": model.version})


async def model_status(model_name: str) -> Response:
    return await status(model_name)


async def no_explainer(model_name: str) -> Response:
    return _error(404, f"no explainer is deployed for {model_name!r}")


async def repository_disabled(model_name: str) -> Response:
    # One immutable version per server: loading/unloading over HTTP would be an unauthenticated
    # way to take the model out of service.
    return _error(403, "the model repository API is disabled on this server")


def _openapi(app: FastAPI, ours: APIRouter) -> dict:
    """OpenAPI of the routes that actually answer: on a shared path ours hide KServe's."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)  # everything, KServe's operations included
        own = get_openapi(title=app.title, version=app.version, routes=ours.routes)
        for path, operations in own["paths"].items():
            schema["paths"].setdefault(path, {}).update(operations)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(own.get("components", {}).get("schemas", {}))
        schema["info"]["title"] = "DON Predictor model server"
        app.openapi_schema = schema
    return app.openapi_schema


def install(app: FastAPI | None = None) -> FastAPI:
    """Add our routes and middleware to KServe's app (once per process, before it starts)."""
    if app is None:
        from kserve.model_server import app
    if getattr(app.state, "don_routes", False):
        return app
    app.state.don_routes = True
    telemetry.setup_tracing(SERVICE_NAME)
    app.add_middleware(GuardMiddleware)
    router = APIRouter()
    post = {"methods": ["POST"], "response_model": None, "responses": PREDICT_ERRORS}
    router.add_api_route("/v1/models/{model_name}:predict", v1_predict, openapi_extra=V1_BODY,
                         **post)
    router.add_api_route("/v1/models/{model_name}:explain", no_explainer, **post)
    router.add_api_route("/v2/models/{model_name}/infer", v2_infer, openapi_extra=V2_BODY, **post)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer",
                         v2_infer_version, openapi_extra=V2_BODY, **post)
    get = {"methods": ["GET"], "response_model": None, "responses": LOOKUP_ERRORS}
    router.add_api_route("/v2/health/ready", server_ready, **get)
    router.add_api_route("/v2/models/{model_name}", v2_metadata, **get)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}",
                         v2_metadata_version, **get)
    router.add_api_route("/v2/models/{model_name}/ready", v2_ready, **get)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready",
                         v2_ready_version, **get)
    router.add_api_route("/v2/models/{model_name}/status", model_status, **get)
    router.add_api_route("/status", status, **get)
    closed = {"methods": ["POST"], "response_model": None,
              "responses": {403: {"description": "disabled", **_ERROR_DOC}}}
    router.add_api_route("/v2/repository/models/{model_name}/load", repository_disabled,
                         **closed)
    router.add_api_route("/v2/repository/models/{model_name}/unload", repository_disabled,
                         **closed)
    app.include_router(router)
    app.openapi = lambda: _openapi(app, router)
    return app
