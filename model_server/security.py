"""Optional bearer-token auth and per-client rate limiting, as one small ASGI middleware.

Token: from the file named by DON_API_TOKEN_FILE (a Kubernetes Secret mounted as a file; re-read
when it changes, so a rotated Secret takes effect without a restart) or from DON_API_TOKEN.
Rate limit: DON_RATE_LIMIT_RPS (tokens per second) and DON_RATE_LIMIT_BURST per caller, where the
caller is its token when auth is on, else its address. Probes and metrics stay open.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections import OrderedDict
from pathlib import Path

import orjson

# Kubelet probes and Prometheus scrapes carry no token.
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/metrics"})


def _is_open(path: str) -> bool:
    if path in OPEN_PATHS:
        return True
    # readiness of one model: /v1/models/NAME and /v2/models/NAME/ready
    parts = path.split("/")
    return (len(parts) == 4 and parts[1] == "v1" and parts[2] == "models" and ":" not in parts[3]) \
        or (len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "ready")


class TokenSource:
    """The expected token, or None when auth is off."""

    def __init__(self, environ=os.environ):
        file = environ.get("DON_API_TOKEN_FILE")
        self._path = Path(file) if file else None
        self._static = environ.get("DON_API_TOKEN") or None
        self._stamp = None
        self._token = None
        self._checked = 0.0
        if self._path is not None:
            self._reload()  # fail at start, not on the first request, if the Secret is missing

    @property
    def enabled(self) -> bool:
        return self._path is not None or self._static is not None

    def _reload(self) -> None:
        stat = self._path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            token = self._path.read_text().strip()
            if not token:
                raise ValueError(f"token file {self._path} is empty")
            self._token, self._stamp = token.encode(), stamp

    def current(self) -> bytes | None:
        if self._path is None:
            return self._static.encode() if self._static else None
        now = time.monotonic()
        if now - self._checked > 1.0:  # at most one stat() per second
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

    def take(self, key: bytes, now: float | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(key, None) or [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = [tokens, now]
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class GuardMiddleware:
    """Pure ASGI (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, tokens: TokenSource | None = None, limiter: TokenBucket | None = None):
        self.app = app
        self.tokens = tokens if tokens is not None else TokenSource()
        self.limiter = limiter if limiter is not None else limiter_from_env()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _is_open(scope["path"]):
            return await self.app(scope, receive, send)
        expected = self.tokens.current() if self.tokens.enabled else None
        key = None
        if expected is not None:
            given = _bearer(scope)
            if given is None or not hmac.compare_digest(given, expected):
                return await _reject(send, 401, "missing or wrong bearer token",
                                     [(b"www-authenticate", b'Bearer realm="don-predictor"')])
            key = hashlib.sha256(given).digest()
        if self.limiter is not None:
            if key is None:
                key = (scope.get("client") or ("unknown",))[0].encode()
            wait = self.limiter.take(key)
            if wait > 0:
                return await _reject(send, 429, "rate limit exceeded; retry later",
                                     [(b"retry-after", str(math.ceil(wait)).encode())])
        return await self.app(scope, receive, send)


def limiter_from_env(environ=os.environ) -> TokenBucket | None:
    rate = float(environ.get("DON_RATE_LIMIT_RPS", "0") or 0)
    if rate <= 0:
        return None
    return TokenBucket(rate, float(environ.get("DON_RATE_LIMIT_BURST", "") or rate))


def _bearer(scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


async def _reject(send, status: int, message: str, headers) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
