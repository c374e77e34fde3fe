"""The REST routes added to KServe's FastAPI app.

KServe's generic handlers decode every request into its own request objects and cannot tell a
caller which bands were wrong; ours decode straight into a numpy batch, validate it, and answer
4xx with a reason. They are registered before KServe's, so for the same path they win; health,
readiness, list and gRPC stay KServe's own.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
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
from don_core.contract import BINARY_HEADER_LENGTH_HEADER, REQUEST_ID_HEADER, SHADOW_HEADER, VERSION_HEADER
from model_server import codec
from model_server.metrics import exposition, outcome_of
from model_server.drain import DRAINING, DrainMiddleware
from model_server.mirror import Mirror, new_request_id
from model_server.security import GuardMiddleware, is_open

log = logging.getLogger("model_server.requests")

SERVICE_NAME = "don-model-server"
JSON = "application/json"
MAX_BODY_BYTES = int(os.environ.get("DON_MAX_BODY_BYTES", str(64 * 1024 * 1024)))
_PROCESS = psutil.Process()
def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


# The request schemas come from the decoder's own rules (codec); _openapi restates them with the
# served model's range, batch limit and outputs once it is loaded.
V1_BODY = _body(codec.v1_body_schema())
V2_BODY = _body(codec.v2_body_schema())
V1_RESPONSE = {"type": "object", "required": ["predictions"], "properties": {
    "predictions": {"type": "array", "minItems": 1, "description": "ppb, one per spectrum",
                    "items": {"type": "number", "minimum": 0}}}}
V2_RESPONSE = {"type": "object", "required": ["model_name", "model_version", "outputs"],
               "properties": {
                   "model_name": {"type": "string"}, "model_version": {"type": "string"},
                   "id": {"type": "string"},
                   "outputs": {"type": "array", "minItems": 1, "items": {
                       "type": "object", "required": ["name", "datatype", "shape"],
                       "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                      "shape": {"type": "array",
                                                "items": {"type": "integer", "minimum": 0}},
                                      "data": {"type": "array"},
                                      "parameters": {"type": "object"}}}}}}
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                        "description": "binary tensor extension: JSON header "
                                                       "(Inference-Header-Content-Length) + data"}}
_READY = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"},
                                                                  "name": {"type": "string"},
                                                                  "reason": {"type": "string"}}}
_METADATA = {"type": "object", "required": ["name", "versions", "inputs", "outputs"],
             "properties": {"name": {"type": "string"},
                            "versions": {"type": "array", "items": {"type": "string"}},
                            "platform": {"type": "string"}, "inputs": {"type": "array"},
                            "outputs": {"type": "array"}}}
_STATUS = {"type": "object", "required": ["model", "version", "state", "ready"],
           "properties": {"model": {"type": "string"}, "version": {"type": "string"},
                          "state": {"type": "string"}, "ready": {"type": "boolean"},
                          "reason": {"type": ["string", "null"]}}}


class Served:
    """What this app answers for: the one model of this process, attached by whoever starts it
    (None until then). Kept in app.state, so the routes need no import of the model's module."""

    def __init__(self):
        self.model = None
        self.mirror = None  # this process's Mirror, made on first use (model.options.mirror)


def _served(app):
    return app.state.don_served.model


def _unready(model) -> str | None:
    """Why `model` cannot answer (None: it can), for every 503 and readiness answer."""
    if model is None:
        return "still loading"
    return None if model.ready else model.reason or "still loading"


def _mirror(app, model) -> Mirror | None:
    served = app.state.don_served
    if served.mirror is None and model.options.mirror is not None and model.ready:
        served.mirror = Mirror(model.options.mirror, model.name, model.version)
    return served.mirror


def _ok(schema: dict, extra: dict | None = None) -> dict:
    return {200: {"description": "OK", "content": {JSON: {"schema": schema}, **(extra or {})}}}


_ERROR_DOC = {"content": {JSON: {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}}}}}}
PREDICT_ERRORS = {code: {"description": text, **_ERROR_DOC} for code, text in (
    (400, "bad input, named in the message"), (401, "missing or wrong bearer token"),
    (404, "model or version not served here"), (413, "body or batch above the limit"),
    (415, "unsupported content type"), (429, "rate limited; see Retry-After"),
    (503, "model not ready"))}
LOOKUP_ERRORS = {code: PREDICT_ERRORS[code] for code in (401, 404, 429, 503)}
_GUARD_ERRORS = {code: PREDICT_ERRORS[code] for code in (401, 429, 503)}


def _error(status: int, message: str, version: str | None = None) -> Response:
    headers = {VERSION_HEADER: version} if version else None
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
    model = _served(request.app)
    reason = _unready(model)
    if reason:
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
        header_length = headers.get(BINARY_HEADER_LENGTH_HEADER) if protocol == "v2" else None
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
            req = codec.decode_v1_request(body, limit, valid)
        else:
            req = codec.decode_v2(body, header_length, limit, valid)
    # one id in the records here and, when mirrored, in the shadow's (generated if none came)
    request_id = req.id or headers.get(_REQUEST_ID) or new_request_id()
    # a copy from a stable, or any request to a shadow server: record as a shadow, never mirror
    shadow = _SHADOW in headers or bool(model.options.mirror and model.options.mirror.shadow)
    with _span(tracer, "predict", attributes={"batch.rows": int(req.x.shape[0])}):
        ppb, values = model.answer(req, request_id, _trace_id(headers), _caller(request), shadow)
    out_headers = {VERSION_HEADER: model.version}
    if protocol == "v1":
        response = Response(codec.encode_v1(ppb, values), media_type=JSON, headers=out_headers)
    else:
        tensors = [codec.Tensor(o.name, model.output_types[o.name], values[o.name], o.binary)
                   for o in req.outputs]
        content, extra = codec.encode_v2(tensors, model.name, model.version, req.id)
        out_headers.update(extra)
        response = Response(content, media_type="application/octet-stream" if extra else JSON,
                            headers=out_headers)
    mirror = None if shadow else _mirror(request.app, model)
    if mirror is not None:  # answered: only a queued copy from here (model_server/mirror.py)
        mirror.submit(protocol, body, request_id, header_length, headers.get("traceparent"))
    return response


_HEX = set("0123456789abcdef")
_REQUEST_ID, _SHADOW = REQUEST_ID_HEADER.lower(), SHADOW_HEADER.lower()


def _trace_id(headers) -> str | None:
    """The active span's trace id, else the caller's W3C traceparent's, for the record."""
    if telemetry.tracing_enabled():
        trace_id = telemetry.current_trace_ids()[0]
        if trace_id:
            return trace_id
    parent = headers.get("traceparent")
    if parent:
        parts = parent.split("-")
        if len(parts) >= 3 and len(parts[1]) == 32 and set(parts[1]) <= _HEX:
            return parts[1]
    return None


def _caller(request: Request) -> str | None:
    """Who called: the client address (a pod IP in the cluster)."""
    client = request.client
    return client.host if client else None


async def v1_predict(model_name: str, request: Request) -> Response:
    return await _serve(request, model_name, "v1")


async def v2_infer(model_name: str, request: Request) -> Response:
    return await _serve(request, model_name, "v2")


def _version_mismatch(model, model_name: str, model_version: str) -> Response | None:
    # not before it is ready: its version is not known yet (the 503 says why)
    if (model is not None and model.ready and model_name == model.name
            and model_version != model.version):
        return _error(404, f"version {model_version!r} of {model_name!r} is not served here; "
                           f"this server serves version {model.version}", model.version)
    return None


async def v2_infer_version(model_name: str, model_version: str, request: Request) -> Response:
    return (_version_mismatch(_served(request.app), model_name, model_version)
            or await v2_infer(model_name, request))


def _metadata(model, model_name: str) -> Response:
    if model is None or model_name != model.name:
        return _error(404, f"model {model_name!r} is not served here")
    reason = _unready(model)
    if reason:
        return _error(503, f"model is not ready: {reason}")
    doc = {"name": model.name, "versions": [model.version], "platform": model.backend_name,
           "inputs": model.get_input_types(), "outputs": model.get_output_types()}
    return Response(orjson.dumps(doc), media_type=JSON,
                    headers={VERSION_HEADER: model.version})


async def v2_metadata(model_name: str, request: Request) -> Response:
    return _metadata(_served(request.app), model_name)


async def v2_metadata_version(model_name: str, model_version: str, request: Request) -> Response:
    model = _served(request.app)
    return _version_mismatch(model, model_name, model_version) or _metadata(model, model_name)


async def v2_ready(model_name: str, request: Request) -> Response:
    model = _served(request.app)
    return await v2_ready_version(model_name, model.version if model else "", request)


async def v2_ready_version(model_name: str, model_version: str, request: Request) -> Response:
    model = _served(request.app)
    mismatch = _version_mismatch(model, model_name, model_version)
    if mismatch:
        return mismatch
    if model is None or model_name != model.name:
        return _error(404, f"model {model_name!r} is not served here")
    return _readiness({"name": model_name}, model, model.version)


async def server_ready(request: Request) -> Response:
    """KServe's answers ready whenever the process is up; ours only once the model is."""
    return _readiness({}, _served(request.app))


def _readiness(doc: dict, model, version: str | None = None) -> Response:
    """200 when ready, else 503 whose body names the reason. The kubelet logs probe bodies only
    at verbosity 4 (its events name the status code alone), so /status says it too. `version`:
    sent as X-Model-Version, so the rollout operator can verify what ready servers serve without
    a token."""
    reason = "draining: this pod is shutting down" if DRAINING.is_set() else _unready(model)
    doc["ready"] = reason is None
    if reason:
        doc["reason"] = reason
    return Response(orjson.dumps(doc), media_type=JSON, status_code=503 if reason else 200,
                    headers={VERSION_HEADER: version} if version else None)


async def status(request: Request, model_name: str | None = None) -> Response:
    """Details for people and the rollout operator: what is served, since when, at what cost."""
    model = _served(request.app)
    if model is None or (model_name is not None and model_name != model.name):
        return _error(404, f"model {model_name!r} is not served here")
    doc = model.status()
    mirror = _mirror(request.app, model)
    doc.update(uptime_seconds=round(time.time() - _PROCESS.create_time(), 1),
               rss_bytes=_PROCESS.memory_info().rss,
               tracing=telemetry.tracing_enabled(),
               mirror=None if mirror is None else mirror.status())
    return Response(orjson.dumps(doc), media_type=JSON,
                    status_code=200, headers={VERSION_HEADER: model.version})


async def model_status(model_name: str, request: Request) -> Response:
    return await status(request, model_name)


async def metrics(request: Request) -> Response:
    """KServe's /metrics shows this process only; with --workers N ours covers every worker."""
    body, content_type = exposition(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})


async def no_explainer(model_name: str) -> Response:
    return _error(404, f"no explainer is deployed for {model_name!r}")


async def repository_disabled(model_name: str) -> Response:
    # One immutable version per server: loading/unloading over HTTP would be an unauthenticated
    # way to take the model out of service.
    return _error(403, "the model repository API is disabled on this server")


def _openapi(app: FastAPI, ours: APIRouter) -> dict:
    """OpenAPI of the routes that actually answer: on a shared path ours hide KServe's. Once a
    model is loaded it names what this server serves: its model name and version, its value range
    and batch limit, so that a schema-driven client (or fuzzer) reaches the predictions."""
    cached = getattr(app.state, "don_openapi", None)
    if cached is not None:
        return cached
    app.openapi_schema = None  # FastAPI.openapi caches its result there
    schema = copy.deepcopy(FastAPI.openapi(app))  # everything, KServe's operations included
    own = get_openapi(title=app.title, version=app.version, routes=ours.routes)
    for path, operations in own["paths"].items():
        schema["paths"].setdefault(path, {}).update(copy.deepcopy(operations))
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(own.get("components", {}).get("schemas", {}))
    schema["info"]["title"] = "DON Predictor model server"
    _document_kserve_routes(schema)
    model = _served(app)
    if model is not None and model.ready:  # else not kept: the served model is not known yet
        _document_served_model(schema, model)
        app.state.don_openapi = schema
    return schema


def _document_kserve_routes(schema: dict) -> None:
    """What KServe's own handlers (and our guard in front of them) answer besides 200."""
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if not is_open(path):
                for code, doc in _GUARD_ERRORS.items():
                    responses.setdefault(str(code), doc)
            if "{model_name}" in path:
                responses.setdefault("404", PREDICT_ERRORS[404])
                responses.setdefault("503", PREDICT_ERRORS[503])
    metrics = schema["paths"].get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"] = {"description": "Prometheus text format", "content": {
            "text/plain": {"schema": {"type": "string"}}}}


def _document_served_model(schema: dict, model) -> None:
    valid, limit = model.options.reflectance_range, model.options.max_batch_rows
    outputs = [o["name"] for o in model.get_output_types()]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for param in operation.get("parameters", ()):
                if param.get("in") == "path" and param["name"] in ("model_name", "model_version"):
                    served = model.name if param["name"] == "model_name" else model.version
                    param["schema"] = {"type": "string", "enum": [served]}
        body = operations.get("post", {}).get("requestBody", {}).get("content", {}).get(JSON)
        if body is None:
            continue
        if path.endswith(":predict"):
            body["schema"] = codec.v1_body_schema(valid, limit, outputs)
        elif path.endswith("/infer"):
            body["schema"] = codec.v2_body_schema(valid, limit)


def install(app: FastAPI | None = None, model=None) -> FastAPI:
    """Add our routes and middleware to KServe's app (once per process, before it starts) and
    attach `model` (a DonModel) as the one it serves."""
    if app is None:
        from kserve.model_server import app
    if not hasattr(app.state, "don_served"):
        app.state.don_served = Served()
        _add_routes(app)

        async def stop_model():
            await _stop_model(app)

        app.router.on_shutdown.append(stop_model)
    if model is not None:
        app.state.don_served.model = model
    return app


async def _stop_model(app: FastAPI) -> None:
    """uvicorn's shutdown, after the requests in flight have been answered: the model's stop
    (its queued records sent). In a thread: it may wait on the recorder."""
    model = _served(app)
    if app.state.don_served.mirror is not None:
        await app.state.don_served.mirror.close()
    if model is not None:
        await asyncio.to_thread(model.stop)


def _add_routes(app: FastAPI) -> None:
    telemetry.setup_tracing(SERVICE_NAME)
    app.add_middleware(GuardMiddleware)
    app.add_middleware(DrainMiddleware)  # outermost: refusals close kept-open connections too
    router = APIRouter()
    post = {"methods": ["POST"], "response_model": None, "responses": PREDICT_ERRORS}
    router.add_api_route("/v1/models/{model_name}:predict", v1_predict, openapi_extra=V1_BODY,
                         **{**post, "responses": {**_ok(V1_RESPONSE), **PREDICT_ERRORS}})
    router.add_api_route("/v1/models/{model_name}:explain", no_explainer, **post)
    v2_post = {**post, "responses": {**_ok(V2_RESPONSE, _BINARY), **PREDICT_ERRORS}}
    router.add_api_route("/v2/models/{model_name}/infer", v2_infer, openapi_extra=V2_BODY,
                         **v2_post)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer",
                         v2_infer_version, openapi_extra=V2_BODY, **v2_post)
    get = {"methods": ["GET"], "response_model": None, "responses": LOOKUP_ERRORS}
    ready, meta, state = ({**get, "responses": {**_ok(doc), **LOOKUP_ERRORS}}
                          for doc in (_READY, _METADATA, _STATUS))
    router.add_api_route("/v2/health/ready", server_ready, **ready)
    router.add_api_route("/v2/models/{model_name}", v2_metadata, **meta)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}",
                         v2_metadata_version, **meta)
    router.add_api_route("/v2/models/{model_name}/ready", v2_ready, **ready)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready",
                         v2_ready_version, **ready)
    router.add_api_route("/v2/models/{model_name}/status", model_status, **state)
    router.add_api_route("/status", status, **state)
    router.add_api_route("/metrics", metrics, methods=["GET"], response_model=None)
    closed = {"methods": ["POST"], "response_model": None,
              "responses": {403: {"description": "disabled", **_ERROR_DOC}}}
    router.add_api_route("/v2/repository/models/{model_name}/load", repository_disabled,
                         **closed)
    router.add_api_route("/v2/repository/models/{model_name}/unload", repository_disabled,
                         **closed)
    app.include_router(router)
    app.openapi = lambda: _openapi(app, router)
