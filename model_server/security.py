"""Bearer-token auth and per-caller rate limiting, one Guard for every prediction port: an ASGI
middleware for HTTP and a server interceptor for gRPC apply the same rules.

Token: from the file named by DON_API_TOKEN_FILE (a Kubernetes Secret mounted as a file; re-read
when it changes, so a rotated Secret takes effect without a restart) or from DON_API_TOKEN. A token
file that is missing or empty at start is a configuration fault: the server stays live, answers
503 naming it on protected paths (UNAVAILABLE on gRPC) and is never ready.
Caller: the peer address, or the first value of the header named by DON_CLIENT_ID_HEADER (e.g.
x-forwarded-for, only behind a proxy that overwrites it) -- never the token, which callers share.
Rate limit: DON_RATE_LIMIT_RPS (tokens per second) and DON_RATE_LIMIT_BURST per caller, counting
every request, refused ones too. Failed authentications have a bucket of their own per caller
(DON_AUTH_FAILURE_RPS, default 1, DON_AUTH_FAILURE_BURST, default 10): once it is empty the caller
gets 429 without its token being checked, so guessing is slowed. Probes and metrics stay open.
"""
from __future__ import annotations

import hmac
import inspect
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import orjson

from model_server.metrics import count_refusal

# Kubelet probes and Prometheus scrapes carry no token.
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/metrics"})
_GRPC_SERVICE = "/inference.GRPCInferenceService/"
GRPC_OPEN = frozenset(_GRPC_SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))
# One immutable version per server: as on HTTP (403), the repository API stays shut.
GRPC_CLOSED = frozenset(_GRPC_SERVICE + m for m in ("RepositoryModelLoad",
                                                    "RepositoryModelUnload"))


def is_open(path: str) -> bool:
    if path in OPEN_PATHS:
        return True
    # readiness of one model: /v1/models/NAME and /v2/models/NAME/ready
    parts = path.split("/")
    return (len(parts) == 4 and parts[1] == "v1" and parts[2] == "models" and ":" not in parts[3]) \
        or (len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "ready")


class TokenSource:
    """The expected token, or None when auth is off; `problem` names a token file that is unusable
    at start (the server then refuses every protected request rather than serving without it)."""

    def __init__(self, environ=os.environ):
        file = environ.get("DON_API_TOKEN_FILE")
        self._path = Path(file) if file else None
        self._static = environ.get("DON_API_TOKEN") or None
        self._stamp = None
        self._token = None
        self._checked = 0.0
        self.problem: str | None = None
        if self._path is not None:
            try:
                self._reload()
            except (OSError, ValueError) as exc:
                self.problem = f"bearer token file DON_API_TOKEN_FILE={self._path} is unusable: {exc}"

    @property
    def enabled(self) -> bool:
        return self._path is not None or self._static is not None

    def _reload(self) -> None:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            token = self._path.read_text().strip()
            if not token:
                raise ValueError("the file is empty")
            self._token, self._stamp = token.encode(), stamp

    def current(self) -> bytes | None:
        if self._path is None:
            return self._static.encode() if self._static else None
        now = time.monotonic()
        if self.problem is None and now - self._checked > 1.0:  # at most one stat() per second
            self._checked = now
            try:
                self._reload()
            except (OSError, ValueError):
                pass  # keep the last good token while a Secret update is in flight
        return self._token


class TokenBucket:
    """Per-key token buckets, bounded in memory (least recently seen keys are dropped)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000):
        self.rate, self.burst, self.max_keys = rate, max(burst, 1.0), max_keys
        self._buckets: OrderedDict[bytes, list[float]] = OrderedDict()

    def _tokens(self, key: bytes, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        return min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)

    def peek(self, key: bytes, now: float | None = None) -> float:
        """The seconds until `take` would let a request go ahead (0: now), consuming nothing."""
        tokens = self._tokens(key, time.monotonic() if now is None else now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: bytes, now: float | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        now = time.monotonic() if now is None else now
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = [tokens, now]
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


@dataclass(frozen=True)
class Refusal:
    status: int          # HTTP status; the gRPC code follows from it (GRPC_CODES)
    outcome: str         # the label it is counted under in /metrics
    message: str
    retry_after: float = 0.0


class Guard:
    """Auth and limits for one process, shared by the HTTP middleware and the gRPC interceptor."""

    def __init__(self, tokens: TokenSource, limiter: TokenBucket | None,
                 failures: TokenBucket | None, client_header: str | None = None):
        self.tokens, self.limiter, self.failures = tokens, limiter, failures
        self.client_header = client_header.lower() if client_header else None

    @classmethod
    def from_env(cls, environ=os.environ) -> "Guard":
        return cls(TokenSource(environ), limiter_from_env(environ), _failures_from_env(environ),
                   environ.get("DON_CLIENT_ID_HEADER") or None)

    @property
    def problem(self) -> str | None:
        return self.tokens.problem

    def caller(self, forwarded: str | bytes | None, peer: str | None) -> bytes:
        if self.client_header and forwarded:
            if isinstance(forwarded, bytes):
                forwarded = forwarded.decode("latin-1")
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first.encode()
        return (peer or "unknown").encode()

    def check(self, protocol: str, token: bytes | None, caller: bytes) -> Refusal | None:
        """None if the request may go ahead; else why not (counted in /metrics)."""
        refusal = self._check(token, caller)
        if refusal is not None:
            count_refusal(protocol, refusal.outcome)
        return refusal

    def _check(self, token: bytes | None, caller: bytes) -> Refusal | None:
        if self.tokens.problem:
            return Refusal(503, "unavailable", f"server misconfigured: {self.tokens.problem}")
        if self.limiter is not None:
            wait = self.limiter.take(caller)
            if wait > 0:
                return Refusal(429, "rate_limited", "rate limit exceeded; retry later", wait)
        expected = self.tokens.current() if self.tokens.enabled else None
        if expected is None:
            return None
        if self.failures is not None:
            wait = self.failures.peek(caller)
            if wait > 0:
                return Refusal(429, "auth_throttled", "too many failed authentications from this "
                                                      "caller; retry later", wait)
        if token is None or not hmac.compare_digest(token, expected):
            if self.failures is not None:
                self.failures.take(caller)
            return Refusal(401, "unauthenticated", "missing or wrong bearer token")
        return None


_GUARD: Guard | None = None


def process_guard() -> Guard:
    """The guard of this process, read from the environment once."""
    global _GUARD
    if _GUARD is None:
        _GUARD = Guard.from_env()
    return _GUARD


def limiter_from_env(environ=os.environ) -> TokenBucket | None:
    rate = float(environ.get("DON_RATE_LIMIT_RPS", "0") or 0)
    if rate <= 0:
        return None
    return TokenBucket(rate, float(environ.get("DON_RATE_LIMIT_BURST", "") or rate))


def _failures_from_env(environ=os.environ) -> TokenBucket | None:
    rate = float(environ.get("DON_AUTH_FAILURE_RPS", "1") or 0)
    if rate <= 0:
        return None
    return TokenBucket(rate, float(environ.get("DON_AUTH_FAILURE_BURST", "") or 10))


def parse_bearer(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


class GuardMiddleware:
    """Pure ASGI (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, guard: Guard | None = None):
        self.app = app
        self.guard = guard if guard is not None else process_guard()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        authorization = forwarded = None
        wanted = self.guard.client_header.encode() if self.guard.client_header else None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == wanted:
                forwarded = value
        peer = (scope.get("client") or ("unknown",))[0]
        refusal = self.guard.check("http", parse_bearer(authorization),
                                   self.guard.caller(forwarded, peer))
        if refusal is None:
            return await self.app(scope, receive, send)
        headers = []
        if refusal.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="don-predictor"'))
        if refusal.retry_after > 0:
            headers.append((b"retry-after", str(math.ceil(refusal.retry_after)).encode()))
        await _reject(send, refusal.status, refusal.message, headers)


async def _reject(send, status: int, message: str, headers) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _grpc_peer(peer: str | None) -> str | None:
    """'ipv4:10.0.0.1:5000' / 'ipv6:%5B::1%5D:5000' -> the address without the port."""
    if not peer or not peer.startswith(("ipv4:", "ipv6:")):
        return peer
    address = unquote(peer.split(":", 1)[1])
    if address.startswith("[") and "]" in address:
        return address[1:address.index("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def grpc_interceptor(guard: Guard | None = None):
    """A grpc.aio ServerInterceptor applying `guard` to every RPC but the health checks."""
    import grpc
    from grpc.aio import ServerInterceptor

    codes = {401: grpc.StatusCode.UNAUTHENTICATED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
             503: grpc.StatusCode.UNAVAILABLE}

    class GuardInterceptor(ServerInterceptor):
        def __init__(self):
            self.guard = guard if guard is not None else process_guard()

        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None or details.method in GRPC_OPEN or handler.unary_unary is None:
                return handler
            inner, closed = handler.unary_unary, details.method in GRPC_CLOSED
            header = self.guard.client_header
            metadata = dict(details.invocation_metadata or ())

            async def guarded(request, context):
                if closed:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                        "the model repository API is disabled on this server")
                refusal = self.guard.check("grpc", parse_bearer(metadata.get("authorization")),
                                           self.guard.caller(metadata.get(header) if header else
                                                             None, _grpc_peer(context.peer())))
                if refusal is not None:
                    if refusal.retry_after > 0:
                        await context.send_initial_metadata(
                            (("retry-after", str(math.ceil(refusal.retry_after))),))
                    await context.abort(codes[refusal.status], refusal.message)
                answer = inner(request, context)
                return await answer if inspect.isawaitable(answer) else answer

            return grpc.unary_unary_rpc_method_handler(
                guarded, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    return GuardInterceptor()


def install_grpc_guard() -> None:
    """Put the guard in front of KServe's gRPC server. KServe builds it with a fixed interceptor
    tuple (LoggingInterceptor(), ExceptionToStatusInterceptor()); the first only logs a line per
    call, which we silence anyway, so the guard takes its place: outermost, before any handler."""
    from kserve.protocol.grpc import server

    if not hasattr(server, "LoggingInterceptor"):
        raise RuntimeError("kserve's gRPC server changed: cannot install the auth interceptor")
    server.LoggingInterceptor = grpc_interceptor
