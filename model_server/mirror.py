"""Mirroring to a shadow: after the stable answers its caller, a copy of the request goes to a
candidate version whose answer is recorded (there, with shadow=True) and discarded here.

Where no Gateway API mirrors for us (KServe Knative / Standard, the chart's Deployment engine), the
stable's own server sends the copy. The request path only decides (a hash of the request id, so a
retried request mirrors the same way) and appends to a bounded queue: O(1), no I/O. A loop
callback FLUSH_SECONDS later writes the copies queued by then, pipelined (HTTP/1.1) in one write
on one of a few kept-alive connections, an asyncio Protocol whose answers' heads are parsed by
hand (no task, future or http.client parsing per copy: each would cost more CPU than the copy
itself). What a copy costs is mostly the kernel's send and receive and the loop's wake-up for the
answer: a batch pays them once (benchmarks/mirror.py). A full queue drops the copy; a shadow
that is down, slow or failing is counted, never felt by the caller.

Setting: static (--mirror_url / --mirror_percent) and a JSON file re-read when it changes (a
mounted ConfigMap the kubelet updates in place), so starting, changing or stopping a shadow never
restarts the stable. The file wins while it exists; a bad file keeps the last good setting.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import ssl
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from don_core.contract import (BINARY_HEADER_LENGTH_HEADER, MIRROR_CONFIG_PATH, MIRROR_DROPPED, MIRROR_FAILED,
                               MIRROR_SENT, REQUEST_ID_HEADER, SHADOW_ENV, SHADOW_HEADER)
from model_server.metrics import mirror_counters
from model_server.security import process_guard

log = logging.getLogger("model_server.mirror")

POLL_SECONDS = 2.0         # how often the config file's stamp is looked at (on a request)
CONNECTIONS = 4            # batches in flight at once, one kept-alive connection each
FLUSH_SECONDS = 0.02       # how long a copy waits for others to share its write
BATCH = 16                 # copies in one write at most
TIMEOUT_SECONDS = 5.0      # a copy's connect + answer; beyond it the copy counts as failed
LOG_EVERY_SECONDS = 60.0   # a failing shadow logs at most one line a minute
_MAX_HEAD_BYTES = 64 * 1024

_ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:16], itertools.count(1)


def new_request_id() -> str:
    """An id for a request that named none: unique per process, without a uuid4 per request."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


@dataclass(frozen=True)
class Target:
    """Where copies go and how many: one immutable value, swapped whole when the setting changes."""

    url: str
    percent: float          # 0-100 of the requests, chosen by a hash of their id
    model: str | None = None  # the shadow's model name when it is not the stable's

    def __post_init__(self):
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"mirror url {self.url!r} must be http(s)://host[:port][/prefix]")
        if isinstance(self.percent, bool) or not isinstance(self.percent, (int, float)) \
                or not 0 <= self.percent <= 100:
            raise ValueError(f"mirror percent {self.percent!r} must be a number from 0 to 100")
        if self.model is not None and (not isinstance(self.model, str) or not self.model
                                       or "/" in self.model):
            raise ValueError(f"mirror model {self.model!r} must be a model name")

    @cached_property  # looked up per copy: parsed once (a frozen dataclass allows this cache)
    def endpoint(self) -> tuple[str, str, int]:
        parts = urlsplit(self.url)
        return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)

    @cached_property
    def prefix(self) -> str:
        """A path the URL names before the model's (a proxy's), without its trailing slash."""
        return urlsplit(self.url).path.rstrip("/")

    def chosen(self, request_id: str) -> bool:
        """Deterministic per request id: a retried request is mirrored (or not) again."""
        if self.percent >= 100:
            return True
        return zlib.crc32(request_id.encode("utf-8", "replace")) % 10_000 < self.percent * 100


@dataclass(frozen=True)
class MirrorOptions:
    """The server's mirror flags (picklable: each --workers process builds its own Mirror)."""

    url: str | None = None
    percent: float = 100.0
    model: str | None = None
    config_file: str | None = None
    queue_size: int = 1000
    shadow: bool = False  # this server is a shadow: every answer recorded as one, none mirrored

    def __post_init__(self):
        if self.url is not None:
            Target(self.url, self.percent, self.model)  # a bad flag fails at start
        if self.queue_size < 1:
            raise ValueError(f"mirror queue size {self.queue_size} must be positive")

    @property
    def static(self) -> Target | None:
        return Target(self.url, self.percent, self.model) if self.url else None


def read_target(path: Path) -> Target:
    """The setting in a mirror config file; ValueError naming what is wrong."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError('must be a JSON object {"url": ..., "percent": 0-100}')
    unknown = set(doc) - {"url", "percent", "model"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    if not doc.get("url"):
        raise ValueError('"url" is missing')
    return Target(doc["url"], doc.get("percent", 100), doc.get("model"))


class MirrorConfig:
    """The current Target (or None): the file's while it exists and is valid, else the static
    flags'. Looked at from the request path, at most once per POLL_SECONDS (one stat())."""

    def __init__(self, static: Target | None, path: str | None, poll: float = POLL_SECONDS):
        self.static = static
        self.path = Path(path) if path else None
        self.poll = poll
        self.problem: str | None = None  # what is wrong with the file, while it is
        self._stamp = None
        self._from_file: Target | None = None
        self._checked = -poll
        self.current = static
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> Target | None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._checked < self.poll):
            return self.current
        self._checked = now
        try:
            stat = self.path.stat()  # follows the ConfigMap's ..data symlink
        except OSError:
            if self._stamp is not None:
                log.info("mirror config %s is gone: %s", self.path,
                         "mirroring stopped" if self.static is None else "back to the flags")
            self._stamp, self._from_file, self.problem, self.current = None, None, None, self.static
            return self.current
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return self.current
        self._stamp = stamp
        try:
            target = read_target(self.path)
        except (OSError, ValueError) as exc:
            self.problem = f"mirror config {self.path}: {exc}"
            log.error("%s; keeping the last good setting", self.problem)
            return self.current
        self.problem, self._from_file, self.current = None, target, target
        log.info("mirroring %s%% of requests to %s", f"{target.percent:g}", target.url,
                 extra={"mirror_url": target.url, "mirror_percent": target.percent})
        return self.current

    def status(self) -> dict:
        target = self.current
        return {"url": target.url if target else None,
                "percent": target.percent if target else 0,
                "model": target.model if target else None,
                "source": None if target is None else
                ("file" if target is self._from_file else "flags"),
                "config_file": str(self.path) if self.path else None, "problem": self.problem}


class _Copy:
    __slots__ = ("target", "data", "retried")

    def __init__(self, target: Target, data: bytes):
        self.target, self.data = target, data  # data: the whole HTTP request
        self.retried = False


class Mirror:
    """One per server process, bound to its event loop on first use. Copies wait in a bounded
    deque; up to CONNECTIONS kept-alive connections each carry one at a time. Everything runs in
    loop callbacks (no task per copy): a copy costs one write and one read callback."""

    def __init__(self, options: MirrorOptions, model: str, version: str):
        self.options = options
        self.model = model
        self.config = MirrorConfig(options.static, options.config_file)
        self._counters = mirror_counters(model, version)
        self._pending: deque[_Copy] = deque()
        self._idle: list[_Connection] = []
        self._connections: set[_Connection] = set()
        self._connecting = 0
        self._down_until = 0.0  # after a failed connect: fail copies at once for a while
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged = 0.0
        self._failures_unlogged = 0

    # --- request path: O(1), no I/O ---
    def submit(self, protocol: str, body: bytes, request_id: str, header_length: str | None,
               traceparent: str | None) -> None:
        """Queue a copy of a request the stable answered (call after answering): its decoded
        body, its binary-tensor header length (V2 binary) and the caller's W3C traceparent. The
        copy is written in a later loop callback, after the caller's answer."""
        target = self.config.refresh()
        if target is None or target.percent <= 0 or not target.chosen(request_id):
            return
        if len(self._pending) >= self.options.queue_size:
            self._counters[MIRROR_DROPPED].inc()
            return
        name = target.model or self.model
        path = f"/v1/models/{name}:predict" if protocol == "v1" else f"/v2/models/{name}/infer"
        headers = {"Content-Type": "application/octet-stream" if header_length else
                   "application/json", BINARY_HEADER_LENGTH_HEADER: header_length, "traceparent": traceparent}
        _, host, port = target.endpoint
        line = f"POST {target.prefix}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode("latin-1")
        self._pending.append(_Copy(target, line + _head(headers, request_id, len(body)) + body))
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_later(FLUSH_SECONDS, self._pump)
            if not (self._connections or self._connecting) and time.monotonic() >= self._down_until:
                self._connecting += 1  # not after the window: it could fill the queue meanwhile
                self._loop.create_task(self._connect(target))
        elif len(self._pending) == min(BATCH, self.options.queue_size):  # a full batch goes now
            self._loop.call_soon(self._pump)

    def status(self) -> dict:
        self.config.refresh()
        doc = self.config.status()
        doc["queued"] = len(self._pending)
        return doc

    async def close(self) -> None:
        """Server shutdown: copies still queued are dropped (they are not the caller's)."""
        self._pending.clear()
        for conn in list(self._connections):
            conn.abort()

    # --- loop callbacks ---
    def _pump(self) -> None:
        self._scheduled = False
        while self._pending:
            copy = self._pending[0]
            if time.monotonic() < self._down_until:
                self._pending.popleft()
                self._failed(copy.target.url, "the shadow refused a connection moments ago")
                continue
            conn = self._idle.pop() if self._idle else None
            if conn is not None and (conn.endpoint != copy.target.endpoint
                                     or (copy.retried and conn.answered)):
                conn.close()  # the setting moved to another shadow, or a retry: a fresh one
                continue
            if conn is None:
                if len(self._connections) + self._connecting < CONNECTIONS:
                    self._connecting += 1
                    self._loop.create_task(self._connect(copy.target))
                return
            batch = [self._pending.popleft()]
            # a retried copy goes alone (its shadow may close after each answer)
            while (not copy.retried and self._pending and len(batch) < BATCH
                   and self._pending[0].target is copy.target and not self._pending[0].retried):
                batch.append(self._pending.popleft())
            conn.send(batch)

    async def _connect(self, target: Target) -> None:
        scheme, host, port = target.endpoint
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self._loop.create_connection(
                    lambda: _Connection(self, target.endpoint), host, port,
                    ssl=ssl.create_default_context() if scheme == "https" else None)
        except (OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + 1.0
            if self._pending:
                self._failed(self._pending.popleft().target.url, _describe(exc))
        finally:
            self._connecting -= 1
        self._pump()

    def _opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self._idle.append(conn)

    def _answered(self, copy: _Copy, status: int) -> None:
        if 200 <= status < 300:
            self._counters[MIRROR_SENT].inc()
        else:
            self._failed(copy.target.url, f"the shadow answered {status}")

    def _done(self, conn: _Connection) -> None:
        """`conn` has every answer of its batch: the copies that waited for a connection go now;
        those in a flush window wait for it."""
        if conn.open:
            self._idle.append(conn)
        if not self._scheduled:
            self._pump()

    def _lost(self, conn: _Connection, copies: list[_Copy], problem: str) -> None:
        self._connections.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        for copy in reversed(copies):  # unanswered, in order
            if conn.answered and not copy.retried:
                # a kept-alive connection the shadow closed as the copy went out (its idle
                # timeout, or a "Connection: close" before the batch's end): once more on a fresh one
                copy.retried = True
                self._pending.appendleft(copy)
            else:
                self._failed(copy.target.url, problem)
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._pump)

    def _failed(self, url: str, problem: str) -> None:
        self._counters[MIRROR_FAILED].inc()
        now = time.monotonic()
        self._failures_unlogged += 1
        if now - self._logged >= LOG_EVERY_SECONDS:
            log.warning("mirrored copies to %s failing (%d since the last line): %s", url,
                        self._failures_unlogged, problem, extra={"mirror_url": url})
            self._logged, self._failures_unlogged = now, 0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _head(headers: dict[str, str], request_id: str, length: int) -> bytes:
    """The copy's header lines after the request line: our own token (the shadow wants the same
    one as the stable), the request id and the shadow mark; values that could split a header
    line are left out (the V2 body still carries its own id)."""
    lines = [f"Content-Length: {length}", f"{SHADOW_HEADER}: 1"]
    if _safe(request_id):
        lines.append(f"{REQUEST_ID_HEADER}: {request_id}")
    for name, value in headers.items():
        if value is not None and _safe(value):
            lines.append(f"{name}: {value}")
    token = process_guard().tokens.current()
    if token is not None:
        lines.append(f"Authorization: Bearer {token.decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _safe(value: str) -> bool:
    return value.isprintable() and value.isascii() and len(value) <= 1024


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection carrying one batch of pipelined copies at a time; the
    answers' heads are parsed by hand (status and Content-Length), their bodies skipped."""

    def __init__(self, mirror: Mirror, endpoint: tuple[str, str, int]):
        self.mirror, self.endpoint = mirror, endpoint
        self.open = False
        self.answered = 0  # answers read on this connection
        self._transport: asyncio.Transport | None = None
        self._copies: deque[_Copy] = deque()  # sent, not yet answered, in order
        self._timer: asyncio.TimerHandle | None = None
        self._progress = 0.0  # when the batch went out or its last answer came
        self._buffer = b""

    def connection_made(self, transport) -> None:
        self._transport, self.open = transport, True
        self.mirror._opened(self)

    def send(self, copies: list[_Copy]) -> None:
        self._copies.extend(copies)
        self._progress = self.mirror._loop.time()
        self._timer = self.mirror._loop.call_later(TIMEOUT_SECONDS, self._timed_out)
        self._transport.write(copies[0].data if len(copies) == 1 else b"".join(c.data for c in copies))

    def data_received(self, data: bytes) -> None:
        if not self._copies:  # nothing was asked: not a server to keep talking to
            return self.abort()
        self._buffer += data
        while self._copies and self._answer():
            pass

    def _answer(self) -> bool:
        """Reads the first whole answer in the buffer; False when there is none (yet)."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD_BYTES:
                self._give_up("an answer head above 64 KiB")
            return False
        head = self._buffer[:end].lower()
        try:
            status = int(head[9:12])
        except ValueError:
            self._give_up("not an HTTP answer")
            return False
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # chunked or read-to-close: not worth a parser, start afresh next time
            length, self.open = len(self._buffer) - end - 4, False
        else:
            stop = head.find(b"\r\n", at + 2)
            try:
                length = int(head[at + 17:stop if stop > 0 else len(head)])
            except ValueError:
                self._give_up("an unreadable Content-Length")
                return False
            if b"\r\nconnection: close" in head:
                self.open = False
        if len(self._buffer) < end + 4 + length:
            return False  # the rest of the body is still coming
        self._buffer = self._buffer[end + 4 + length:]
        self.answered += 1
        self._progress = self.mirror._loop.time()
        self.mirror._answered(self._copies.popleft(), status)
        if not self.open:  # the copies after this one come back through connection_lost
            self._transport.close()
            return False
        if not self._copies:
            self._timer.cancel()
            self.mirror._done(self)
        return True

    def _timed_out(self) -> None:
        """Each answer of a batch has TIMEOUT_SECONDS from the one before (a slow shadow answers
        pipelined copies one after the other)."""
        waited = self.mirror._loop.time() - self._progress
        if waited < TIMEOUT_SECONDS:
            self._timer = self.mirror._loop.call_later(TIMEOUT_SECONDS - waited, self._timed_out)
            return
        self._give_up(f"no answer within {TIMEOUT_SECONDS:g} s")

    def _give_up(self, problem: str) -> None:
        copies, self._copies = list(self._copies), deque()
        self.abort()
        for copy in copies:
            self.mirror._failed(copy.target.url, problem)

    def close(self) -> None:
        self.open = False
        self._transport.close()

    def abort(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
        copies, self._copies = list(self._copies), deque()
        self.mirror._lost(self, copies, _describe(exc) if exc else "the shadow closed the connection")


def add_arguments(parser, environ=os.environ) -> None:
    """The --mirror_* flags, their defaults from DON_MIRROR_*."""
    env = environ.get
    parser.add_argument("--mirror_url", default=env("DON_MIRROR_URL") or None,
                        help="send a copy of answered requests to this shadow server "
                             "(http(s)://host:port); off when unset")
    parser.add_argument("--mirror_percent", type=float,
                        default=float(env("DON_MIRROR_PERCENT") or 100),
                        help="share of requests mirrored, 0-100 (chosen by request id)")
    parser.add_argument("--mirror_model", default=env("DON_MIRROR_MODEL") or None,
                        help="the shadow's model name when it differs from this server's")
    parser.add_argument("--mirror_config", default=env("DON_MIRROR_CONFIG", MIRROR_CONFIG_PATH),
                        help='JSON {"url", "percent", "model"} re-read when it changes; while it '
                             "exists it overrides the flags (default %(default)s)")
    parser.add_argument("--mirror_queue", type=int, default=int(env("DON_MIRROR_QUEUE") or 1000),
                        help="copies waiting to be sent; beyond that they are dropped and counted")
    parser.add_argument("--shadow", action="store_true",
                        default=(env(SHADOW_ENV) or "").lower() in ("1", "true"),
                        help=f"run as a shadow: record every answer as the shadow's (with or "
                             f"without {SHADOW_HEADER}, e.g. a Gateway's mirror copy) and never "
                             f"mirror (env {SHADOW_ENV}=1)")


def options_from_args(args) -> MirrorOptions:
    """ValueError naming the bad flag."""
    return MirrorOptions(url=args.mirror_url, percent=args.mirror_percent, model=args.mirror_model,
                         config_file=args.mirror_config or None, queue_size=args.mirror_queue,
                         shadow=args.shadow)
