"""The mirror's parts in one process: its setting (flags, the re-read file), the per-request-id
choice, the copy's header lines, and its HTTP client against a real asyncio server on loopback
(kept-alive connection, outcomes counted, a full queue dropping). The servers end to end:
tests/integration/test_server_mirror.py."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from don_core.contract import MIRROR_REQUESTS_METRIC, REQUEST_ID_HEADER, SHADOW_ENV, SHADOW_HEADER
from model_server import mirror
from model_server.mirror import Mirror, MirrorConfig, MirrorOptions, Target, read_target


def test_target_checks_name_the_problem():
    with pytest.raises(ValueError, match="mirror url 'ftp://x' must be http"):
        Target("ftp://x", 10)
    with pytest.raises(ValueError, match="mirror percent 101 must be a number from 0 to 100"):
        Target("http://shadow:8080", 101)
    with pytest.raises(ValueError, match="mirror percent True"):
        Target("http://shadow:8080", True)
    with pytest.raises(ValueError, match="mirror model 'a/b'"):
        Target("http://shadow:8080", 5, "a/b")
    with pytest.raises(ValueError, match="mirror queue size 0"):
        MirrorOptions(queue_size=0)
    assert Target("https://shadow", 1).endpoint == ("https", "shadow", 443)


def test_choice_is_deterministic_per_request_id_and_near_the_percent():
    half = Target("http://shadow:8080", 50)
    ids = [f"req-{i}" for i in range(4000)]
    chosen = [half.chosen(i) for i in ids]
    assert chosen == [half.chosen(i) for i in ids]  # a retried request: the same choice
    assert 0.45 < sum(chosen) / len(ids) < 0.55
    assert all(Target("http://s", 100).chosen(i) for i in ids[:100])
    assert not any(Target("http://s", 0).chosen(i) for i in ids[:100])
    # a smaller percent mirrors a subset of a larger one's requests (ramping up keeps the lots)
    tenth = Target("http://s", 10)
    assert all(half.chosen(i) for i in ids if tenth.chosen(i))


def test_config_file_read_errors_name_the_problem(tmp_path):
    path = tmp_path / "mirror.json"
    for text, problem in (("{", "not JSON"), ("[1]", "JSON object"),
                          ('{"percent": 5}', '"url" is missing'),
                          ('{"url": "http://s", "pct": 5}', "unknown key.*pct"),
                          ('{"url": "http://s", "percent": "5"}', "percent '5'")):
        path.write_text(text)
        with pytest.raises(ValueError, match=problem):
            read_target(path)
    path.write_text('{"url": "http://s:1", "percent": 12.5, "model": "don-rf-shadow"}')
    assert read_target(path) == Target("http://s:1", 12.5, "don-rf-shadow")


def test_config_file_is_picked_up_and_a_bad_one_keeps_the_last_good(tmp_path, caplog):
    path = tmp_path / "mirror.json"
    flags = Target("http://flags:1", 5)
    config = MirrorConfig(flags, str(path), poll=0)
    assert config.current == flags and config.status()["source"] == "flags"  # no file yet
    path.write_text('{"url": "http://shadow:2", "percent": 100}')
    assert config.refresh() == Target("http://shadow:2", 100)
    assert config.status()["source"] == "file"
    path.write_text('{"url": "http://shadow:2", "percent": 250}')
    assert config.refresh() == Target("http://shadow:2", 100)  # kept
    assert "percent 250" in config.status()["problem"]
    assert any("percent 250" in r.getMessage() and "keeping the last good" in r.getMessage()
               for r in caplog.records)
    path.write_text('{"url": "http://shadow:2", "percent": 0}')
    assert config.refresh().percent == 0 and config.status()["problem"] is None
    path.unlink()
    assert config.refresh() == flags
    assert MirrorConfig(None, str(path), poll=0).current is None  # no flags, no file: off


def test_config_file_is_looked_at_once_per_poll_interval(tmp_path):
    path = tmp_path / "mirror.json"
    config = MirrorConfig(None, str(path), poll=3600)
    path.write_text('{"url": "http://shadow:2"}')
    assert config.refresh() is None  # not yet looked at again
    assert config.refresh(force=True) == Target("http://shadow:2", 100)


def test_copy_head_carries_our_token_the_id_and_the_mark(monkeypatch):
    class Tokens:
        def current(self):
            return b"server-token"

    class Guard:
        tokens = Tokens()

    monkeypatch.setattr(mirror, "process_guard", lambda: Guard())
    head = mirror._head({"Content-Type": "application/json", "traceparent": None}, "lot-7", 12)
    lines = head.decode().split("\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert {"Content-Length: 12", f"{SHADOW_HEADER}: 1", f"{REQUEST_ID_HEADER}: lot-7",
            "Content-Type: application/json", "Authorization: Bearer server-token"} <= set(lines)
    assert not any(line.startswith("traceparent") for line in lines)
    # an id (V2 JSON "id") that would split the header line is left out; the body still has it
    injected = mirror._head({}, "x\r\nX-Evil: 1", 0)
    assert b"X-Evil" not in injected and REQUEST_ID_HEADER.encode() not in injected


def _count(model: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(MIRROR_REQUESTS_METRIC + "_total",
                                     {"model": model, "version": "1", "outcome": outcome}) or 0.0


class Shadow:
    """A real HTTP/1.1 server (asyncio streams) that answers `status` after `delay` seconds and
    keeps every request; `connections` counts the connections it accepted."""

    def __init__(self, status=200, delay=0.0, close=False, hang_up=False):
        # close: say "Connection: close" and close; hang_up: close without saying so (an idle
        # timeout racing the next copy)
        self.status, self.delay, self.close, self.hang_up = status, delay, close, hang_up
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.lower().split(b"\r\n")
                              if line.startswith(b"content-length:")][0])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                await asyncio.sleep(self.delay)
                extra = b"Connection: close\r\n" if self.close else b""
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n%s\r\n{}" % (self.status, extra))
                await writer.drain()
                if self.close or self.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


async def _mirror_to(shadow: Shadow, copies: int, queue_size: int = 100, settle: float = 5.0,
                     gap: float = 0.0):
    """Mirror `copies` requests (`gap` seconds apart, as requests arrive) and wait until each
    one's outcome is counted; the model name the counters are labelled with."""
    server = await asyncio.start_server(shadow.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = f"m-{uuid.uuid4().hex[:8]}"
    sent = Mirror(MirrorOptions(url=f"http://127.0.0.1:{port}", config_file=None,
                                queue_size=queue_size), model, "1")
    for i in range(copies):
        sent.submit("v2", b'{"inputs": []}', f"id-{i}", None, None)
        if gap:
            await asyncio.sleep(gap)
    deadline = asyncio.get_running_loop().time() + settle
    while asyncio.get_running_loop().time() < deadline and sum(
            _count(model, o) for o in ("sent", "failed", "dropped")) < copies:
        await asyncio.sleep(0.02)
    await sent.close()
    server.close()
    return model


def test_copies_go_over_kept_alive_connections_and_are_counted():
    shadow = Shadow()
    model = asyncio.run(_mirror_to(shadow, 50))
    assert _count(model, "sent") == 50 and _count(model, "failed") == 0
    assert len(shadow.requests) == 50
    assert shadow.connections <= mirror.CONNECTIONS  # no connection per copy
    head, body = shadow.requests[0]
    assert head.startswith(f"POST /v2/models/{model}/infer HTTP/1.1\r\n".encode())
    assert body == b'{"inputs": []}'
    assert sorted(int(h.split(b"X-Request-Id: id-")[1].split(b"\r\n")[0])
                  for h, _ in shadow.requests) == list(range(50))


def test_copies_queued_together_go_pipelined_on_one_connection():
    shadow = Shadow()
    model = asyncio.run(_mirror_to(shadow, 10))
    assert _count(model, "sent") == 10 and len(shadow.requests) == 10
    assert shadow.connections == 1  # one batch: copy per connection, 4 would have been opened


def test_a_shadow_closing_each_connection_still_gets_every_copy():
    shadow = Shadow(close=True)
    model = asyncio.run(_mirror_to(shadow, 10))
    assert _count(model, "sent") == 10 and _count(model, "failed") == 0
    # the copies after the first answer of a pipelined batch went again, each alone: each
    # reached the shadow once
    assert len(shadow.requests) == 10 and shadow.connections >= 10


def test_a_connection_closed_under_a_copy_is_tried_once_more():
    shadow = Shadow(hang_up=True)
    model = asyncio.run(_mirror_to(shadow, 10))
    assert _count(model, "sent") == 10 and _count(model, "failed") == 0
    assert len(shadow.requests) == 10


def test_a_failing_shadow_is_counted_as_failed():
    model = asyncio.run(_mirror_to(Shadow(status=500), 8))
    assert _count(model, "failed") == 8 and _count(model, "sent") == 0


def test_a_full_queue_drops_and_counts():
    # a slow shadow: each connection's batch (at most the 2 copies the queue held) in flight, 2
    # queued, the rest dropped at once
    model = asyncio.run(_mirror_to(Shadow(delay=1.0), 20, queue_size=2, settle=5.0, gap=0.005))
    dropped, sent = _count(model, "dropped"), _count(model, "sent")
    assert dropped + sent == 20 and _count(model, "failed") == 0
    assert 20 - mirror.CONNECTIONS * 2 - 2 <= dropped < 20 - 2


def test_flags_come_from_the_environment():
    options = mirror.options_from_args(_parse([], {
        "DON_MIRROR_URL": "http://shadow:8080", "DON_MIRROR_PERCENT": "25",
        "DON_MIRROR_CONFIG": "", "DON_MIRROR_QUEUE": "7"}))
    assert options == MirrorOptions(url="http://shadow:8080", percent=25.0, config_file=None,
                                    queue_size=7)
    defaults = mirror.options_from_args(_parse([], {}))
    assert defaults.url is None and defaults.config_file == "/etc/don-predictor/mirror/mirror.json"
    assert not defaults.shadow  # a shadow server: the operator's shadow pods say so
    assert mirror.options_from_args(_parse([], {SHADOW_ENV: "1"})).shadow
    assert mirror.options_from_args(_parse(["--shadow"], {})).shadow
    with pytest.raises(ValueError, match="mirror percent 150"):
        mirror.options_from_args(_parse(["--mirror_url", "http://s", "--mirror_percent", "150"], {}))


def _parse(argv, environ):
    import argparse

    parser = argparse.ArgumentParser()
    mirror.add_arguments(parser, environ)
    return parser.parse_args(argv)

